#!/usr/bin/env node
// npm run bench:gpu [-- --dry-run]: the one-command GPU benchmark. Traces full-size UNets with SD-V1-4's and
// SDXL-base's architectures (bench/gpu/fullsize_unet.py; random weights cost what the real ones cost), then times them
// with `easyinv bench`'s code, per model and dtype: the bare UNet forwards, one inversion per method, batches 4 and 16
// for ddim and easyinv, peak device memory, and the same DDIM loop in Python PyTorch over the same TorchScript file.
// Writes benchmarks.md and bench-gpu.json to $OUT (else ./bench-gpu/) after every model, so that a run cut short keeps
// what it measured; stops starting new models when EASYINV_BENCH_BUDGET seconds (default 420) have passed.
// --dry-run: the same code on the CPU at small sizes (SD-V1-4's architecture at 8x8 latents, 2 steps), as CI runs it.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const { capabilities } = require('../dist');
const { bench, benchTable } = require('../dist/bench');

const dryRun = process.argv.includes('--dry-run');
const python = process.env.PYTHON || 'python3';
const out = process.env.OUT || path.join(process.cwd(), 'bench-gpu');
const budgetSeconds = Number(process.env.EASYINV_BENCH_BUDGET || 420);
const methods = ['ddim', 'easyinv', 'fixed-point', 'renoise', 'direct'];
const batchMethods = ['ddim', 'easyinv'];
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
      'file, measured in the same run (below 1: faster). fixed-point runs at N = 20. Eager execution, LibTorch\'s ' +
      'default math settings (no CUDA graphs, no channels_last yet).',
  ];
  for (const entry of report.models) {
    lines.push('', `## ${entry.family} ${entry.dtype}, latent ${entry.latent}x${entry.latent}`, '');
    if (entry.skipped) {
      lines.push(`Skipped: ${entry.skipped}`);
      continue;
    }
    lines.push(`Traced in ${entry.traceSeconds.toFixed(1)} s; median of ${entry.repeats} runs after a warm-up. ` +
      `Python loop: ${entry.python ? 'measured' : 'not run (no python with torch)'}.`, '');
    lines.push(benchTable(entry.rows, entry.batches));
  }
  return `${lines.join('\n')}\n`;
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
    models: [],
  };
  const save = () => {
    fs.writeFileSync(path.join(out, 'bench-gpu.json'), `${JSON.stringify(report, null, 1)}\n`);
    fs.writeFileSync(path.join(out, 'benchmarks.md'), markdown(report));
  };
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-bench-gpu-'));
  try {
    for (const run of plan.runs) {
      const { family, latent, dtype, repeats, batches } = run;
      const entry = { ...run, rows: [] };
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
      const { python: used } = await bench({
        models: [dir], dtypes: [dtype], methods, batchMethods, device: plan.device, steps: plan.steps, repeats, batches, python,
      }, (row) => {
        entry.rows.push(row);
        save();
        log(`${family} ${dtype} ${row.method}: ${row.seconds.toFixed(4)} s, ${row.unetCalls} UNet calls`);
      });
      entry.python = used !== null;
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
