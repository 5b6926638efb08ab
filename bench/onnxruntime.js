#!/usr/bin/env node
// easyinv against onnxruntime-node, the runtime a Node user would otherwise pick, on the same UNet on the CPU: the
// bundle's TorchScript UNet exported to ONNX (bench/onnx_export.py, needs a python with torch 2.x), onnxruntime-node
// installed on first use into a scratch folder (never a dependency of the package; ONNXRUNTIME_NODE_INSTALL=skip,
// the CPU build from the npm registry, unless set otherwise), equal outputs checked, then interleaved rounds, each
// runtime in a fresh process per round so that its peak RSS is its own: forwards at batch 1 and 2, a DDIM inversion
// loop, peak RSS and the longest event-loop stall. Both run with their defaults; --threads 1,2 adds easyinv rows
// with setThreads(n), --channels-last one with channelsLast, --retain-freed-memory one after retainFreedMemory(),
// --compiled DIR one with the UNet of DIR, the bundle's compiled .pt2 twin (test/python/make_pt2_bundles.py). Results: docs/cpu.md.
// Usage: npm run bench:onnxruntime -- [--model weights/tiny-sd1-256] [--rounds 11] [--forwards 20] [--steps 50]
//        [--threads 1] [--channels-last] [--retain-freed-memory] [--compiled DIR] [--scratch DIR] [--python PYTHON]
//        [--onnxruntime 1.30.0]
'use strict';
const { execFileSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { monitorEventLoopDelay } = require('perf_hooks');

const root = path.join(__dirname, '..');
const option = (name, fallback) => {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : fallback;
};

// The same inputs in every process, without loading either runtime to make them: normal noise from a seeded PRNG.
function normal(count, seed) {
  let state = seed >>> 0;
  const uniform = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 2 ** 32;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return out;
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const rssMiB = () => process.memoryUsage().rss / 2 ** 20;

// ---- one runtime, one round (a child process) ----

async function easyinvRuntime(job, inputs) {
  const stages = { node: rssMiB() };
  const easyinv = require('..');
  if (job.threads) easyinv.setThreads(job.threads);
  if (job.retainFreedMemory) easyinv.retainFreedMemory();
  const { libtorch, threads } = await easyinv.capabilities();
  stages.libtorch = rssMiB();
  const unet = await easyinv.loadModule(job.unet, { channelsLast: job.channelsLast });
  stages.loaded = rssMiB();
  const { Tensor } = easyinv;
  const feeds = inputs.batches.map(({ sample, timestep, cond, shapes }) => [
    Tensor.fromArray(sample, shapes[0]), Tensor.fromArray(timestep, shapes[1], { dtype: 'int64' }), Tensor.fromArray(cond, shapes[2]),
  ]);
  // Debian's LibTorch computes matrix products with the system's libblas.so.3: reference BLAS or OpenBLAS.
  const blas = fs.readFileSync('/proc/self/maps', 'utf8').match(/\S*(?:openblas|blas)\S*\.so\S*/)?.[0];
  return {
    about: { libtorch, threads, stages, blas },
    async forward(batch, read) {
      const eps = await unet.forward(...feeds[batch - 1]);
      const data = read ? await eps.toArray() : undefined;
      eps.dispose();
      return data;
    },
    async loop(steps) {
      const timesteps = steps.map((step) => Tensor.fromArray([step.timestep], [1], { dtype: 'int64' }));
      let z = Tensor.fromArray(inputs.batches[0].sample, inputs.batches[0].shapes[0]);
      for (let i = 0; i < steps.length; i++) {
        const next = await unet.denoise(z, timesteps[i], [feeds[0][2]], 1, steps[i].weights);
        z.dispose();
        z = next;
      }
      return z.toArray();
    },
  };
}

async function onnxruntimeRuntime(job, inputs) {
  const ort = require(path.join(job.scratch, 'node_modules', 'onnxruntime-node'));
  const session = await ort.InferenceSession.create(job.onnx); // its defaults: all graph optimisations, its threads
  const feed = (sample, timestep, cond, shapes) => Object.fromEntries(session.inputNames.map((name, i) => [name, [
    new ort.Tensor('float32', sample, shapes[0]), new ort.Tensor('int64', timestep, shapes[1]), new ort.Tensor('float32', cond, shapes[2]),
  ][i]]));
  const feeds = inputs.batches.map(({ sample, timestep, cond, shapes }) => feed(sample, timestep, cond, shapes));
  const run = async (feeds) => (await session.run(feeds))[session.outputNames[0]].data;
  return {
    about: { onnxruntime: require(path.join(job.scratch, 'node_modules', 'onnxruntime-node', 'package.json')).version },
    forward: (batch) => run(feeds[batch - 1]),
    async loop(steps) {
      const { sample, cond, shapes } = inputs.batches[0];
      let z = sample;
      for (const { timestep, weights: [a, b] } of steps) {
        const eps = await run(feed(z, BigInt64Array.of(BigInt(timestep)), cond, shapes));
        const next = new Float32Array(z.length);
        for (let i = 0; i < z.length; i++) next[i] = a * z[i] + b * eps[i];
        z = next;
      }
      return z;
    },
  };
}

async function worker(job) {
  const [channels, side] = [4, job.side], [tokens, dim] = job.cond;
  const batches = [1, 2].map((batch) => ({
    sample: normal(batch * channels * side * side, 1),
    timestep: new BigInt64Array(batch).fill(500n),
    cond: normal(batch * tokens * dim, 2),
    shapes: [[batch, channels, side, side], [batch], [batch, tokens, dim]],
  }));
  const runtime = await (job.runtime === 'easyinv' ? easyinvRuntime : onnxruntimeRuntime)(job, { batches });
  const result = { ...runtime.about, forward: {} };
  if (job.outputs) {
    result.outputs = { 1: Array.from(await runtime.forward(1, true)), 2: Array.from(await runtime.forward(2, true)) };
  }
  for (const batch of [1, 2]) {
    for (let i = 0; i < 2; i++) await runtime.forward(batch); // warm-up: first-call optimisation and allocations
  }
  // Enabled once: a histogram enabled again counts the time it was off as one delay.
  const stall = monitorEventLoopDelay({ resolution: 1 });
  stall.enable();
  for (const batch of [1, 2]) {
    const times = [];
    for (let i = 0; i < job.forwards; i++) {
      const start = process.hrtime.bigint();
      await runtime.forward(batch);
      times.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    result.forward[batch] = median(times);
  }
  const start = process.hrtime.bigint();
  const latent = await runtime.loop(job.steps);
  result.loop = Number(process.hrtime.bigint() - start) / 1e6;
  stall.disable();
  if (job.outputs) result.outputs.loop = Array.from(latent);
  result.stall = stall.max / 1e6;
  result.peakRss = process.resourceUsage().maxRSS / 1024;
  process.stdout.write(JSON.stringify(result));
}

// ---- the parent: export, install, rounds, table ----

function pythonWithTorch() {
  const candidates = [option('python'), process.env.PYTHON, 'python3'].filter(Boolean);
  const found = candidates.find((python) => {
    try {
      return /^[2-9]\./.test(execFileSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' }));
    } catch {
      return false;
    }
  });
  if (!found) throw new Error('the ONNX export needs a python with torch 2.x: pass --python or set PYTHON');
  return found;
}

function exportOnnx(unet, side, cond, scratch) {
  const { size, mtimeMs } = fs.statSync(unet);
  const key = crypto.createHash('sha1').update(`${path.resolve(unet)} ${size} ${mtimeMs}`).digest('hex').slice(0, 12);
  const folder = path.join(scratch, `unet-${key}`); // a folder: a large model's weights go in a file beside it
  const onnx = path.join(folder, 'unet.onnx');
  if (!fs.existsSync(onnx)) {
    fs.mkdirSync(folder, { recursive: true });
    console.log(`exporting ${unet} to ONNX ...`);
    execFileSync(pythonWithTorch(), [path.join(__dirname, 'onnx_export.py'), unet, `${onnx}.partial`, side, ...cond].map(String),
      { stdio: ['ignore', 'ignore', 'inherit'] });
    fs.renameSync(`${onnx}.partial`, onnx);
  }
  return onnx;
}

function installOnnxruntime(scratch, version) {
  const installed = path.join(scratch, 'node_modules', 'onnxruntime-node', 'package.json');
  if (fs.existsSync(installed) && JSON.parse(fs.readFileSync(installed, 'utf8')).version === version) return;
  console.log(`installing onnxruntime-node@${version} into ${scratch} ...`);
  fs.mkdirSync(scratch, { recursive: true });
  execFileSync('npm', ['install', '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--prefix', scratch, `onnxruntime-node@${version}`], {
    stdio: 'inherit',
    env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: process.env.ONNXRUNTIME_NODE_INSTALL ?? 'skip' },
  });
}

function compiledUnet(dir) {
  const { files } = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  if (!files.unet.endsWith('.pt2')) throw new Error(`--compiled ${dir}: its UNet ${files.unet} is not a .pt2 package`);
  return path.resolve(dir, files.unet);
}

const maxDifference = (a, b) => a.reduce((most, value, i) => Math.max(most, Math.abs(value - b[i])), 0);
const spread = (values, digits) => `${median(values).toFixed(digits)} (${Math.min(...values).toFixed(digits)}–${Math.max(...values).toFixed(digits)})`;

async function main() {
  const model = path.resolve(option('model', path.join(root, 'weights', 'tiny-sd1-256')));
  const rounds = Number(option('rounds', 11)), forwards = Number(option('forwards', 20)), stepCount = Number(option('steps', 50));
  const scratch = path.resolve(option('scratch', path.join(os.tmpdir(), 'easyinv-bench-onnxruntime')));
  const manifest = JSON.parse(fs.readFileSync(path.join(model, 'manifest.json'), 'utf8'));
  const unet = path.join(model, manifest.files.unet);
  const side = manifest.latent.size, cond = manifest.cond_shape;

  const onnx = exportOnnx(unet, side, cond, scratch);
  installOnnxruntime(scratch, option('onnxruntime', '1.30.0'));
  const { makeSchedule, ddimWeights } = require('..');
  const steps = makeSchedule(manifest.scheduler, stepCount).inversion
    .map(({ timestep, from, to }) => ({ timestep, weights: ddimWeights(from, to) }));

  const extraThreads = option('threads') ? option('threads').split(',').map(Number) : [];
  const runtimes = [
    { name: 'easyinv (defaults)', runtime: 'easyinv' },
    ...extraThreads.map((threads) => ({ name: `easyinv, setThreads(${threads})`, runtime: 'easyinv', threads })),
    ...(process.argv.includes('--channels-last') ? [{ name: 'easyinv, channelsLast', runtime: 'easyinv', channelsLast: true }] : []),
    ...(process.argv.includes('--retain-freed-memory') ? [{ name: 'easyinv, retainFreedMemory()', runtime: 'easyinv', retainFreedMemory: true }] : []),
    ...(option('compiled') ? [{ name: 'easyinv, compiled .pt2', runtime: 'easyinv', unet: compiledUnet(option('compiled')) }] : []),
    { name: 'onnxruntime-node (defaults)', runtime: 'onnxruntime' },
  ];
  const results = runtimes.map(() => []);
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < runtimes.length; k++) { // rotating order: drift falls on every runtime alike
      const i = (round + k) % runtimes.length;
      const job = { unet, onnx, scratch, side, cond, forwards, steps, outputs: round === 0, ...runtimes[i] };
      const out = execFileSync(process.execPath, [__filename, '--worker', JSON.stringify(job)], {
        encoding: 'utf8', maxBuffer: 1 << 28, stdio: ['ignore', 'pipe', 'inherit'],
      });
      results[i].push(JSON.parse(out));
    }
    process.stderr.write(`round ${round + 1}/${rounds}\r`);
  }

  const reference = results[runtimes.length - 1][0];
  const first = results[0][0];
  console.log(`\n${path.relative(root, model) || model}: UNet at [B, 4, ${side}, ${side}], ${os.availableParallelism()} CPUs, ` +
    `LibTorch ${first.libtorch} (BLAS: ${first.blas ? path.basename(path.dirname(first.blas)) + '/' + path.basename(first.blas) : 'none loaded'}), onnxruntime-node ${reference.onnxruntime}; ${rounds} interleaved rounds of ${forwards} forwards ` +
    `per batch and one ${stepCount}-step DDIM inversion, median (min–max) over rounds`);
  for (let i = 0; i < runtimes.length - 1; i++) {
    const { outputs, threads } = results[i][0];
    console.log(`${runtimes[i].name}: ${threads} threads; against onnxruntime-node, largest difference: forward batch 1 ` +
      `${maxDifference(outputs[1], reference.outputs[1]).toExponential(1)}, batch 2 ${maxDifference(outputs[2], reference.outputs[2]).toExponential(1)}, ` +
      `${stepCount}-step latent ${maxDifference(outputs.loop, reference.outputs.loop).toExponential(1)}`);
  }
  const stages = first.stages;
  console.log(`easyinv RSS (MiB): Node ${stages.node.toFixed(0)}, + LibTorch loaded ${stages.libtorch.toFixed(0)}, ` +
    `+ UNet loaded ${stages.loaded.toFixed(0)}, peak ${first.peakRss.toFixed(0)}`);
  console.log('\n| runtime | batch 1 forward (ms) | batch 2 forward (ms) | DDIM loop (ms) | peak RSS (MiB) | longest event-loop stall (ms) |');
  console.log('|---|---|---|---|---|---|');
  results.forEach((rows, i) => {
    const column = (pick, digits) => spread(rows.map(pick), digits);
    console.log(`| ${runtimes[i].name} | ${column((r) => r.forward[1], 1)} | ${column((r) => r.forward[2], 1)} | ` +
      `${column((r) => r.loop, 0)} | ${column((r) => r.peakRss, 0)} | ${column((r) => r.stall, 1)} |`);
  });
  const ratio = (pick) => (median(results[0].map(pick)) / median(reference === undefined ? [] : results[runtimes.length - 1].map(pick))).toFixed(2);
  console.log(`\neasyinv (defaults) / onnxruntime-node: batch 1 ${ratio((r) => r.forward[1])}x, batch 2 ${ratio((r) => r.forward[2])}x, ` +
    `loop ${ratio((r) => r.loop)}x, peak RSS ${ratio((r) => r.peakRss)}x`);
}

if (process.argv[2] === '--worker') {
  worker(JSON.parse(process.argv[3])).catch((error) => {
    console.error(error);
    process.exit(1);
  });
} else {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
