#!/usr/bin/env node
// node bench/gpu.js [--dry-run] [--no-build]: the one-command GPU benchmark (docs/gpu.md gives the exact call on a GPU
// machine, and bench/gpu/rehearse.js runs that call on the CPU). Builds the addon against the LibTorch found
// (LIBTORCH_USE_PYTORCH=1: the machine's PyTorch), checks NVRTC and the small bundles on the device against the CPU,
// then traces full-size UNets with SD-V1-4's and SDXL-base's architectures (bench/gpu/fullsize_unet.py; random weights
// cost what the real ones cost) and times them with `easyinv bench`'s code, item by item in bench/gpu/plan.js's order:
// our inversions and bare UNet forwards against the same DDIM loop in Python PyTorch over the same TorchScript file,
// eager, with cuDNN benchmark mode, with CUDA graphs (Python: torch.cuda graphs) and TF32, and a check that the graphed
// inversion equals the eager one.
// Budget: EASYINV_BENCH_BUDGET seconds (default 540) from EASYINV_BENCH_STARTED (epoch seconds, set where the command
// starts) or else from this process's start; the build counts. Writes benchmarks.md and bench-gpu.json to $OUT (else
// ./bench-gpu/), replaced whole after every item. --dry-run: the same code on the CPU at small sizes, as CI runs it.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const { gpuPlan, modelKey, runPlan } = require('./gpu/plan');

const root = path.join(__dirname, '..');
const dryRun = process.argv.includes('--dry-run') || process.env.EASYINV_BENCH_DRY_RUN === '1';
const python = process.env.PYTHON || 'python3';
const out = process.env.OUT || path.join(process.cwd(), 'bench-gpu');
const budgetSeconds = Number(process.env.EASYINV_BENCH_BUDGET || 540);
const startedMs = process.env.EASYINV_BENCH_STARTED ? Number(process.env.EASYINV_BENCH_STARTED) * 1000 : performance.timeOrigin;
const methods = ['ddim', 'easyinv', 'fixed-point', 'renoise', 'direct'];
const plan = gpuPlan(dryRun);

const elapsed = () => (Date.now() - startedMs) / 1000;
const log = (message) => console.log(`bench:gpu [${elapsed().toFixed(0)} s] ${message}`);

function pythonTorch() {
  try {
    return execFileSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error(`bench:gpu needs a python with torch to trace the UNets and run the Python loop: ${python} has none (set PYTHON)`);
  }
}

function trace({ family, latent, dtype, format = 'torchscript' }, dir) {
  const begin = Date.now();
  execFileSync(python, [path.join(__dirname, 'gpu', 'fullsize_unet.py'), '--family', family, '--device', plan.device,
    '--dtype', dtype, '--latent', String(latent), '--batch', '1', '--format', format, '--out', dir], { stdio: 'inherit' });
  return (Date.now() - begin) / 1000;
}

function markdown(report, benchTable) {
  const { machine } = report;
  const lines = [
    `# GPU benchmarks${dryRun ? ' (dry run on the CPU: small sizes, not a measurement)' : ''}`,
    '',
    `${report.date}. ${machine.device}; ${machine.cpu}, ${machine.cores} cores. LibTorch ${machine.libtorch} ` +
      `(the addon), PyTorch ${machine.pytorch} (tracing and the Python loop), Node.js ${machine.node}. ` +
      `NVRTC: ${machine.nvrtc}. Budget ${budgetSeconds} s; the run took ${report.seconds?.toFixed(0) ?? '(still running)'} s.`,
    '',
    'Full-size UNets with random weights (bench/gpu/fullsize_unet.py), batch 1 traces or, "pt2", compiled packages ' +
      '(torch.export + AOTInductor, batches 1 to 64); the bare UNet forwards are the ' +
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
  let model;
  for (const record of report.items) {
    if (record.model !== model) {
      model = record.model;
      lines.push('', `## ${model}`);
    }
    lines.push('', `### ${record.variant}: ${record.methods.join(', ')}; batches ${record.batches.join(', ')}`, '');
    if (record.traceSeconds !== undefined) lines.push(`Traced in ${record.traceSeconds.toFixed(1)} s.`, '');
    if (record.skipped) lines.push(`Skipped: ${record.skipped}.`);
    else if (record.error) lines.push(`Failed: ${record.error}`);
    else {
      lines.push(record.rows.length ? benchTable(record.rows, record.batches) : 'No figure: the budget was spent.', '');
      lines.push(`Python loop: ${record.pythonError ? `failed: ${record.pythonError}` : record.python ? 'measured' : 'not run'}.`);
    }
    if (record.graphCheck) lines.push('', `CUDA graphs against eager, DDIM inversion, ${record.graphCheck.steps} steps: max |difference| ` +
      `${record.graphCheck.maxDifference.toExponential(2)} (latents of max |value| ${record.graphCheck.maxValue.toFixed(2)}).`);
    if (record.graphCheckError) lines.push('', `CUDA graphs against eager: the check failed: ${record.graphCheckError}`);
  }
  return `${lines.join('\n')}\n`;
}

async function main() {
  fs.mkdirSync(out, { recursive: true });
  if (!process.argv.includes('--no-build')) {
    log('building the addon');
    execFileSync(process.execPath, [path.join(root, 'scripts', 'build-addon.js')], { stdio: 'inherit' });
  }
  if (!fs.existsSync(path.join(root, 'dist', 'index.js'))) throw new Error('bench:gpu needs the compiled library in dist/: npm run build');
  const { capabilities, cudaSettings, invert, loadModel, nvrtcCheck, Tensor } = require('../dist');
  const { bench, benchTable } = require('../dist/bench');
  const { writeFileWhole } = require('../dist/files'); // a run killed mid-write keeps the previous version

  const caps = await capabilities();
  const device = caps.devices.find((d) => d.device.startsWith(plan.device));
  if (!device) {
    throw new Error(`bench:gpu: no ${plan.device} device here (capabilities: cudaBuild ${caps.cudaBuild}, cuda ${caps.cuda}); ` +
      'build with LIBTORCH_USE_PYTORCH=1 against a CUDA PyTorch, or pass --dry-run');
  }
  const nvrtc = caps.cudaBuild ? await nvrtcCheck().then((r) => `compiles (${path.basename(r.library)}, builtins ${r.builtins || 'found by the loader'})`,
    (error) => `fails: ${error.message}`) : 'not in this build';
  log(`LibTorch ${caps.libtorch}, ${device.name}; NVRTC ${nvrtc}`);
  const report = {
    date: new Date().toISOString(),
    dryRun,
    budgetSeconds,
    machine: {
      device: device.name + (device.memoryBytes ? ` (${(device.memoryBytes / 2 ** 30).toFixed(0)} GiB)` : ''),
      cpu: os.cpus()[0]?.model ?? 'unknown CPU', cores: os.cpus().length, libtorch: caps.libtorch, pytorch: pythonTorch(),
      node: process.version, nvrtc,
    },
    plan,
    checks: [],
    items: [],
  };
  const save = () => {
    writeFileWhole(path.join(out, 'bench-gpu.json'), `${JSON.stringify(report, null, 1)}\n`);
    writeFileWhole(path.join(out, 'benchmarks.md'), markdown(report, benchTable));
  };

  // The small bundles on the benchmark's device against the CPU in float32: each method's inversion with guidance, in
  // each dtype, eager and (CUDA) replayed from graphs. Figures, not verdicts: float16 differs by its rounding.
  async function deviceChecks() {
    for (const bundle of ['test-sd1', 'test-sdxl']) {
      const dir = path.join(root, 'weights', bundle);
      const options = { steps: 10, prompt: 'a photo', guidance: 3 };
      const expected = {};
      const reference = await loadModel(dir, { device: 'cpu', dtype: 'float32' });
      const { channels, size } = reference.manifest.latent;
      const z0 = await Tensor.randn([2, channels, size, size], { seed: 3 });
      try {
        for (const method of methods) {
          const inverted = await invert(reference, z0, { ...options, method });
          expected[method] = await inverted.latent.toArray();
          inverted.dispose();
        }
      } finally {
        reference.dispose();
      }
      for (const dtype of plan.device === 'cpu' ? ['float32'] : ['float32', 'float16']) {
        for (const cudaGraphs of plan.device === 'cpu' ? [false] : [false, true]) {
          const check = { bundle, dtype, cudaGraphs, maxDifference: {} };
          report.checks.push(check);
          let model;
          let start;
          try {
            model = await loadModel(dir, { device: plan.device, dtype, cudaGraphs });
            start = await z0.to({ device: model.device, dtype });
            for (const method of methods) {
              const inverted = await invert(model, start, { ...options, method });
              const values = await inverted.latent.toArray();
              check.maxDifference[method] = values.reduce((max, v, i) => Math.max(max, Math.abs(v - expected[method][i])), 0);
              inverted.dispose();
            }
          } catch (error) {
            check.error = error.message;
          } finally {
            start?.dispose();
            model?.dispose();
          }
          log(`check ${bundle} ${dtype}${cudaGraphs ? ' CUDA graphs' : ''}: ${check.error ?? JSON.stringify(check.maxDifference)}`);
        }
      }
      z0.dispose();
    }
  }

  // The same DDIM inversion with the UNet eager and replayed from CUDA graphs: they must agree to float rounding.
  async function graphCheck(dir, dtype) {
    const steps = 10;
    const results = [];
    for (const cudaGraphs of [false, true]) {
      const model = await loadModel(dir, { device: plan.device, dtype, cudaGraphs });
      try {
        const { channels, size } = model.manifest.latent;
        const z0 = await Tensor.randn([1, channels, size, size], { seed: 1, device: model.device, dtype });
        const inverted = await invert(model, z0, { method: 'ddim', steps });
        results.push(Array.from(await inverted.latent.toArray()));
        inverted.dispose();
        z0.dispose();
      } finally {
        model.dispose();
      }
    }
    const [eager, graphed] = results;
    const maxDifference = eager.reduce((max, value, i) => Math.max(max, Math.abs(value - graphed[i])), 0);
    const maxValue = eager.reduce((max, value) => Math.max(max, Math.abs(value)), 0);
    return { steps, maxDifference, maxValue };
  }

  if (elapsed() + plan.checkSeconds <= budgetSeconds) {
    try {
      await deviceChecks();
    } catch (error) {
      report.checks.push({ bundle: 'all', dtype: '', cudaGraphs: false, error: error.message });
      log(`device checks failed: ${error.message}`);
    }
    save();
  }

  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-bench-gpu-'));
  const traces = new Map(); // model key -> { dir, seconds } or { error }
  const defaults = cudaSettings();
  const lastItemOf = new Map(plan.items.map((entry) => [modelKey(entry.model), entry]));
  const run = async (entry, budget) => {
    const key = modelKey(entry.model);
    const fields = {};
    if (!traces.has(key)) {
      const dir = path.join(scratch, key.replace(/[^a-z0-9]+/gi, '-'));
      log(`${key}: tracing`);
      try {
        traces.set(key, { dir, seconds: trace(entry.model, dir) });
        fields.traceSeconds = traces.get(key).seconds;
      } catch (error) {
        traces.set(key, { error: `tracing failed: ${error.message}` });
      }
    }
    const traced = traces.get(key);
    if (traced.error) throw new Error(traced.error);
    const { variant } = entry;
    if (variant.modelOptions?.cudaGraphs && plan.device === 'cpu') throw new Error('CUDA graphs need a CUDA device');
    cudaSettings({ ...defaults, ...variant.settings });
    try {
      const measured = await bench({
        models: [traced.dir], dtypes: [entry.model.dtype], methods: entry.methods, batchMethods: entry.methods, device: plan.device,
        steps: plan.steps, repeats: entry.repeats, batches: entry.batches, python: entry.python ? python : null,
        modelOptions: variant.modelOptions, shouldStop: budget.spent,
      }, (row) => log(`${key} ${variant.name} ${row.method}: ${row.seconds.toFixed(4)} s, ${row.unetCalls} UNet calls`));
      Object.assign(fields, measured);
      if (measured.pythonError) log(`${key} ${variant.name}: the Python loop failed: ${measured.pythonError}`);
      if (variant.graphCheck && budget.left() > 2 * entry.model.load) { // it loads the model twice
        try {
          fields.graphCheck = await graphCheck(traced.dir, entry.model.dtype);
          log(`${key} CUDA graphs against eager: max |difference| ${fields.graphCheck.maxDifference.toExponential(2)}`);
        } catch (error) {
          fields.graphCheckError = error.message;
        }
      }
      return fields;
    } finally {
      cudaSettings(defaults);
      if (lastItemOf.get(key) === entry) fs.rmSync(traced.dir, { recursive: true, force: true });
    }
  };
  try {
    report.items = await runPlan(plan.items, {
      budgetSeconds, elapsed, run,
      onRecord: (records) => {
        report.items = records;
        const last = records[records.length - 1];
        if (last.skipped || last.error) log(`${last.model} ${last.variant}: ${last.skipped ? `skipped: ${last.skipped}` : `failed: ${last.error}`}`);
        save();
      },
    });
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  report.seconds = elapsed();
  save();
  log(`wrote ${path.join(out, 'benchmarks.md')} and bench-gpu.json`);
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
