// What the commands share: the flags, their parsing into options, opening a model, progress and output.
import * as fs from 'fs';
import * as path from 'path';
import { parseArgs } from 'util';

import type { MethodName, Progress, SamplingOptions } from '../inversion';
import type { ModelDtype } from '../manifest';
import { loadModel, type Model, type ModelOptions } from '../model';
import { addon, setThreads } from '../native';

export const flagSpec = {
  model: { type: 'string' },
  image: { type: 'string' },
  latent: { type: 'string' },
  out: { type: 'string' },
  method: { type: 'string' },
  inversion: { type: 'string' },
  inversions: { type: 'string' },
  'source-prompt': { type: 'string' },
  'start-step': { type: 'string' },
  'start-layer': { type: 'string' },
  steps: { type: 'string' },
  prompt: { type: 'string' },
  'negative-prompt': { type: 'string' },
  guidance: { type: 'string' },
  eta: { type: 'string' },
  window: { type: 'string' },
  variant: { type: 'string' },
  timesteps: { type: 'string' },
  'steps-offset': { type: 'string' },
  'size-condition': { type: 'string' },
  'notebook-settings': { type: 'boolean' },
  refinements: { type: 'string' },
  iterations: { type: 'string' },
  seed: { type: 'string' },
  device: { type: 'string' },
  dtype: { type: 'string' },
  threads: { type: 'string' },
  fit: { type: 'string' },
  images: { type: 'string' },
  methods: { type: 'string' },
  limit: { type: 'string' },
  resume: { type: 'boolean' },
  shard: { type: 'string' },
  lpips: { type: 'string' },
  repeats: { type: 'string' },
  batches: { type: 'string' },
  'channels-last': { type: 'boolean' },
  'cuda-graphs': { type: 'boolean' },
  tf32: { type: 'boolean' },
  'cudnn-benchmark': { type: 'boolean' },
  'skip-file-check': { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const;

export type Flags = ReturnType<typeof parseArgs<{ options: typeof flagSpec; allowPositionals: true }>>['values'];

/** A mistake in the command line: exit code 2, and the usage. */
export class UsageError extends Error {}

/**
 * The message of an error, told in this command line's terms: the library names an option as the API writes it
 * (errors.ts optionError), and where the command line gave that option as a flag, the flag takes its place
 * (stepsOffset: --steps-offset). A value the command line did not give (a latent file's setting) keeps the API name.
 */
export function messageOf(error: Error, flags: Flags): string {
  const { option } = error as { option?: unknown };
  const flag = typeof option === 'string' ? option.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`) : '';
  const given = (flags as Record<string, unknown>)[flag] !== undefined;
  const message = given ? error.message.replace(`easyinv: ${option}`, `easyinv: --${flag}`) : error.message;
  return message.startsWith('easyinv') ? message : `easyinv: ${message}`;
}

type NumberFlag = 'steps' | 'guidance' | 'eta' | 'refinements' | 'iterations' | 'seed' | 'limit' | 'repeats' | 'steps-offset' | 'size-condition'
  | 'start-step' | 'start-layer' | 'threads';

export function number(flags: Flags, name: NumberFlag): number | undefined {
  const text = flags[name];
  if (text === undefined) return undefined;
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value)) throw new UsageError(`--${name} must be a number, not ${JSON.stringify(text)}`);
  return value;
}

export function required(flags: Flags, name: 'model' | 'image' | 'images' | 'latent' | 'out'): string {
  const value = flags[name];
  if (value === undefined) throw new UsageError(`--${name} is required`);
  return value;
}

/** The sampling options and every method option given on the command line (absent ones left out). */
export function inversionFlags(flags: Flags): Pick<SamplingOptions, 'steps' | 'prompt' | 'negativePrompt' | 'guidance' | 'stepsOffset' | 'timesteps' | 'sizeCondition'> &
  { method?: MethodName; methodOptions: Record<string, unknown> } {
  const window = flags.window?.split(',').map(Number);
  if (window && (window.length !== 2 || window.some(Number.isNaN))) throw new UsageError('--window must be START,END');
  const methodOptions = Object.fromEntries(Object.entries({
    eta: number(flags, 'eta'), window, variant: flags.variant, refinements: number(flags, 'refinements'), iterations: number(flags, 'iterations'), seed: number(flags, 'seed'),
  }).filter(([, value]) => value !== undefined));
  return {
    method: flags.method as MethodName | undefined,
    steps: number(flags, 'steps'),
    prompt: flags.prompt,
    negativePrompt: flags['negative-prompt'],
    guidance: number(flags, 'guidance'),
    stepsOffset: number(flags, 'steps-offset'),
    timesteps: flags.timesteps as SamplingOptions['timesteps'],
    sizeCondition: number(flags, 'size-condition'),
    methodOptions,
  };
}

export function list<T extends string>(flags: Flags, name: 'methods' | 'inversions' | 'dtype' | 'model', allowed: readonly string[] | null, fallback: T[]): T[] {
  const text = flags[name];
  if (text === undefined) return fallback;
  const items = text.split(',').map((item) => item.trim()).filter((item) => item !== '');
  const unknown = allowed ? items.filter((item) => !allowed.includes(item)) : [];
  if (items.length === 0 || unknown.length > 0) {
    throw new UsageError(`--${name} takes a comma-separated list${allowed ? ` of ${allowed.join(', ')}` : ''}, not ${JSON.stringify(text)}`);
  }
  return items as T[];
}

export const models = (flags: Flags): string[] => {
  const dirs = list(flags, 'model', null, []);
  return dirs.length > 0 ? dirs : [required(flags, 'model')];
};

export const dtypes = (flags: Flags): ModelDtype[] => list<ModelDtype>(flags, 'dtype', ['float32', 'float16'], ['float32']);

/** An output file's folder must exist before any work is done for it. */
export function checkOutFolder(out: string): void {
  const folder = path.dirname(path.resolve(out));
  if (!fs.existsSync(folder) || !fs.statSync(folder).isDirectory()) throw new UsageError(`--out ${out}: the folder ${folder} does not exist`);
}

/**
 * The model options of the command line; --tf32 and --cudnn-benchmark set LibTorch's process-wide CUDA switches
 * (given flags only: the rest keep LibTorch's defaults), --threads the CPU threads of every device thread. A command
 * is a process of its own, so it also keeps freed memory for reuse (1.3-1.5x faster CPU forwards of a full-size UNet).
 */
export function loadingOptions(flags: Flags): Pick<ModelOptions, 'channelsLast' | 'cudaGraphs' | 'verifyFiles'> {
  addon.retainFreedMemory();
  const threads = number(flags, 'threads');
  if (threads !== undefined) setThreads(threads);
  const switches = { matmulTf32: flags.tf32, convolutionTf32: flags.tf32, cudnnBenchmark: flags['cudnn-benchmark'] };
  addon.cudaSettings(Object.fromEntries(Object.entries(switches).filter(([, on]) => on !== undefined)));
  return { channelsLast: flags['channels-last'], cudaGraphs: flags['cuda-graphs'], verifyFiles: !flags['skip-file-check'] };
}

export async function openModel(flags: Flags, dir: string): Promise<Model> {
  const dtype = flags.dtype;
  if (dtype !== undefined && dtype !== 'float32' && dtype !== 'float16') throw new UsageError('--dtype must be float32 or float16');
  const options: ModelOptions = { device: flags.device, dtype, ...loadingOptions(flags) };
  // Loading a full-size bundle takes seconds: say so from the first one, on a terminal.
  const terminal = !flags.json && process.stderr.isTTY;
  if (terminal) process.stderr.write(`loading ${dir} ...`);
  try {
    return await loadModel(dir, options);
  } finally {
    if (terminal) process.stderr.write('\r\x1b[K');
  }
}

/** A progress bar on a terminal; nothing when the output is not one, or with --json. */
export function progressBar(flags: Flags, label: string): ((progress: Progress) => void) | undefined {
  if (flags.json || !process.stderr.isTTY) return undefined;
  return ({ step, steps, seconds }) => {
    const width = 30;
    const done = Math.round((step / steps) * width);
    process.stderr.write(`\r${label.padEnd(24)} ${'#'.repeat(done)}${'.'.repeat(width - done)} ${step}/${steps} ${seconds.toFixed(1)}s`);
    if (step === steps) process.stderr.write('\n');
  };
}

/** A progress line with an ETA for long runs, on a terminal only. */
export function etaLine(flags: Flags): ((done: number, total: number, item: string) => void) | undefined {
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

/** The command's result: JSON with --json, else the text. */
export function report(flags: Flags, json: object, text: string): void {
  console.log(flags.json ? JSON.stringify(json) : text);
}
