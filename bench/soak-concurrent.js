#!/usr/bin/env node
// Concurrency soak: for a set time, random concurrent invert, reconstruct and encodeImage calls over two models loaded
// at once, with random aborts, models disposed (and reloaded) while their calls are in flight, and worker threads that
// load a model and are terminated mid-job. Every result must equal, bit for bit, the same call run alone beforehand;
// an aborted call may only reject with the library's AbortError, a call on a disposed model only with its
// "has been disposed" error. Exits 1 on any other outcome, on RSS growth past the bound after the warm-up, or when
// the live tensors are not back to their starting count once everything settled.
//
//   node --expose-gc bench/soak-concurrent.js [--seconds 600 (or SOAK_SECONDS)] [--warm-up 240] [--rss-bound 10]
//     [--steps 2,3] [--methods ddim,easyinv,...] [--concurrency 4]
'use strict';
const path = require('path');
const { parseArgs } = require('util');
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');

const { invert, liveTensors, loadModel, methodNames, reconstruct } = require('..');

const weights = path.join(__dirname, '..', 'weights');
const photo = path.join(weights, 'photos', 'astronaut.png');
const modelNames = ['test-sd1', 'tiny-sd1-256'];
const prompt = 'a photo of an astronaut';

// The calls' parameters: small enough that every combination's reference is computed alone first.
const methodOptions = [
  { method: 'ddim' }, { method: 'easyinv' }, { method: 'fixed-point' }, { method: 'direct' },
  { method: 'renoise', seed: 0 }, { method: 'renoise', seed: 1 },
];
const guidances = [1, 2.5];
const pick = (items) => items[Math.floor(Math.random() * items.length)];
const key = (...parts) => JSON.stringify(parts);

/** Runs one inversion as a worker thread does it, from the photo: what the main thread compares to its references. */
async function workerJob({ dir, options }) {
  const model = await loadModel(dir);
  const z0 = await model.encodeImage(photo);
  const result = await invert(model, z0, options);
  parentPort.postMessage({ arrays: await read(result) });
}

/** The values of a result (an inversion's latent and offsets, or a tensor), read before it is disposed. */
async function read(result, { dispose = true } = {}) {
  const tensors = [result.latent ?? result, ...(result.offsets ?? [])];
  const arrays = await Promise.all(tensors.map((t) => t.toArray()));
  if (dispose) result.dispose();
  return arrays;
}

const sameBits = (a, b) => a.length === b.length && a.every((array, i) =>
  Buffer.from(array.buffer, array.byteOffset, array.byteLength).equals(Buffer.from(b[i].buffer, b[i].byteOffset, b[i].byteLength)));

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Memory freed once the work has settled (terminated workers' heaps, V8's background sweeping) leaves the process
// over a second or so: read at once, RSS was up to 130 MiB (30%) above the reading 1.5 s later.
async function settledRssMiB() {
  global.gc();
  await sleep(2000);
  global.gc();
  return process.memoryUsage().rss / 2 ** 20;
}

async function main() {
  const { values: flags } = parseArgs({
    options: {
      seconds: { type: 'string', default: process.env.SOAK_SECONDS ?? '600' },
      // Settled RSS, read every minute of a 15-minute run (steps 2/3, every method), rose for about 4 minutes, then
      // moved between 436 and 478 MiB without a trend: at most 5% above its reading at 4 minutes. A 10% bound is
      // twice that, about 45 MiB: over the 6 minutes after the warm-up, with some 120 reloads and 110 workers, it
      // catches a leak of 0.4 MiB per reload or per worker (a model's weights, a worker's heap), not one of a latent
      // per call (live tensors count those).
      'warm-up': { type: 'string', default: '240' },
      'rss-bound': { type: 'string', default: '10' },
      steps: { type: 'string', default: '2,3' },
      methods: { type: 'string', default: methodNames.join(',') },
      concurrency: { type: 'string', default: '4' },
    },
  });
  const seconds = Number(flags.seconds);
  const warmUp = Number(flags['warm-up']);
  if (!(warmUp < seconds)) throw new Error(`--warm-up (${warmUp} s) must be shorter than --seconds (${seconds} s)`);
  const bound = Number(flags['rss-bound']) / 100;
  const stepCounts = flags.steps.split(',').map(Number);
  const invertMethods = methodOptions.filter(({ method }) => flags.methods.split(',').includes(method));
  // Reconstructions start from these methods' references: ddim's latent, direct's latent and offsets.
  const reconstructFrom = ['ddim', 'direct'].filter((method) => flags.methods.split(',').includes(method));
  if (reconstructFrom.length === 0) throw new Error('--methods must include ddim or direct, the latents reconstruct starts from');
  const concurrency = Number(flags.concurrency);
  if (!global.gc) throw new Error('run with node --expose-gc, so that RSS and live tensors are read after a collection');

  // References: every call, one after another, before any concurrency. The inputs they start from stay loaded all along.
  const slots = await Promise.all(modelNames.map(async (name) => ({ name, dir: path.join(weights, name), model: await loadModel(path.join(weights, name)) })));
  const referencesStarted = Date.now();
  const references = new Map();
  const inputs = new Map();
  for (const slot of slots) {
    const z0 = await slot.model.encodeImage(photo);
    inputs.set(key(slot.name, 'z0'), z0);
    references.set(key(slot.name, 'encodeImage'), [await z0.toArray()]);
    for (const steps of stepCounts) {
      for (const guidance of guidances) {
        for (const method of invertMethods) {
          const options = { ...method, steps, prompt, guidance };
          const result = await invert(slot.model, z0, options);
          const keep = reconstructFrom.includes(method.method);
          references.set(key(slot.name, 'invert', options), await read(result, { dispose: !keep }));
          if (keep) {
            const sampling = { steps, prompt, guidance, offsets: result.offsets };
            inputs.set(key(slot.name, 'zT', method.method, steps, guidance), { latent: result.latent, sampling });
            references.set(key(slot.name, 'reconstruct', method.method, steps, guidance),
              await read(await reconstruct(slot.model, result.latent, sampling)));
          }
        }
      }
    }
  }
  const referenceSeconds = (Date.now() - referencesStarted) / 1000;
  const liveStart = liveTensors();
  const rssStart = await settledRssMiB();

  const counts = { invert: 0, reconstruct: 0, encodeImage: 0 };
  const outcomes = { completed: 0, aborted: 0, rejected: 0 };
  const workers = { started: 0, terminated: 0, completed: 0 };
  let disposals = 0;
  const failures = [];
  const disposed = new WeakSet();
  let until;
  const running = () => Date.now() < until;

  async function call() {
    const slot = pick(slots);
    const { model } = slot;
    const kind = pick(['invert', 'invert', 'reconstruct', 'encodeImage']);
    const steps = pick(stepCounts);
    const guidance = pick(guidances);
    const controller = kind === 'encodeImage' ? undefined : new AbortController();
    let what;
    let run;
    if (kind === 'encodeImage') {
      what = key(slot.name, kind);
      run = () => model.encodeImage(photo);
    } else if (kind === 'invert') {
      const options = { ...pick(invertMethods), steps, prompt, guidance };
      what = key(slot.name, kind, options);
      run = () => invert(model, inputs.get(key(slot.name, 'z0')), { ...options, signal: controller.signal });
    } else {
      const method = pick(reconstructFrom);
      what = key(slot.name, kind, method, steps, guidance);
      const { latent, sampling } = inputs.get(key(slot.name, 'zT', method, steps, guidance));
      run = () => reconstruct(model, latent, { ...sampling, signal: controller.signal });
    }
    // A third of the calls are aborted: some before they start, most at a random moment of their run.
    if (controller && Math.random() < 1 / 3) {
      if (Math.random() < 0.2) controller.abort();
      else setTimeout(() => controller.abort(), Math.random() * 300);
    }
    counts[kind]++;
    try {
      const arrays = await read(await run());
      if (sameBits(arrays, references.get(what))) outcomes.completed++;
      else failures.push(`${what}: the result differs from the same call run alone`);
    } catch (error) {
      if (error instanceof DOMException && error.name === 'AbortError' && controller?.signal.aborted && error.message.startsWith('easyinv: ')) outcomes.aborted++;
      else if (disposed.has(model) && /^easyinv: module '.*' has been disposed$/.test(error.message)) outcomes.rejected++;
      else failures.push(`${what}: unexpected error ${error.stack}`);
    }
  }

  async function caller() {
    while (running()) await call();
  }

  // Disposes a model every few seconds, at a random moment of whatever is in flight, and loads it again; calls made
  // meanwhile go to the disposed model.
  async function disposer() {
    while (running()) {
      await sleep(500 + Math.random() * 3000);
      const slot = pick(slots);
      disposed.add(slot.model);
      slot.model.dispose();
      disposals++;
      await sleep(Math.random() * 200);
      slot.model = await loadModel(slot.dir);
    }
  }

  // One worker at a time; three in four are terminated at a random moment of their life (loading the addon, loading
  // the model, encoding, inverting), the rest answer.
  async function workerThreads() {
    while (running()) {
      const slot = pick(slots);
      const options = { ...pick(invertMethods), steps: pick(stepCounts), prompt, guidance: pick(guidances) };
      const reference = key(slot.name, 'invert', options);
      const what = `worker ${reference}`;
      const terminate = Math.random() < 0.75;
      workers.started++;
      await new Promise((resolve) => {
        const worker = new Worker(__filename, { workerData: { dir: slot.dir, options } });
        let answered = false;
        if (terminate) setTimeout(() => void worker.terminate(), Math.random() * 3000);
        worker.on('message', (message) => {
          answered = true;
          if (message.error) failures.push(`${what}: ${message.error}`);
          else if (sameBits(message.arrays, references.get(reference))) workers.completed++;
          else failures.push(`${what}: the result differs from the same call run alone`);
        });
        worker.on('error', (error) => failures.push(`${what}: ${error.stack}`));
        worker.on('exit', () => {
          if (!answered && terminate) workers.terminated++;
          else if (!answered) failures.push(`${what}: exited without an answer`);
          resolve();
        });
      });
    }
  }

  // Runs every lane until `end`, then lets all work settle, so that RSS is read with nothing in flight.
  const soak = (end) => {
    until = end;
    return Promise.all([...Array.from({ length: concurrency }, caller), disposer(), workerThreads()]);
  };
  const started = Date.now();
  await soak(started + warmUp * 1000);
  const rssWarm = await settledRssMiB();
  await soak(started + seconds * 1000);

  // Read before any forced collection: the library frees its tensors itself, also on error and abort, so one left
  // for the garbage collector counts here (unless a collection happened to take it first).
  const liveEnd = liveTensors();
  const duration = (Date.now() - started) / 1000;
  const rssEnd = await settledRssMiB();
  const liveEndCollected = liveTensors();
  const growth = (rssEnd - rssWarm) / rssWarm;
  const mib = (x) => `${x.toFixed(1)} MiB`;
  console.log(`duration ${duration.toFixed(1)} s, models ${modelNames.join(' and ')} on the cpu, ${concurrency} callers, steps ${stepCounts.join('/')}, ` +
    `${references.size} references computed alone first in ${referenceSeconds.toFixed(1)} s`);
  console.log(`calls: invert ${counts.invert}, reconstruct ${counts.reconstruct}, encodeImage ${counts.encodeImage}`);
  console.log(`outcomes: completed ${outcomes.completed}, aborted ${outcomes.aborted}, rejected ${outcomes.rejected} (model disposed, ${disposals} disposals)`);
  console.log(`workers: started ${workers.started}, terminated ${workers.terminated}, completed ${workers.completed}`);
  console.log(`RSS: start ${mib(rssStart)}, after warm-up ${mib(rssWarm)}, end ${mib(rssEnd)}, growth after warm-up ${(growth * 100).toFixed(2)}% (bound ${bound * 100}%)`);
  console.log(`live tensors: start ${liveStart}, end ${liveEnd} (${liveEndCollected} after a collection)`);
  if (growth >= bound) failures.push(`RSS grew by ${(growth * 100).toFixed(2)}% after the warm-up`);
  if (liveEnd !== liveStart) failures.push(`live tensors: ${liveEnd - liveStart} more at the end than at the start`);
  for (const failure of failures.slice(0, 20)) console.log(`FAIL ${failure}`);
  if (failures.length > 20) console.log(`FAIL and ${failures.length - 20} more`);
  process.exit(failures.length === 0 ? 0 : 1);
}

if (isMainThread) {
  main().catch((error) => {
    console.log(`FAIL ${error.stack}`);
    process.exit(1);
  });
} else {
  workerJob(workerData).catch((error) => parentPort.postMessage({ error: error.stack }));
}
