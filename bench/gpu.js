#!/usr/bin/env node
// npm run bench:gpu [-- --dry-run]: the one-command GPU benchmark. Traces full-size UNets with SD-V1-4's and
// SDXL-base's architectures (bench/gpu/fullsize_unet.py; random weights cost what the real ones cost), then times them
// with `easyinv bench`'s code, per model and dtype: the bare UNet forwards, one inversion per method, batches 4 and 16
// for ddim and easyinv, peak device memory, and the same DDIM loop in Python PyTorch over the same TorchScript file.
// Then the fast paths, each against Python with the same switches: cuDNN benchmark mode, CUDA graphs (Python:
// torch.cuda graphs), TF32 (float32); and a check that the graphed inversion equals the eager one.
// Writes benchmarks.md and bench-gpu.json to $OUT (else ./bench-gpu/) after every model, so that a run cut short keeps
// what it measured; stops starting new models when EASYINV_BENCH_BUDGET seconds (default 420) have passed.
// --dry-run: the same code on the CPU at small sizes (SD-V1-4's architecture at 8x8 latents, 2 steps), as CI runs it.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const { capabilities, cudaSettings, invert, loadModel, Tensor } = require('../dist');
const { bench, benchTable } = require('../dist/bench');

const dryRun = process.argv.includes('--dry-run');
const python = process.env.PYTHON || 'python3';
const out = process.env.OUT || path.join(process.cwd(), 'bench-gpu');
const budgetSeconds = Number(process.env.EASYINV_BENCH_BUDGET || 420);
const methods = ['ddim', 'easyinv', 'fixed-point', 'renoise', 'direct'];
const batchMethods = ['ddim', 'easyinv'];
const fast = ['ddim', 'easyinv'];
// Each variant after the first times the fast methods only. CUDA graphs are captured after cuDNN's autotuning, as
// PyTorch's recipe does; float32 adds TF32.
const variants = (dtype, batches) => [
  { name: 'eager', settings: {}, methods, batches },
  { name: 'eager, cuDNN benchmark', settings: { cudnnBenchmark: true }, methods: fast, batches: [1] },
  { name: 'CUDA graphs, cuDNN benchmark', settings: { cudnnBenchmark: true }, modelOptions: { cudaGraphs: true }, methods: fast, batches: batches.slice(0, 2) },
  ...(dtype === 'float32' ? [{ name: 'CUDA graphs, cuDNN benchmark, TF32', settings: { cudnnBenchmark: true, matmulTf32: true, convolutionTf32: true }, modelOptions: { cudaGraphs: true }, methods: fast, batches: [1] }] : []),
];
// Most telling first: a run cut short by its budget keeps the float16 figures of both models.
const plan = dryRun
  ? { device: 'cpu', steps: 2, runs: [{ family: 'sd1', latent: 8, dtype: 'float32', repeats: 1, batches: [1, 2] }] }
  : {
    device: 'cuda', steps: 50,
    runs: [
      { family: 'sd1', latent: 64, dtype: 'float16', repeats: 3, batches: [1, 4, 16] },
      { family: 'sdxl', latent: 128, dtype: 'float16', repeats: 2, batches: [1, 4] },
      { family: 'sd1', latent: 64, dtype: 'float32', repeats: 3, batches: [1, 4, 16] },
      { family: 'sdxl', latent: 128, dtype: 'float32', repeats: 2, batches: [1, 4] },
    ],
  };

const started = Date.now();
const elapsed = () => (Date.now() - started) / 1000;
const log = (message) => console.log(`bench:gpu [${elapsed().toFixed(0)} s] ${message}`);

function pythonTorch() {
  try {
    return execFileSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error(`bench:gpu needs a python with torch to trace the UNets and run the Python loop: ${python} has none (set PYTHON)`);
  }
}

function trace(family, latent, dtype, dir) {
  const script = path.join(__dirname, 'gpu', 'fullsize_unet.py');
  const begin = Date.now();
  execFileSync(python, [script, '--family', family, '--device', plan.device, '--dtype', dtype, '--latent', String(latent),
    '--batch', '1', '--out', dir], { stdio: 'inherit' });
  return (Date.now() - begin) / 1000;
}

function markdown(report) {
  const { machine } = report;
  const lines = [
    `# GPU benchmarks${dryRun ? ' (dry run on the CPU: small sizes, not a measurement)' : ''}`,
    '',
    `${report.date}. ${machine.device}; ${machine.cpu}, ${machine.cores} cores. LibTorch ${machine.libtorch} ` +
      `(the addon), PyTorch ${machine.pytorch} (tracing and the Python loop), Node.js ${machine.node}.`,
    '',
    'Full-size UNets with random weights (bench/gpu/fullsize_unet.py), batch 1 traces; the bare UNet forwards are the ' +
      'floor of any loop; "vs Python" is our seconds over the same DDIM loop in Python PyTorch on the same TorchScript ' +
      'file, measured in the same run with the same switches (below 1: faster); with CUDA graphs the Python loop ' +
      'replays a torch.cuda.CUDAGraph of its UNet call too. fixed-point runs at N = 20. "eager" is LibTorch\'s default ' +
      'settings (TF32 for cuDNN convolutions only, no cuDNN benchmark).',
  ];
  if (report.checks.length > 0) {
    lines.push('', `## ${plan.device} against the CPU`, '', 'The small bundles (weights/test-sd1, test-sdxl), batch 2, guidance 3, 10 steps: ' +
      `max |difference| of each method's inverted latent on ${plan.device} from the CPU's in float32.`, '',
      `| bundle | dtype | CUDA graphs | ${methods.join(' | ')} |`, `| --- | --- | --- |${methods.map(() => ' --- |').join('')}`);
    for (const c of report.checks) {
      const cells = c.error ? [`failed: ${c.error.replace(/\|/g, '/').split('\n')[0]}`] : methods.map((m) => c.maxDifference[m].toExponential(1));
      lines.push(`| ${c.bundle} | ${c.dtype} | ${c.cudaGraphs ? 'yes' : 'no'} | ${cells.join(' | ')} |`);
    }
  }
  for (const entry of report.models) {
    lines.push('', `## ${entry.family} ${entry.dtype}, latent ${entry.latent}x${entry.latent}`, '');
    if (entry.skipped) {
      lines.push(`Skipped: ${entry.skipped}`);
      continue;
    }
    lines.push(`Traced in ${entry.traceSeconds.toFixed(1)} s; median of ${entry.repeats} runs after a warm-up. ` +
      `Python loop: ${entry.python ? 'measured' : 'not run (no python with torch)'}.`);
    if (entry.graphCheck) lines.push('', `CUDA graphs against eager, DDIM inversion, ${entry.graphCheck.steps} steps: max |difference| ` +
      `${entry.graphCheck.maxDifference.toExponential(2)} (latents of max |value| ${entry.graphCheck.maxValue.toFixed(2)}).`);
    for (const variant of entry.variants) {
      lines.push('', `### ${variant.name}`, '');
      lines.push(variant.error ? `Failed: ${variant.error}` : variant.rows.length ? benchTable(variant.rows, variant.batches) : 'Not run: the budget was spent.');
    }
  }
  return `${lines.join('\n')}\n`;
}

// The same DDIM inversion with the UNet eager and replayed from CUDA graphs: they must agree to float rounding.
async function graphCheck(dir, dtype) {
  const steps = 10;
  const results = [];
  for (const cudaGraphs of [false, true]) {
    const model = await loadModel(dir, { device: plan.device, dtype, cudaGraphs });
    const { channels, size } = model.manifest.latent;
    const z0 = await Tensor.randn([1, channels, size, size], { seed: 1, device: model.device, dtype });
    const inverted = await invert(model, z0, { method: 'ddim', steps });
    results.push(Array.from(await inverted.latent.toArray()));
    inverted.dispose();
    z0.dispose();
    model.dispose();
  }
  const [eager, graphed] = results;
  const maxDifference = eager.reduce((max, value, i) => Math.max(max, Math.abs(value - graphed[i])), 0);
  const maxValue = eager.reduce((max, value) => Math.max(max, Math.abs(value)), 0);
  log(`CUDA graphs against eager (${dtype}): max |difference| ${maxDifference.toExponential(2)}, max |value| ${maxValue.toFixed(2)}`);
  return { steps, maxDifference, maxValue };
}

// The small bundles on the benchmark's device against the CPU in float32: each method's inversion with guidance, in
// each dtype, eager and (CUDA) replayed from graphs. Figures, not verdicts: float16 differs by its rounding.
async function deviceChecks() {
  const weights = path.join(__dirname, '..', 'weights');
  const checks = [];
  for (const bundle of ['test-sd1', 'test-sdxl']) {
    const dir = path.join(weights, bundle);
    const reference = await loadModel(dir, { device: 'cpu', dtype: 'float32' });
    const { channels, size } = reference.manifest.latent;
    const z0 = await Tensor.randn([2, channels, size, size], { seed: 3 });
    const options = { steps: 10, prompt: 'a photo', guidance: 3 };
    const expected = {};
    for (const method of methods) {
      const inverted = await invert(reference, z0, { ...options, method });
      expected[method] = await inverted.latent.toArray();
      inverted.dispose();
    }
    reference.dispose();
    for (const dtype of plan.device === 'cpu' ? ['float32'] : ['float32', 'float16']) {
      for (const cudaGraphs of plan.device === 'cpu' ? [false] : [false, true]) {
        const check = { bundle, dtype, cudaGraphs, maxDifference: {} };
        checks.push(check);
        try {
          const model = await loadModel(dir, { device: plan.device, dtype, cudaGraphs });
          const start = await z0.to({ device: model.device, dtype });
          for (const method of methods) {
            const inverted = await invert(model, start, { ...options, method });
            const values = await inverted.latent.toArray();
            check.maxDifference[method] = values.reduce((max, v, i) => Math.max(max, Math.abs(v - expected[method][i])), 0);
            inverted.dispose();
          }
          start.dispose();
          model.dispose();
        } catch (error) {
          check.error = error.message;
        }
        log(`check ${bundle} ${dtype}${cudaGraphs ? ' CUDA graphs' : ''}: ${check.error ?? JSON.stringify(check.maxDifference)}`);
      }
    }
    z0.dispose();
  }
  return checks;
}

async function main() {
  fs.mkdirSync(out, { recursive: true });
  const caps = await capabilities();
  const device = caps.devices.find((d) => d.device.startsWith(plan.device));
  if (!device) {
    throw new Error(`bench:gpu: no ${plan.device} device here (capabilities: cudaBuild ${caps.cudaBuild}, cuda ${caps.cuda}); ` +
      'build with LIBTORCH_USE_PYTORCH=1 against a CUDA PyTorch, or pass --dry-run');
  }
  const report = {
    date: new Date().toISOString(),
    dryRun,
    machine: {
      device: device.name + (device.memoryBytes ? ` (${(device.memoryBytes / 2 ** 30).toFixed(0)} GiB)` : ''),
      cpu: os.cpus()[0]?.model ?? 'unknown CPU', cores: os.cpus().length, libtorch: caps.libtorch, pytorch: pythonTorch(),
      node: process.version,
    },
    plan,
    checks: [],
    models: [],
  };
  const save = () => {
    fs.writeFileSync(path.join(out, 'bench-gpu.json'), `${JSON.stringify(report, null, 1)}\n`);
    fs.writeFileSync(path.join(out, 'benchmarks.md'), markdown(report));
  };
  report.checks = await deviceChecks();
  save();
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-bench-gpu-'));
  try {
    for (const run of plan.runs) {
      const { family, latent, dtype, repeats, batches } = run;
      const entry = { ...run, variants: [] };
      report.models.push(entry);
      if (!device.dtypes.includes(dtype)) entry.skipped = `LibTorch ${caps.libtorch} runs no ${dtype} convolution on ${device.device}`;
      else if (elapsed() > budgetSeconds) entry.skipped = `the ${budgetSeconds} s budget was spent`;
      if (entry.skipped) {
        log(`${family} ${dtype}: skipped (${entry.skipped})`);
        save();
        continue;
      }
      const dir = path.join(scratch, `${family}-${dtype}`);
      log(`${family} ${dtype}: tracing at latent ${latent}`);
      entry.traceSeconds = trace(family, latent, dtype, dir);
      const defaults = cudaSettings();
      for (const variant of variants(dtype, batches)) {
        if (variant.modelOptions?.cudaGraphs && plan.device === 'cpu') continue; // CUDA only
        const timed = { name: variant.name, batches: variant.batches, rows: [] };
        entry.variants.push(timed);
        if (variant !== entry.variants[0] && elapsed() > budgetSeconds) continue;
        cudaSettings({ ...defaults, ...variant.settings });
        try {
          const { python: used } = await bench({
            models: [dir], dtypes: [dtype], methods: variant.methods, batchMethods, device: plan.device, steps: plan.steps,
            repeats, batches: variant.batches, python, modelOptions: variant.modelOptions,
          }, (row) => {
            timed.rows.push(row);
            save();
            log(`${family} ${dtype} ${variant.name} ${row.method}: ${row.seconds.toFixed(4)} s, ${row.unetCalls} UNet calls`);
          });
          entry.python = used !== null;
          if (variant.modelOptions?.cudaGraphs) entry.graphCheck = await graphCheck(dir, dtype);
        } catch (error) {
          timed.error = error.message; // the other variants still run
          log(`${family} ${dtype} ${variant.name}: failed: ${error.message}`);
        } finally {
          cudaSettings(defaults);
        }
        save();
      }
      fs.rmSync(dir, { recursive: true, force: true });
      save();
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  save();
  log(`wrote ${path.join(out, 'benchmarks.md')} and bench-gpu.json`);
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
