#!/usr/bin/env node
// easyinv's command line: invert an image, reconstruct from saved noise, or run the demo on the bundled model.
import * as fs from 'fs';
import * as path from 'path';
import { parseArgs } from 'util';

import { bench, benchTable } from './compare/bench';
import { compare, mergeRuns, type Dtype } from './compare/run';
import { summaryMarkdown } from './compare/summary';
import { quantize, readImage, writeGrid, writeImage } from './image';
import { invert, methodNames, reconstruct, type InvertOptions, type MethodName, type Progress } from './inversion';
import { loadLatents, saveLatents } from './latent-file';
import { psnr, ssim } from './metrics';
import { loadModel, type Model } from './model';
import type { Tensor } from './native';

const root = path.join(__dirname, '..');
const defaults = {
  model: path.join(root, 'weights', 'test-sd1'),
  image: path.join(root, 'weights', 'photos', 'astronaut.png'),
};

const usage = `easyinv: invert real images into diffusion noise

  easyinv demo        [--model DIR] [--image FILE] [--steps 50] [--out DIR]
      every method on the bundled small model and photo: a table of PSNR, SSIM and time, and a side-by-side PNG
  easyinv invert      --model DIR --image FILE --out NOISE.safetensors [--method easyinv] [method options]
      an image to its noise z_T, saved with its settings
  easyinv reconstruct --model DIR --latent NOISE.safetensors --out IMAGE.png
      DDIM sampling from saved noise back to an image, with the settings saved beside it
  easyinv compare     --model DIR[,DIR] --images DIR --out DIR [--methods ddim,easyinv,renoise,fixed-point]
                      [--dtype float16,float32] [--limit N] [--resume] [--shard K/N] [--lpips NET.pt]
      every method on every image: results.jsonl, summary.md/json (the paper's Tables 1 and 2), grids/, report.html
  easyinv merge       --out DIR RUN_DIR...
      joins the results of several runs (shards) into one summary
  easyinv bench       --model DIR[,DIR] [--dtype float32] [--methods ...] [--steps 50] [--repeats 5] [--batches 1,4,16]
      seconds per inversion, UNet calls, peak memory, images per second, against the bare UNet and a PyTorch loop

Options: --device cpu|cuda[:i]  --steps N  --prompt TEXT  --negative-prompt TEXT  --guidance W  --device cpu|cuda[:i]
         --dtype float32|float16  --fit fill|cover  --json (machine-readable output, no progress bars)
Method options: --method ${methodNames.join('|')}  --eta E  --window START,END  --iterations K  --seed S`;

const options = {
  model: { type: 'string' },
  image: { type: 'string' },
  latent: { type: 'string' },
  out: { type: 'string' },
  method: { type: 'string' },
  steps: { type: 'string' },
  prompt: { type: 'string' },
  'negative-prompt': { type: 'string' },
  guidance: { type: 'string' },
  eta: { type: 'string' },
  window: { type: 'string' },
  iterations: { type: 'string' },
  seed: { type: 'string' },
  device: { type: 'string' },
  dtype: { type: 'string' },
  fit: { type: 'string' },
  images: { type: 'string' },
  methods: { type: 'string' },
  limit: { type: 'string' },
  resume: { type: 'boolean' },
  shard: { type: 'string' },
  lpips: { type: 'string' },
  repeats: { type: 'string' },
  batches: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const;

type Flags = ReturnType<typeof parseArgs<{ options: typeof options; allowPositionals: true }>>['values'];

class UsageError extends Error {}

function number(flags: Flags, name: 'steps' | 'guidance' | 'eta' | 'iterations' | 'seed' | 'limit' | 'repeats'): number | undefined {
  const text = flags[name];
  if (text === undefined) return undefined;
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value)) throw new UsageError(`--${name} must be a number, not ${JSON.stringify(text)}`);
  return value;
}

function required(flags: Flags, name: 'model' | 'image' | 'images' | 'latent' | 'out'): string {
  const value = flags[name];
  if (value === undefined) throw new UsageError(`--${name} is required`);
  return value;
}

function inversionOptions(flags: Flags): InvertOptions {
  const window = flags.window?.split(',').map(Number) as [number, number] | undefined;
  if (window && (window.length !== 2 || window.some(Number.isNaN))) throw new UsageError('--window must be START,END');
  return {
    method: flags.method as MethodName | undefined,
    steps: number(flags, 'steps'),
    prompt: flags.prompt,
    negativePrompt: flags['negative-prompt'],
    guidance: number(flags, 'guidance'),
    eta: number(flags, 'eta'),
    window,
    iterations: number(flags, 'iterations'),
    seed: number(flags, 'seed'),
  };
}

function list<T extends string>(flags: Flags, name: 'methods' | 'dtype' | 'model', allowed: readonly string[] | null, fallback: T[]): T[] {
  const text = flags[name];
  if (text === undefined) return fallback;
  const items = text.split(',').map((item) => item.trim()).filter((item) => item !== '');
  const unknown = allowed ? items.filter((item) => !allowed.includes(item)) : [];
  if (items.length === 0 || unknown.length > 0) {
    throw new UsageError(`--${name} takes a comma-separated list${allowed ? ` of ${allowed.join(', ')}` : ''}, not ${JSON.stringify(text)}`);
  }
  return items as T[];
}

function shard(flags: Flags): { index: number; count: number } | undefined {
  if (flags.shard === undefined) return undefined;
  const match = /^(\d+)\/(\d+)$/.exec(flags.shard);
  const [index, count] = match ? [Number(match[1]), Number(match[2])] : [NaN, NaN];
  if (!(count >= 1 && index >= 0 && index < count)) throw new UsageError(`--shard must be K/N with 0 <= K < N, not ${JSON.stringify(flags.shard)}`);
  return { index, count };
}

/** A progress line with an ETA for long runs, on a terminal only. */
function etaLine(flags: Flags): ((done: number, total: number, item: string) => void) | undefined {
  if (flags.json || !process.stderr.isTTY) return undefined;
  const started = Date.now();
  let first: number | undefined;
  return (done, total, item) => {
    first ??= done - 1;
    const rate = (Date.now() - started) / 1000 / Math.max(1, done - first);
    const eta = Math.round(rate * (total - done));
    process.stderr.write(`\r${done}/${total} ${item.slice(0, 40).padEnd(40)} ETA ${Math.floor(eta / 60)}m${String(eta % 60).padStart(2, '0')}s`);
    if (done === total) process.stderr.write('\n');
  };
}

async function compareCommand(flags: Flags): Promise<void> {
  const out = required(flags, 'out');
  const summary = await compare({
    models: list(flags, 'model', null, []).length > 0 ? list(flags, 'model', null, []) : [required(flags, 'model')],
    images: required(flags, 'images'),
    out,
    methods: list<MethodName>(flags, 'methods', methodNames, ['ddim', 'easyinv', 'renoise', 'fixed-point']),
    dtypes: list<Dtype>(flags, 'dtype', ['float32', 'float16'], ['float32']),
    device: flags.device,
    steps: number(flags, 'steps'),
    prompt: flags.prompt,
    guidance: number(flags, 'guidance'),
    methodOptions: inversionOptions(flags),
    limit: number(flags, 'limit'),
    shard: shard(flags),
    resume: flags.resume,
    lpipsNetwork: flags.lpips,
    onItem: etaLine(flags),
  });
  report(flags, summary, `${summaryMarkdown(summary)}\nwrote ${out}/results.jsonl, summary.md, summary.json, grids/, report.html`);
}

async function mergeCommand(flags: Flags, runs: string[]): Promise<void> {
  const out = required(flags, 'out');
  const summary = mergeRuns(out, runs);
  report(flags, summary, `${summaryMarkdown(summary)}\nmerged ${runs.length} runs into ${out}`);
}

async function benchCommand(flags: Flags): Promise<void> {
  const batches = flags.batches === undefined ? [1, 4, 16] : flags.batches.split(',').map(Number);
  if (batches.some((b) => !Number.isInteger(b) || b < 1)) throw new UsageError('--batches takes positive integers, e.g. 1,4,16');
  const { rows, python } = await bench({
    models: list(flags, 'model', null, []).length > 0 ? list(flags, 'model', null, []) : [required(flags, 'model')],
    dtypes: list<Dtype>(flags, 'dtype', ['float32', 'float16'], ['float32']),
    methods: list<MethodName>(flags, 'methods', methodNames, ['ddim', 'easyinv', 'renoise', 'fixed-point']),
    device: flags.device,
    steps: number(flags, 'steps'),
    repeats: number(flags, 'repeats'),
    batches,
  }, flags.json || !process.stderr.isTTY ? undefined : (row) => process.stderr.write(`${row.method} ${row.dtype}: ${row.seconds.toFixed(4)} s\n`));
  report(flags, { rows, python }, `${benchTable(rows, batches)}\n\nPython loop: ${python ?? 'skipped (no python3 with torch)'}`);
}

function openModel(flags: Flags, dir: string): Promise<Model> {
  const dtype = flags.dtype;
  if (dtype !== undefined && dtype !== 'float32' && dtype !== 'float16') throw new UsageError('--dtype must be float32 or float16');
  return loadModel(dir, { device: flags.device, dtype });
}

/** A progress bar on a terminal; nothing when the output is not one, or with --json. */
function progressBar(flags: Flags, label: string): ((progress: Progress) => void) | undefined {
  if (flags.json || !process.stderr.isTTY) return undefined;
  return ({ step, steps, seconds }) => {
    const width = 30;
    const done = Math.round((step / steps) * width);
    process.stderr.write(`\r${label.padEnd(24)} ${'#'.repeat(done)}${'.'.repeat(width - done)} ${step}/${steps} ${seconds.toFixed(1)}s`);
    if (step === steps) process.stderr.write('\n');
  };
}

async function invertCommand(flags: Flags): Promise<void> {
  const out = required(flags, 'out');
  const model = await openModel(flags, required(flags, 'model'));
  const image = required(flags, 'image');
  const z0 = await model.encodeImage(image, { fit: flags.fit as 'fill' | 'cover' | undefined });
  const settings = inversionOptions(flags);
  const result = await invert(model, z0, { ...settings, onProgress: progressBar(flags, `invert ${settings.method ?? 'easyinv'}`) });
  const tensors: Record<string, Tensor> = { latent: result.latent };
  result.offsets?.forEach((offset, i) => (tensors[`offset.${i}`] = offset));
  const metadata = {
    format: 'easyinv-latent/1',
    model: model.manifest.name,
    family: model.family,
    image: path.resolve(image),
    method: result.method,
    steps: String(result.steps),
    prompt: settings.prompt ?? '',
    negativePrompt: settings.negativePrompt ?? '',
    guidance: String(settings.guidance ?? 1),
    options: JSON.stringify({ eta: settings.eta, window: settings.window, iterations: settings.iterations, seed: settings.seed }),
    unetCalls: String(result.unetCalls),
    seconds: result.seconds.toFixed(4),
  };
  await saveLatents(out, tensors, metadata);
  report(flags, { out, ...metadata, shape: result.latent.shape }, `wrote ${out}: z_T ${JSON.stringify(result.latent.shape)}, ` +
    `${result.method}, ${result.steps} steps, ${result.unetCalls} UNet calls, ${result.seconds.toFixed(2)} s`);
}

async function reconstructCommand(flags: Flags): Promise<void> {
  const out = required(flags, 'out');
  const model = await openModel(flags, required(flags, 'model'));
  const { tensors, metadata } = loadLatents(required(flags, 'latent'), model.device);
  if (!tensors.latent) throw new UsageError(`${flags.latent} holds no tensor named latent`);
  const offsets = Object.keys(tensors).filter((name) => name.startsWith('offset.'))
    .sort((a, b) => Number(a.slice(7)) - Number(b.slice(7))).map((name) => tensors[name]);
  const settings = inversionOptions(flags);
  const steps = settings.steps ?? Number(metadata.steps ?? 50);
  const latent = await reconstruct(model, tensors.latent, {
    steps,
    prompt: settings.prompt ?? metadata.prompt ?? '',
    negativePrompt: settings.negativePrompt ?? metadata.negativePrompt ?? '',
    guidance: settings.guidance ?? Number(metadata.guidance ?? 1),
    offsets: offsets.length > 0 ? offsets : undefined,
    onProgress: progressBar(flags, 'reconstruct'),
  });
  await writeImage(await model.decode(latent), out);
  report(flags, { out, steps }, `wrote ${out}`);
}

interface DemoRow {
  method: MethodName;
  steps: number;
  psnr: number;
  ssim: number;
  unetCalls: number;
  invertSeconds: number;
}

async function demoCommand(flags: Flags): Promise<void> {
  const modelDir = flags.model ?? defaults.model;
  const imageFile = flags.image ?? defaults.image;
  const outDir = flags.out ?? 'easyinv-demo';
  const steps = number(flags, 'steps') ?? 50;
  const model = await openModel(flags, modelDir);
  const reference = await readImage(imageFile, { size: model.resolution, device: model.device }); // 8-bit already
  const scaled = await reference.affine(2, -1);
  const z0 = await model.encodeImage(scaled);
  scaled.dispose();
  const tiles = [{ image: reference, label: 'input' }];
  const rows: DemoRow[] = [];
  for (const method of methodNames) {
    // fixed-point iteration is compared at N = 20, as its authors recommend
    const n = method === 'fixed-point' ? Math.min(steps, 20) : steps;
    const result = await invert(model, z0, { method, steps: n, onProgress: progressBar(flags, `invert ${method}`) });
    const latent = await reconstruct(model, result.latent, { steps: n, offsets: result.offsets, onProgress: progressBar(flags, `reconstruct ${method}`) });
    const decoded = await model.decode(latent);
    const image = await quantize(decoded);
    const [p] = await psnr(image, reference);
    const [s] = await ssim(image, reference);
    rows.push({ method, steps: n, psnr: p, ssim: s, unetCalls: result.unetCalls, invertSeconds: result.seconds });
    tiles.push({ image, label: `${method} ${p.toFixed(2)} dB` });
    [result, latent, decoded].forEach((t) => t.dispose());
  }
  fs.mkdirSync(outDir, { recursive: true });
  const picture = path.join(outDir, 'demo.png');
  await writeGrid(tiles, picture);
  const table = [
    `easyinv demo: ${model.manifest.name} (${model.family}, ${model.device}, ${model.dtype}) on ${path.basename(imageFile)}`,
    '',
    '| method | steps | PSNR (dB) | SSIM | UNet calls | inversion (s) |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.method} | ${r.steps} | ${r.psnr.toFixed(3)} | ${r.ssim.toFixed(4)} | ${r.unetCalls} | ${r.invertSeconds.toFixed(3)} |`),
    '',
    `side by side: ${picture}`,
  ].join('\n');
  report(flags, { model: model.manifest.name, image: imageFile, picture, rows }, table);
}

function report(flags: Flags, json: object, text: string): void {
  console.log(flags.json ? JSON.stringify(json) : text);
}

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    console.error(`easyinv: ${(error as Error).message}\n\n${usage}`);
    return 2;
  }
  const { values: flags, positionals } = parsed;
  if (flags.version) {
    console.log(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version);
    return 0;
  }
  const command = positionals[0];
  const commands: Record<string, (flags: Flags) => Promise<void>> = {
    demo: demoCommand,
    invert: invertCommand,
    reconstruct: reconstructCommand,
    compare: compareCommand,
    merge: (values) => mergeCommand(values, positionals.slice(1)),
    bench: benchCommand,
  };
  if (flags.help || command === undefined) {
    console.log(usage);
    return command === undefined && !flags.help ? 2 : 0;
  }
  if (!commands[command]) {
    console.error(`easyinv: unknown command ${JSON.stringify(command)}\n\n${usage}`);
    return 2;
  }
  try {
    await commands[command](flags);
    return 0;
  } catch (error) {
    const message = (error as Error).message;
    console.error(message.startsWith('easyinv') ? message : `easyinv: ${message}`);
    return error instanceof UsageError ? 2 : 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
