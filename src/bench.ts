// `easyinv bench`: seconds per inversion per method and dtype (device synchronised, warm-up excluded, median of
// repeats), UNet calls, peak device memory, images per second at several batch sizes, the bare UNet forwards the
// loop makes, and the same DDIM loop in Python PyTorch over the same TorchScript files as the ratio to beat.
import { execFileSync, spawnSync } from 'child_process';
import * as path from 'path';

import { rangeError } from './errors';
import { bundleFor } from './compare/compare';
import { stepsFor } from './evaluation';
import { median } from './statistics';
import { invert, type MethodName } from './inversion';
import type { ModelDtype } from './manifest';
import { loadModel, type Model } from './model';
import { addon, disposeAll, type Tensor } from './native';

export interface BenchOptions {
  models: string[];
  dtypes: ModelDtype[];
  methods: MethodName[];
  device?: string;
  steps?: number;
  repeats?: number;
  batches?: number[];
  /** The methods timed at the batch sizes above 1 (default: all): full-size models cannot afford every pair. */
  batchMethods?: MethodName[];
  /** The Python interpreter with torch for the reference loop; undefined: look for python3, then skip. */
  python?: string;
}

export interface BenchRow {
  method: MethodName | 'unet-forward';
  dtype: ModelDtype;
  steps: number;
  /** Median seconds of one inversion at batch 1 (for 'unet-forward': of the same number of bare UNet calls). */
  seconds: number;
  unetCalls: number;
  peakMemoryBytes: number | null;
  /** Images per second at each batch size. */
  imagesPerSecond: Record<number, number>;
  /** Seconds of the Python PyTorch DDIM loop at batch 1, for ddim and easyinv (which costs the same). */
  pythonSeconds?: number;
}

async function timeInversion(model: Model, z0: Tensor, method: MethodName, steps: number, repeats: number) {
  const run = () => invert(model, z0, { method, steps });
  (await run()).dispose(); // warm-up: the TorchScript profiling runs and the allocator's first blocks
  const seconds: number[] = [];
  let unetCalls = 0;
  addon.resetPeakMemory(model.device);
  for (let i = 0; i < repeats; i++) {
    const result = await run();
    seconds.push(result.seconds);
    unetCalls = result.unetCalls;
    result.dispose();
  }
  return { seconds: median(seconds), unetCalls, peakMemoryBytes: addon.peakMemory(model.device) };
}

/** The UNet calls of a DDIM inversion, made back to back with nothing else: the floor for any inversion loop. */
async function timeBareForwards(model: Model, z0: Tensor, calls: number, repeats: number): Promise<number> {
  const condition = await model.condition('', '', z0.shape[0], 1);
  const once = async () => {
    const started = performance.now();
    for (let i = 0; i < calls; i++) (await model.predictNoise(z0, 1 + (i * 20) % 1000, condition)).dispose();
    await addon.synchronize(model.device);
    return (performance.now() - started) / 1000;
  };
  await once();
  const seconds: number[] = [];
  for (let i = 0; i < repeats; i++) seconds.push(await once());
  disposeAll({ ...condition });
  return median(seconds);
}

function findPython(preferred?: string): string | undefined {
  const candidates = preferred ? [preferred] : ['python3', '/usr/bin/python3'];
  return candidates.find((python) => spawnSync(python, ['-c', 'import torch']).status === 0);
}

function pythonSeconds(python: string, bundle: string, dtype: ModelDtype, device: string, steps: number, repeats: number): number {
  const script = path.join(__dirname, '..', 'bench', 'python_inversion.py');
  const out = execFileSync(python, [script, bundle, '--device', device.startsWith('cuda') ? device : 'cpu', '--dtype', dtype,
    '--steps', String(steps), '--repeats', String(repeats)], { encoding: 'utf8' });
  return JSON.parse(out).secondsPerInversion;
}

export async function bench(options: BenchOptions, onRow?: (row: BenchRow) => void): Promise<{ rows: BenchRow[]; python: string | null }> {
  const { steps = 50, repeats = 5, batches = [1, 4, 16] } = options;
  if (!Number.isInteger(repeats) || repeats < 1) rangeError(`repeats must be an integer >= 1, not ${repeats}`);
  const python = findPython(options.python);
  const rows: BenchRow[] = [];
  for (const dtype of options.dtypes) {
    const bundle = bundleFor(options.models, dtype);
    const model = await loadModel(bundle, { device: options.device, dtype });
    const { channels, size } = model.manifest.latent;
    const latents = async (batch: number) => addon.Tensor.randn([batch, channels, size, size], { seed: 0, device: model.device, dtype: model.dtype });
    const single = await latents(1);
    const reference = python ? pythonSeconds(python, bundle, dtype, model.device, steps, repeats) : undefined;
    for (const method of options.methods) {
      const n = stepsFor(method, steps);
      const timing = await timeInversion(model, single, method, n, repeats);
      const imagesPerSecond: Record<number, number> = { 1: 1 / timing.seconds };
      for (const batch of batches.filter((b) => b !== 1 && (options.batchMethods ?? options.methods).includes(method))) {
        const z0 = await latents(batch);
        imagesPerSecond[batch] = batch / (await timeInversion(model, z0, method, n, Math.max(1, Math.floor(repeats / 2)))).seconds;
        z0.dispose();
      }
      const row: BenchRow = { method, dtype, steps: n, ...timing, imagesPerSecond };
      if (reference !== undefined && (method === 'ddim' || method === 'easyinv')) row.pythonSeconds = reference;
      rows.push(row);
      onRow?.(row);
    }
    const bare: BenchRow = {
      method: 'unet-forward', dtype, steps, seconds: await timeBareForwards(model, single, steps, repeats),
      unetCalls: steps, peakMemoryBytes: null, imagesPerSecond: {},
    };
    rows.push(bare);
    onRow?.(bare);
    single.dispose();
    model.dispose();
  }
  return { rows, python: python ?? null };
}

export function benchTable(rows: BenchRow[], batches: number[]): string {
  const bare = (dtype: string) => rows.find((r) => r.method === 'unet-forward' && r.dtype === dtype)?.seconds;
  const ddim = (dtype: string) => rows.find((r) => r.method === 'ddim' && r.dtype === dtype)?.seconds;
  const header = `| method | dtype | steps | s / inversion | UNet calls | vs bare UNet | vs ddim | vs Python | peak MiB | ${batches.map((b) => `img/s @${b}`).join(' | ')} |`;
  const lines = [header, `|${' --- |'.repeat(9 + batches.length)}`];
  for (const r of rows) {
    const floor = bare(r.dtype);
    const perCall = floor === undefined ? undefined : (floor / r.steps) * r.unetCalls;
    const cells = [
      r.method, r.dtype, r.steps, r.seconds.toFixed(4), r.unetCalls,
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
