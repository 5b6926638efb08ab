'use strict';
// What bench:gpu measures, the most telling first, and how its time budget cuts that list short. A device call has a
// hard limit, so every item starts only when the time left covers what it costs before its first figure (tracing its
// model the first time, loading it, warming up), and bench() itself stops between timed runs once the budget is
// spent: whatever is cut, the items before it are complete and saved.

const fast = ['ddim', 'easyinv'];
const others = ['fixed-point', 'renoise', 'direct'];

// CUDA graphs are captured after cuDNN's autotuning, as PyTorch's recipe does; float32 adds TF32.
const variants = {
  eager: { name: 'eager', settings: {} },
  benchmark: { name: 'eager, cuDNN benchmark', settings: { cudnnBenchmark: true } },
  graphs: { name: 'CUDA graphs, cuDNN benchmark', settings: { cudnnBenchmark: true }, modelOptions: { cudaGraphs: true }, graphCheck: true },
  graphsTf32: {
    name: 'CUDA graphs, cuDNN benchmark, TF32', settings: { cudnnBenchmark: true, matmulTf32: true, convolutionTf32: true },
    modelOptions: { cudaGraphs: true }, graphCheck: true,
  },
};

const item = (model, variant, methods, { batches = [1], python = true, repeats = model.repeats } = {}) =>
  ({ model, variant, methods, batches, python, repeats });

/**
 * The items in the order they run. On CUDA: SD-V1-4 float16 eager and graphed against Python first, then SDXL
 * float16, then SD-V1-4 compiled (.pt2), then float32, then the rest (the other methods, larger batches). The dry run is the same code on the CPU
 * at small sizes: SD-V1-4's architecture at 8x8 latents, 2 steps. Seconds are what an item costs before its first
 * figure: `trace` once per model, `load` every time.
 */
function gpuPlan(dryRun) {
  if (dryRun) {
    const sd1 = { family: 'sd1', latent: 8, dtype: 'float32', repeats: 1, trace: 90, load: 30 };
    return {
      device: 'cpu', steps: 2, checkSeconds: 60,
      items: [
        item(sd1, variants.eager, fast),
        item(sd1, variants.eager, others, { python: false }),
        item(sd1, variants.eager, fast, { batches: [1, 2], python: false }),
      ],
    };
  }
  const sd1 = (dtype) => ({ family: 'sd1', latent: 64, dtype, repeats: 3, trace: 60, load: 30 });
  const sdxl = (dtype) => ({ family: 'sdxl', latent: 128, dtype, repeats: 2, trace: 150, load: 60 });
  // Compiled (.pt2): torch.export and AOTInductor take minutes where tracing takes seconds.
  const sd1Compiled = (dtype) => ({ ...sd1(dtype), format: 'pt2', trace: 300 });
  return {
    device: 'cuda', steps: 50, checkSeconds: 90,
    items: [
      item(sd1('float16'), variants.eager, fast),
      item(sd1('float16'), variants.graphs, fast),
      item(sdxl('float16'), variants.eager, fast),
      item(sdxl('float16'), variants.graphs, fast),
      item(sd1Compiled('float16'), variants.eager, fast),
      item(sd1Compiled('float16'), variants.graphs, fast),
      item(sd1('float32'), variants.eager, fast),
      item(sd1('float32'), variants.graphsTf32, fast),
      item(sd1('float16'), variants.benchmark, fast),
      item(sd1('float16'), variants.eager, others, { python: false }),
      item(sd1('float16'), variants.graphs, fast, { batches: [1, 4, 16], python: false, repeats: 1 }),
      item(sdxl('float32'), variants.eager, fast),
      item(sdxl('float32'), variants.graphsTf32, fast),
      item(sdxl('float16'), variants.eager, others, { python: false }),
      item(sdxl('float16'), variants.graphs, fast, { batches: [1, 4], python: false, repeats: 1 }),
    ],
  };
}

const modelKey = ({ family, dtype, latent, format }) => `${family}${format ? ` ${format}` : ''} ${dtype}, latent ${latent}x${latent}`;

/**
 * Runs `items` in order within `budgetSeconds` of `elapsed()`. An item whose start-up cost (`trace` the first time
 * its model is needed, then `load`) does not fit in what is left is skipped with the reason; `run(item, budget)`
 * measures one (`budget.spent()`, `budget.left()` in seconds) and returns the fields of its record; a throw marks that
 * item failed and the next one still runs.
 * `onRecord(records)` follows every change, so a run cut off anywhere keeps what it measured.
 */
async function runPlan(items, { budgetSeconds, elapsed, run, onRecord = () => {} }) {
  const records = [];
  const traced = new Set();
  const budget = { left: () => budgetSeconds - elapsed(), spent: () => elapsed() > budgetSeconds };
  for (const entry of items) {
    const key = modelKey(entry.model);
    const record = { model: key, variant: entry.variant.name, methods: entry.methods, batches: entry.batches };
    records.push(record);
    const needed = entry.model.load + (traced.has(key) ? 0 : entry.model.trace);
    const left = budget.left();
    if (needed > left) {
      record.skipped = `it needs about ${needed} s before its first figure; ${Math.max(0, left).toFixed(0)} s of the ${budgetSeconds} s budget were left`;
    } else {
      traced.add(key);
      try {
        Object.assign(record, await run(entry, budget));
      } catch (error) {
        record.error = error.message;
      }
    }
    onRecord(records);
  }
  return records;
}

module.exports = { gpuPlan, modelKey, runPlan, variants };
