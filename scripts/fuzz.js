#!/usr/bin/env node
// Seeded fuzzing of the readers of untrusted files: the .safetensors latent reader (loadLatents) and a bundle's
// manifest check (readManifest, then the schedule made from it). Every input must give a result or an easyinv error
// naming the problem; any other exception, a leaked tensor, a case that takes seconds, or a crash of the process
// fails, printed with the seed and case that reproduce it.
//
//   node scripts/fuzz.js [--cases 10000] [--seed 1] [--target all|safetensors|manifest] [--case K]
const fs = require('fs');
const os = require('os');
const path = require('path');
const { parseArgs } = require('util');

const easyinv = require('../dist');

const { values: flags } = parseArgs({
  options: {
    cases: { type: 'string', default: '10000' },
    seed: { type: 'string', default: '1' },
    target: { type: 'string', default: 'all' },
    case: { type: 'string' },
  },
});
const seed = Number(flags.seed);
const slowMs = 2000;

/** mulberry32: a small, fast, seedable generator; one per case, so any case reruns alone. */
function generator(caseSeed) {
  let state = caseSeed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n) => Math.floor(next() * n);
  const pick = (items) => structuredClone(items[int(items.length)]);  // a copy: mutations must not leak into later cases
  return { next, int, pick };
}

const hostile = [-1, 0, 1, 3, 1.5, -0.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 62, 2 ** 64, 1e308, -1e308, '1', '', 'F32', 'x'.repeat(300),
  null, true, false, [], {}, [1, 2, 3], [[1]], ['a'], [0, -4], [4, 0], [0, 2 ** 62], { a: { b: { c: [] } } }];

function randomJson(rng, depth = 0) {
  switch (rng.int(depth > 2 ? 4 : 6)) {
    case 0: return rng.pick(hostile);
    case 1: return rng.next() * 2 ** rng.int(80) * (rng.next() < 0.3 ? -1 : 1);
    case 2: return String.fromCharCode(...Array.from({ length: rng.int(12) }, () => rng.int(0x3000)));
    case 3: return rng.int(3) === 0 ? null : rng.next() < 0.5;
    case 4: return Array.from({ length: rng.int(4) }, () => randomJson(rng, depth + 1));
    default: return Object.fromEntries(Array.from({ length: rng.int(4) }, () => [rng.pick(['a', 'shape', 'dtype', '__metadata__', 'data_offsets', 'x']), randomJson(rng, depth + 1)]));
  }
}

/** Replaces, deletes or adds a field at a random depth of `value` (a plain JSON tree), in place. */
function mutateTree(rng, value) {
  let node = value;
  for (let depth = 0; depth < 3; depth++) {
    const keys = node !== null && typeof node === 'object' ? Object.keys(node) : [];
    if (keys.length === 0) break;
    const key = rng.pick(keys);
    const child = node[key];
    if (child === null || typeof child !== 'object' || rng.next() < 0.35) {
      const choice = rng.int(4);
      if (choice === 0 && !Array.isArray(node)) delete node[key];
      else if (choice === 1) node[`${key}_${rng.int(9)}`] = randomJson(rng);
      else node[key] = rng.next() < 0.7 ? rng.pick(hostile) : randomJson(rng);
      return;
    }
    node = child;
  }
}

// ---- .safetensors ----

/** A valid file, written from the format's description: tensors in random order, each entry's offsets relative to
 * the data after the header. */
function validSafetensors(rng) {
  const names = ['latent', 'z', 'offsets.0', 'x y'].slice(0, rng.int(4)).sort(() => rng.next() - 0.5);
  const header = {};
  const chunks = [];
  const tensors = {};
  let offset = 0;
  for (const name of names) {
    const shape = Array.from({ length: rng.int(5) }, () => rng.int(4));
    const count = shape.reduce((a, b) => a * b, 1);
    const values = Float32Array.from({ length: count }, () => (rng.next() - 0.5) * 2 ** rng.int(20));
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + 4 * count] };
    chunks.push(Buffer.from(values.buffer));
    tensors[name] = { shape, values };
    offset += 4 * count;
  }
  if (rng.next() < 0.5) header.__metadata__ = { method: 'easyinv', steps: String(rng.int(100)) };
  return { header, data: Buffer.concat(chunks), tensors };
}

function safetensorsBytes(header, data, pad = 0) {
  const json = Buffer.from(JSON.stringify(header) + ' '.repeat(pad));
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([size, json, data]);
}

function mutateBytes(rng, bytes) {
  let out = Buffer.from(bytes);
  for (let n = 1 + rng.int(4); n > 0; n--) {
    const at = rng.int(Math.max(out.length, 1));
    switch (rng.int(5)) {
      case 0: if (out.length) out[at] ^= 1 << rng.int(8); break;
      case 1: if (out.length) out[at] = rng.int(256); break;
      case 2: out = out.subarray(0, at); break;
      case 3: out = Buffer.concat([out.subarray(0, at), Buffer.from(Array.from({ length: 1 + rng.int(16) }, () => rng.int(256))), out.subarray(at)]); break;
      default: if (out.length >= 8) out.writeBigUInt64LE(rng.next() < 0.5 ? BigInt(rng.int(400)) : BigInt.asUintN(64, BigInt(Math.floor(rng.next() * 2 ** 53)) << BigInt(rng.int(12))), 0);
    }
  }
  return out;
}

function safetensorsCase(rng, file) {
  const kind = rng.pick(['random', 'valid', 'bytes', 'header', 'header', 'header']);
  const valid = validSafetensors(rng);
  let bytes;
  if (kind === 'random') bytes = Buffer.from(Array.from({ length: rng.int(200) }, () => rng.int(256)));
  else if (kind === 'valid') bytes = safetensorsBytes(valid.header, valid.data, rng.int(8));
  else if (kind === 'bytes') bytes = mutateBytes(rng, safetensorsBytes(valid.header, valid.data));
  else {
    const header = JSON.parse(JSON.stringify(valid.header));
    for (let n = 1 + rng.int(3); n > 0; n--) mutateTree(rng, rng.next() < 0.1 ? { root: header } : header);
    const data = rng.next() < 0.8 ? valid.data : mutateBytes(rng, valid.data);
    bytes = safetensorsBytes(header, data);
  }
  fs.writeFileSync(file, bytes);
  let result;
  try {
    result = easyinv.loadLatents(file);
  } catch (error) {
    if (!(error instanceof Error) || !error.message.startsWith(`easyinv: cannot read latents from ${file}: `)) {
      throw new Error(`${kind} file: an error that does not name the file and problem: ${error && error.stack}`);
    }
    return `${kind}: rejected`;
  }
  const problems = [];
  for (const [name, tensor] of Object.entries(result.tensors)) {
    if (kind === 'valid') {
      const expected = valid.tensors[name];
      if (!expected || JSON.stringify(tensor.shape) !== JSON.stringify(expected.shape)) problems.push(`tensor ${name}: shape ${tensor.shape}`);
    }
    tensor.dispose();
  }
  if (kind === 'valid' && Object.keys(result.tensors).length !== Object.keys(valid.tensors).length) problems.push('tensors missing');
  if (problems.length) throw new Error(`valid file read wrongly: ${problems.join('; ')}`);
  return `${kind}: read`;
}

/** For valid files also the values, which need the device queue: checked for a sample of cases. */
async function safetensorsValuesCheck(rng, file) {
  const valid = validSafetensors(rng);
  fs.writeFileSync(file, safetensorsBytes(valid.header, valid.data));
  const { tensors } = easyinv.loadLatents(file);
  for (const [name, tensor] of Object.entries(tensors)) {
    const values = await tensor.toArray();
    tensor.dispose();
    if (Buffer.compare(Buffer.from(values.buffer, values.byteOffset, values.byteLength), Buffer.from(valid.tensors[name].values.buffer)) !== 0) {
      throw new Error(`valid file: tensor ${name}'s values differ`);
    }
  }
}

// ---- manifests ----

const bases = ['test-sd1', 'test-sdxl', 'diffusers-sd1', 'diffusers-sdxl']
  .map((name) => JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'weights', name, 'manifest.json'), 'utf8')));

function manifestCase(rng, dir) {
  const base = JSON.parse(JSON.stringify(rng.pick(bases)));
  const kind = rng.pick(['random', 'text', 'fields', 'fields', 'fields', 'valid']);
  let text;
  if (kind === 'random') text = JSON.stringify(randomJson(rng));
  else if (kind === 'valid') text = JSON.stringify(base);
  else if (kind === 'text') text = mutateBytes(rng, Buffer.from(JSON.stringify(base))).toString('utf8');
  else {
    for (let n = 1 + rng.int(3); n > 0; n--) mutateTree(rng, base);
    text = JSON.stringify(base);
  }
  fs.writeFileSync(path.join(dir, 'manifest.json'), text);
  let manifest;
  try {
    manifest = easyinv.readManifest(dir);
  } catch (error) {
    if (!(error instanceof Error) || !error.message.startsWith(`easyinv: the bundle at ${dir} `)) {
      throw new Error(`${kind} manifest: an error that does not name the bundle and problem: ${error && error.stack}\n${text}`);
    }
    return `${kind}: rejected`;
  }
  // An accepted manifest must make working schedules: finite weights or a clear RangeError for too many steps.
  const count = manifest.scheduler.num_train_timesteps;
  for (const steps of [1, 7, 50, count, rng.int(count) + 1]) {
    let schedule;
    try {
      schedule = easyinv.makeSchedule(manifest.scheduler, steps);
    } catch (error) {
      if (error instanceof RangeError && error.message.startsWith('easyinv: ')) continue;
      throw new Error(`accepted manifest: makeSchedule(${steps}) threw ${error && error.stack}\n${text}`);
    }
    for (const step of [...schedule.inversion, ...schedule.sampling]) {
      if (!(step.from > 0 && step.from <= 1 && step.to > 0 && step.to <= 1)) {
        throw new Error(`accepted manifest: ${steps} steps give alpha_bar ${step.from} -> ${step.to} at timestep ${step.timestep}\n${text}`);
      }
    }
  }
  return `${kind}: accepted`;
}

function manifestFolder(root) {
  const dir = path.join(root, 'bundle');
  fs.mkdirSync(dir);
  fs.mkdirSync(path.join(root, 'clip'));
  const names = new Set(bases.flatMap((m) => Object.values(m.files)));
  for (const name of names) fs.writeFileSync(path.join(dir, name), '');
  return dir;
}

async function main() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-fuzz-'));
  const targets = { safetensors: safetensorsCase, manifest: manifestCase };
  const chosen = flags.target === 'all' ? Object.keys(targets) : [flags.target];
  if (!chosen.every((t) => t in targets)) throw new Error(`unknown --target ${flags.target}: use all, safetensors or manifest`);
  const cases = flags.case !== undefined ? [Number(flags.case)] : Array.from({ length: Number(flags.cases) }, (_, i) => i);
  const where = { safetensors: path.join(root, 'latents.safetensors'), manifest: manifestFolder(root) };
  const report = {};
  let failures = 0;
  try {
    for (const target of chosen) {
      const outcomes = {};
      for (const index of cases) {
        const rng = generator(seed * 1_000_003 + index * 7919 + (target === 'manifest' ? 1 : 0));
        const started = Date.now();
        try {
          const outcome = targets[target](rng, where[target]);
          if (target === 'safetensors' && index % 50 === 0) await safetensorsValuesCheck(rng, where[target]);
          if (easyinv.liveTensors() !== 0) throw new Error(`${easyinv.liveTensors()} tensors left alive`);
          if (Date.now() - started > slowMs) throw new Error(`took ${Date.now() - started} ms`);
          outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
        } catch (error) {
          failures++;
          console.error(`FAIL ${target} --seed ${seed} --case ${index}: ${error.message}`);
        }
      }
      report[target] = { cases: cases.length, outcomes };
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  console.log(JSON.stringify({ seed, failures, ...report }, null, 1));
  process.exitCode = failures ? 1 : 0;
}

main();
