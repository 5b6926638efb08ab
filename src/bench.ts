// `easyinv bench`: seconds per inversion per method and dtype (device synchronised, warm-up excluded), UNet calls,
// peak device memory, images per second at several batch sizes, the bare UNet forwards the loop makes, and the same
// DDIM loop in Python PyTorch over the same TorchScript files as the ratio to beat. At batch 1 every timed thing
// runs once per round, in rounds interleaved (the methods' order rotating), so that a machine's drift falls on all
// alike; each row reports the median and the spread of its rounds.
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'child_process';
import * as path from 'path';
import * as readline from 'readline';

import { bundleFor } from './compare/compare';
import { failure, optionError, throwIfAborted } from './errors';
import { stepsFor } from './evaluation';
import { invert, type MethodName } from './inversion';
import type { ModelDtype } from './manifest';
import { loadModel, type Model, type ModelOptions } from './model';
import { addon, disposeAll, type Tensor } from './native';
import { median } from './statistics';

export interface BenchOptions {
  models: string[];
  dtypes: ModelDtype[];
  methods: MethodName[];
  device?: string;
  steps?: number;
  /** Rounds at batch 1 (each times every method, the bare UNet and Python once). */
  repeats?: number;
  batches?: number[];
  /** The methods timed at the batch sizes above 1 (default: all): full-size models cannot afford every pair. */
  batchMethods?: MethodName[];
  /** Classifier-free guidance weight (1: none; otherwise every UNet call runs on the doubled batch). */
  guidance?: number;
  /** How the models load: channels_last order, CUDA graphs, the files' check (ModelOptions). */
  modelOptions?: Pick<ModelOptions, 'channelsLast' | 'cudaGraphs' | 'verifyFiles'>;
  /** The Python interpreter with torch for the reference loop; undefined: look for python3, then skip; null: skip. */
  python?: string | null;
  /**
   * Asked before each timed run: once it returns true, nothing new starts and bench reports what it measured (a
   * time budget). Rows of methods never timed are left out.
   */
  shouldStop?: () => boolean;
  /** Stops the bench at the next step with an AbortError, everything freed (the CLI's Ctrl-C). */
  signal?: AbortSignal;
}

export interface BenchRow {
  method: MethodName | 'unet-forward';
  dtype: ModelDtype;
  steps: number;
  /** Median seconds of one inversion at batch 1 (for 'unet-forward': of the same number of bare UNet calls). */
  seconds: number;
  /** The fastest and the slowest round. */
  spread: [number, number];
  /** Median seconds per UNet call, in microseconds. */
  microsecondsPerCall: number;
  unetCalls: number;
  peakMemoryBytes: number | null;
  /** Images per second at each batch size. */
  imagesPerSecond: Record<number, number>;
  /** Median seconds of the Python PyTorch DDIM loop at batch 1, for ddim and easyinv (which costs the same). */
  pythonSeconds?: number;
  pythonSpread?: [number, number];
}

const spreadOf = (values: number[]): [number, number] => [Math.min(...values), Math.max(...values)];

async function timeInversion(model: Model, z0: Tensor, method: MethodName, steps: number, guidance: number, signal?: AbortSignal) {
  addon.resetPeakMemory(model.device);
  const result = await invert(model, z0, { method, steps, guidance, signal });
  const timing = { seconds: result.seconds, unetCalls: result.unetCalls, peakMemoryBytes: addon.peakMemory(model.device) };
  result.dispose();
  return timing;
}

/** The UNet calls of a DDIM inversion, made back to back with nothing else: the floor for any inversion loop. */
async function timeBareForwards(model: Model, z0: Tensor, calls: number, guidance: number, signal?: AbortSignal): Promise<number> {
  const condition = await model.condition('', '', z0.shape[0], guidance);
  // on the device before the clock starts, as an inversion's run keeps its timesteps
  const timesteps = Array.from({ length: calls }, (_, i) => model.timesteps(1 + (i * 20) % 1000, z0.shape[0], condition));
  try {
    await addon.synchronize(model.device);
    const started = performance.now();
    for (const [i, t] of timesteps.entries()) {
      throwIfAborted(signal, `bench aborted after ${i} of ${calls} bare UNet calls`);
      (await model.denoise(z0, t, condition)).dispose();
    }
    await addon.synchronize(model.device);
    return (performance.now() - started) / 1000;
  } finally {
    disposeAll([...timesteps, { ...condition }]);
  }
}

function findPython(preferred?: string): string | undefined {
  const candidates = preferred ? [preferred] : ['python3', '/usr/bin/python3'];
  return candidates.find((python) => spawnSync(python, ['-c', 'import torch']).status === 0);
}

/**
 * The Python loop as a process that times one inversion each time it is asked, after its own warm-up; on CUDA with
 * our switches (TF32, cuDNN benchmark) and, when our UNet replays CUDA graphs, with torch.cuda graphs too.
 */
async function pythonLoop(python: string, bundle: string, model: Model, steps: number, guidance: number) {
  const script = path.join(__dirname, '..', 'bench', 'python_inversion.py');
  const cuda = model.device.startsWith('cuda');
  const { matmulTf32, convolutionTf32, cudnnBenchmark } = addon.cudaSettings();
  const switches = cuda ? ['--matmul-tf32', matmulTf32, '--convolution-tf32', convolutionTf32, '--cudnn-benchmark', cudnnBenchmark]
    .map((value) => (typeof value === 'boolean' ? String(Number(value)) : value)) : [];
  // In a process group of its own: a Ctrl-C on the terminal stops bench at its next step, which ends the loop by
  // closing its input; the Ctrl-C must not kill the loop mid-timing, which would fail the bench instead.
  const child: ChildProcessWithoutNullStreams = spawn(python, [script, bundle, '--device', cuda ? model.device : 'cpu',
    '--dtype', model.dtype, '--steps', String(steps), '--guidance', String(guidance), '--serve', ...switches,
    ...(model.unet.cudaGraphs ? ['--cuda-graphs'] : [])], { detached: true });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const line = await lines.next();
    if (line.done) throw failure(`the Python loop ended early: ${stderr.trim().split('\n').slice(-3).join(' ')}`);
    return JSON.parse(line.value);
  };
  await next(); // ready: warmed up
  return {
    time: async (): Promise<number> => {
      child.stdin.write('time\n');
      return (await next()).seconds;
    },
    close: () => child.stdin.end(),
  };
}

/** The rows; the Python used (null: none found); why the Python loop failed, if it did (our rows are kept). */
export interface BenchResult {
  rows: BenchRow[];
  python: string | null;
  pythonError?: string;
}

export async function bench(options: BenchOptions, onRow?: (row: BenchRow) => void): Promise<BenchResult> {
  const { steps = 50, repeats = 5, batches = [1, 4, 16], guidance = 1, shouldStop = () => false, signal } = options;
  if (!Number.isInteger(repeats) || repeats < 1) optionError('repeats', `must be an integer >= 1, not ${repeats}`);
  if (!(guidance >= 0 && Number.isFinite(guidance))) optionError('guidance', `must be a finite number >= 0, not ${guidance}`);
  const python = options.python === null ? undefined : findPython(options.python);
  const rows: BenchRow[] = [];
  let pythonError: string | undefined;
  const report = (row: BenchRow) => {
    rows.push(row);
    onRow?.(row);
  };
  for (const dtype of options.dtypes) {
    if (shouldStop()) break;
    const bundle = bundleFor(options.models, dtype);
    const model = await loadModel(bundle, { ...options.modelOptions, device: options.device, dtype });
    const { channels, size } = model.manifest.latent;
    const latents = async (batch: number) => addon.Tensor.randn([batch, channels, size, size], { seed: 0, device: model.device, dtype: model.dtype });
    const timed = options.methods.map((method) => ({ method, steps: stepsFor(method, steps), seconds: [] as number[], unetCalls: 0, peak: null as number | null }));
    const bare: number[] = [];
    const pythonSeconds: number[] = [];
    let single: Tensor | undefined;
    let reference: Awaited<ReturnType<typeof pythonLoop>> | undefined;
    try {
      single = await latents(1);
      reference = python ? await pythonLoop(python, bundle, model, steps, guidance).catch((error: Error) => {
        pythonError = error.message;
        return undefined;
      }) : undefined;
      // Warm-up: the TorchScript profiling runs and the allocator's first blocks, for every timed thing.
      for (const entry of timed) await timeInversion(model, single, entry.method, entry.steps, guidance, signal);
      await timeBareForwards(model, single, steps, guidance, signal);
      for (let round = 0; round < repeats && !shouldStop(); round++) {
        const order = timed.map((_, i) => timed[(i + round) % timed.length]);
        for (const entry of order) {
          if (shouldStop()) break;
          const timing = await timeInversion(model, single, entry.method, entry.steps, guidance, signal);
          entry.seconds.push(timing.seconds);
          entry.unetCalls = timing.unetCalls;
          if (timing.peakMemoryBytes !== null) entry.peak = Math.max(entry.peak ?? 0, timing.peakMemoryBytes);
        }
        bare.push(await timeBareForwards(model, single, steps, guidance, signal));
        if (reference) pythonSeconds.push(await reference.time());
      }
      for (const entry of timed.filter((e) => e.seconds.length > 0)) {
        const seconds = median(entry.seconds);
        const imagesPerSecond: Record<number, number> = { 1: 1 / seconds };
        for (const batch of batches.filter((b) => b !== 1 && (options.batchMethods ?? options.methods).includes(entry.method))) {
          if (shouldStop()) break;
          const z0 = await latents(batch);
          const runs: number[] = [];
          try {
            for (let i = 0; i < Math.max(3, Math.floor(repeats / 2)); i++) runs.push((await timeInversion(model, z0, entry.method, entry.steps, guidance, signal)).seconds);
          } finally {
            z0.dispose();
          }
          imagesPerSecond[batch] = batch / median(runs);
        }
        const row: BenchRow = {
          method: entry.method, dtype, steps: entry.steps, seconds, spread: spreadOf(entry.seconds),
          microsecondsPerCall: (seconds / entry.unetCalls) * 1e6, unetCalls: entry.unetCalls, peakMemoryBytes: entry.peak, imagesPerSecond,
        };
        if (pythonSeconds.length > 0 && (entry.method === 'ddim' || entry.method === 'easyinv')) {
          row.pythonSeconds = median(pythonSeconds);
          row.pythonSpread = spreadOf(pythonSeconds);
        }
        report(row);
      }
      if (bare.length > 0) {
        report({
          method: 'unet-forward', dtype, steps, seconds: median(bare), spread: spreadOf(bare), microsecondsPerCall: (median(bare) / steps) * 1e6,
          unetCalls: steps, peakMemoryBytes: null, imagesPerSecond: {},
        });
      }
    } finally {
      reference?.close();
      single?.dispose();
      model.dispose();
    }
  }
  return { rows, python: python ?? null, ...(pythonError === undefined ? {} : { pythonError }) };
}

export function benchTable(rows: BenchRow[], batches: number[]): string {
  const bare = (dtype: string) => rows.find((r) => r.method === 'unet-forward' && r.dtype === dtype)?.seconds;
  const ddim = (dtype: string) => rows.find((r) => r.method === 'ddim' && r.dtype === dtype)?.seconds;
  const header = '| method | dtype | steps | s / inversion | min – max | µs / UNet call | UNet calls | vs bare UNet | vs ddim | vs Python | ' +
    `peak MiB | ${batches.map((b) => `img/s @${b}`).join(' | ')} |`;
  const lines = [header, `|${' --- |'.repeat(11 + batches.length)}`];
  for (const r of rows) {
    const floor = bare(r.dtype);
    const perCall = floor === undefined ? undefined : (floor / r.steps) * r.unetCalls;
    const cells = [
      r.method, r.dtype, r.steps, r.seconds.toFixed(4), `${r.spread[0].toFixed(4)} – ${r.spread[1].toFixed(4)}`, r.microsecondsPerCall.toFixed(0), r.unetCalls,
      perCall && r.method !== 'unet-forward' ? (r.seconds / perCall).toFixed(3) : '',
      ddim(r.dtype) && r.method !== 'unet-forward' ? (r.seconds / ddim(r.dtype)!).toFixed(3) : '',
      r.pythonSeconds ? (r.seconds / r.pythonSeconds).toFixed(3) : '',
      r.peakMemoryBytes === null ? 'n/a' : (r.peakMemoryBytes / 2 ** 20).toFixed(0),
      ...batches.map((b) => (r.imagesPerSecond[b] ? r.imagesPerSecond[b].toFixed(2) : '')),
    ];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}
