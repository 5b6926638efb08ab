// `easyinv compare`: every method on every image of a folder, in each dtype, with results written line by line so
// that a run can be resumed, split over processes (shards) and merged.
import * as fs from 'fs';
import * as path from 'path';

import { failure, optionError, throwIfAborted } from '../errors';
import { encodePhoto, roundTrip, stepsFor, warmUp } from '../evaluation';
import { appendLineFlushed, copyFileWhole, createFile, makeFolder, removeTemporaries, truncateFile, writeFileWhole } from '../files';
import { readImage, writeGrid, writeImage } from '../image';
import { notebookSettings, type MethodName, type SamplingOptions } from '../inversion';
import { readManifest, type ModelDtype } from '../manifest';
import { loadLpips } from '../metrics';
import { loadModel } from '../model';
import { addon, type Tensor } from '../native';
import { renderReport } from './report';
import { summarize, summaryMarkdown } from './summary';
import type { Grid, ResultLine, Summary } from './types';

export interface CompareOptions {
  /** Bundle folders; each dtype runs on the bundle traced in it (or one that lists it in "dtypes"). */
  models: string[];
  images: string;
  out: string;
  methods: MethodName[];
  dtypes: ModelDtype[];
  device?: string;
  /** Steps per inversion (fixed-point: at most 20, as its authors run it). */
  steps?: number;
  prompt?: string;
  guidance?: number;
  stepsOffset?: number;
  /** 'pndm': invert over PNDM's timesteps (reconstruction stays DDIM's). */
  timesteps?: SamplingOptions['timesteps'];
  sizeCondition?: number;
  /**
   * The authors' notebooks' settings for the bundles' family (steps, guidance, timesteps, steps offset, size
   * conditioning, easyinv's variant 'notebook'), under whatever else the options give.
   */
  notebookSettings?: boolean;
  /** Options for the methods (eta, window, variant, refinements, iterations, seed); each method takes its own. */
  methodOptions?: Record<string, unknown>;
  limit?: number;
  /** Shard k of n (0 <= k < n): the images whose index modulo n is k. */
  shard?: { index: number; count: number };
  resume?: boolean;
  /** An LPIPS TorchScript network (tools/export_lpips.py); without one the LPIPS column says n/a. */
  lpipsNetwork?: string;
  onItem?: (done: number, total: number, item: string) => void;
  /** Stops the run before the next item or step with an AbortError, the lock released; --resume continues it. */
  signal?: AbortSignal;
}

interface RunInfo {
  model: Summary['model'];
  methods: string[];
  dtypes: string[];
  lpipsNetwork: string | null;
  /** What the results depend on: a resume with other settings would mix two runs under one name. */
  settings?: Record<string, unknown>;
}

const files = (out: string) => ({
  results: path.join(out, 'results.jsonl'),
  skipped: path.join(out, 'skipped.jsonl'),
  run: path.join(out, 'run.json'),
  lock: path.join(out, 'lock'),
  reconstructions: path.join(out, 'reconstructions'),
  grids: path.join(out, 'grids'),
});

/**
 * Reads a JSON-lines file. A last line cut short by a killed run is cut from the file; a corrupt line elsewhere (NULs
 * after a power loss) is dropped from the file with a warning naming it, so that only its item runs again.
 */
function readLines<T>(file: string): T[] {
  if (!fs.existsSync(file)) return [];
  const text = fs.readFileSync(file, 'utf8');
  const complete = text.slice(0, text.lastIndexOf('\n') + 1);
  if (complete.length !== text.length) truncateFile(file, Buffer.byteLength(complete));
  const kept: string[] = [];
  const values: T[] = [];
  complete.split('\n').forEach((line, i) => {
    if (line === '') return;
    try {
      values.push(JSON.parse(line) as T);
      kept.push(line);
    } catch {
      console.warn(`easyinv: ${file} line ${i + 1} is corrupt (not JSON); dropped it from the file, so its item runs again`);
    }
  });
  if (values.length !== complete.split('\n').filter((line) => line !== '').length) {
    writeFileWhole(file, kept.map((line) => `${line}\n`).join(''));
  }
  return values;
}

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** Holds `out` for this process: two runs on one folder would both do (and write) every item. */
function lockRun(out: string): () => void {
  const { lock } = files(out);
  const mine = JSON.stringify({ pid: process.pid, started: new Date().toISOString() });
  for (let attempt = 0; attempt < 2; attempt++) {
    if (createFile(lock, mine)) return () => fs.rmSync(lock, { force: true });
    let holder: { pid?: number; started?: string } = {};
    try {
      holder = JSON.parse(fs.readFileSync(lock, 'utf8'));
    } catch {
      // an unreadable lock was cut short as its writer died: stale
    }
    if (typeof holder.pid === 'number' && isAlive(holder.pid)) {
      throw failure(`${out} is in use by another compare run (process ${holder.pid}, started ${holder.started}): ` +
        `wait for it to finish, or stop it; if no such run exists, delete ${lock}`);
    }
    fs.rmSync(lock, { force: true }); // its process is gone
  }
  throw failure(`could not lock ${out}: another run keeps taking ${lock}`);
}

function checkSettings(out: string, settings: Record<string, unknown>): void {
  const { run } = files(out);
  if (!fs.existsSync(run)) return;
  const stored = (JSON.parse(fs.readFileSync(run, 'utf8')) as RunInfo).settings;
  if (stored === undefined) return;
  const differences = Object.keys({ ...stored, ...settings })
    .filter((key) => JSON.stringify(stored[key]) !== JSON.stringify(settings[key]))
    .map((key) => `${key}: ${JSON.stringify(stored[key])} in the run, ${JSON.stringify(settings[key])} now`);
  if (differences.length > 0) {
    throw failure(`--resume with other settings than the run in ${out} would mix two runs' results:\n` +
      `${differences.map((d) => `  - ${d}`).join('\n')}\nResume with the run's settings, or choose another --out`);
  }
}

/** One write of one whole line: a killed run leaves complete lines, or one cut-off line that readLines drops. */
function appendLine(file: string, value: object): void {
  appendLineFlushed(file, JSON.stringify(value));
}

export function listImages(dir: string, limit?: number, shard?: CompareOptions['shard']): string[] {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) optionError('images', `${dir} is not a folder`, Error);
  const all = (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((name) => !path.basename(name).startsWith('.') && fs.statSync(path.join(dir, name)).isFile())
    .sort();
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1)) {
    optionError('limit', `must be an integer >= 1, not ${limit}`);
  }
  if (all.length === 0) optionError('images', `${dir} holds no files`, Error);
  const limited = limit === undefined ? all : all.slice(0, limit);
  return shard ? limited.filter((_, i) => i % shard.count === shard.index) : limited;
}

/** The bundle among `models` that runs in `dtype`. */
export function bundleFor(models: string[], dtype: ModelDtype): string {
  const found = models.find((dir) => {
    const manifest = readManifest(dir);
    return (manifest.dtypes ?? [manifest.dtype]).includes(dtype);
  });
  if (!found) throw failure(`no bundle among ${models.join(', ')} runs in ${dtype}: export one (tools/export_sd.py --dtype ${dtype}) and pass both to --model`);
  return found;
}

const stem = (image: string) => image.replace(/[\\/]/g, '__').replace(/\.[^.]+$/, '');

function withNotebookSettings(options: CompareOptions): CompareOptions {
  if (!options.notebookSettings) return options;
  const given = Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as CompareOptions;
  return {
    ...notebookSettings[readManifest(options.models[0]).family], ...given,
    methodOptions: { variant: 'notebook', ...options.methodOptions },
  };
}

export async function compare(userOptions: CompareOptions): Promise<Summary> {
  const options = withNotebookSettings(userOptions);
  const { out, methods, dtypes } = options;
  const paths = files(out);
  if (!options.resume && fs.existsSync(paths.results)) {
    throw failure(`${out} already holds results: pass --resume to continue that run, or choose another --out`);
  }
  if (dtypes.includes('float16') && (options.device ?? 'cpu') === 'cpu') {
    const { libtorch, devices } = await addon.capabilities();
    if (!devices[0].dtypes.includes('float16')) {
      throw failure(`float16 needs CUDA here: LibTorch ${libtorch} has no float16 convolution on the CPU ` +
        '(LibTorch 2.x has): pass --device cuda, or --dtype float32');
    }
  }
  const images = listImages(options.images, options.limit, options.shard);
  if (images.length === 0) throw failure(`shard ${options.shard?.index}/${options.shard?.count} of ${options.images} holds no image`);
  const steps = options.steps ?? 50;
  const settings = {
    models: options.models.map((dir) => readManifest(dir).name), device: options.device ?? null, methods, dtypes,
    steps: Object.fromEntries(methods.map((m) => [m, stepsFor(m, steps)])), prompt: options.prompt ?? '',
    guidance: options.guidance ?? 1, stepsOffset: options.stepsOffset ?? null, timesteps: options.timesteps ?? 'ddim',
    sizeCondition: options.sizeCondition ?? null, methodOptions: options.methodOptions ?? {},
    lpipsNetwork: options.lpipsNetwork ? path.basename(options.lpipsNetwork) : null,
  };
  makeFolder(paths.reconstructions);
  makeFolder(paths.grids);
  const unlock = lockRun(out);
  try {
    // under the lock no other run writes here: a temporary file was left by a killed run
    [out, paths.reconstructions, paths.grids].forEach(removeTemporaries);
    checkSettings(out, settings);
    await runItems(options, images, steps, settings);
  } finally {
    unlock();
  }
  const summary = writeSummary(out);
  if (summary.table1.length === 0) {
    throw failure(`no image of ${options.images} could be used (${images.length} skipped; the reasons are in ` +
      `${paths.skipped}), so the tables are empty`);
  }
  return summary;
}

async function runItems(options: CompareOptions, images: string[], steps: number, settings: Record<string, unknown>): Promise<void> {
  const { out, methods, dtypes } = options;
  const paths = files(out);
  const done = new Set(readLines<ResultLine>(paths.results).map((l) => `${l.image}|${l.method}|${l.dtype}`));
  const skipped = new Set(readLines<{ file: string }>(paths.skipped).map((s) => s.file));
  const total = images.length * dtypes.length * methods.length;
  let finished = done.size;
  let info: RunInfo | undefined;

  for (const dtype of dtypes) {
    await using model = await loadModel(bundleFor(options.models, dtype), { device: options.device, dtype });
    await using net = options.lpipsNetwork ? await loadLpips(options.lpipsNetwork, { device: model.device }) : undefined;
    await warmUp(model);
    info ??= {
      model: { name: model.manifest.name, family: model.family, device: model.device },
      methods, dtypes, lpipsNetwork: options.lpipsNetwork ? path.basename(options.lpipsNetwork) : null, settings,
    };
    writeFileWhole(paths.run, JSON.stringify(info, null, 2));
    for (const image of images) {
      const todo = methods.filter((m) => !done.has(`${image}|${m}|${dtype}`));
      // A run killed after an image's last result and before its grid left the grid to do.
      const gridDone = fs.existsSync(path.join(paths.grids, `${stem(image)}-${dtype}.png`));
      if ((todo.length === 0 && gridDone) || skipped.has(image)) {
        finished += skipped.has(image) ? todo.length : 0;
        continue;
      }
      let photo: { reference: Tensor; z0: Tensor };
      try {
        photo = await encodePhoto(model, path.join(options.images, image));
      } catch (error) {
        appendLine(paths.skipped, { file: image, reason: (error as Error).message });
        skipped.add(image);
        finished += todo.length;
        continue;
      }
      using reference = photo.reference;
      using z0 = photo.z0;
      for (const method of todo) {
        throwIfAborted(options.signal, `compare aborted after ${finished} of ${total} items`);
        const trip = await roundTrip(model, z0, reference, method, {
          steps: stepsFor(method, steps), prompt: options.prompt, guidance: options.guidance, stepsOffset: options.stepsOffset,
          timesteps: options.timesteps, sizeCondition: options.sizeCondition, methodOptions: options.methodOptions, lpipsNetwork: net,
          signal: options.signal,
        });
        using reconstruction = trip.image;
        await writeImage(reconstruction, path.join(paths.reconstructions, `${stem(image)}-${dtype}-${method}.png`));
        const { lpips, ssim, psnr, invertSeconds, reconstructSeconds, unetCalls, peakMemoryBytes } = trip;
        appendLine(paths.results, { image, dtype, method, steps: trip.steps, lpips, ssim, psnr, invertSeconds, reconstructSeconds, unetCalls, peakMemoryBytes });
        done.add(`${image}|${method}|${dtype}`);
        options.onItem?.(++finished, total, `${image} ${method} ${dtype}`);
      }
      await writeImageGrid(out, image, dtype, reference, methods);
    }
  }
}

/** grids/<image>-<dtype>.png: the input beside each method's reconstruction, from the saved reconstructions. */
async function writeImageGrid(out: string, image: string, dtype: string, reference: Tensor, methods: string[]): Promise<void> {
  const { reconstructions, grids } = files(out);
  const tiles = [{ image: reference, label: 'input' }];
  for (const method of methods) {
    tiles.push({ image: await readImage(path.join(reconstructions, `${stem(image)}-${dtype}-${method}.png`)), label: method });
  }
  await writeGrid(tiles, path.join(grids, `${stem(image)}-${dtype}.png`));
  tiles.slice(1).forEach((t) => t.image.dispose());
}

/** Writes summary.json, summary.md and report.html from what the folder holds. */
export function writeSummary(out: string): Summary {
  const paths = files(out);
  if (!fs.existsSync(paths.run)) throw failure(`${out} holds no easyinv compare run (no run.json)`);
  const info: RunInfo = JSON.parse(fs.readFileSync(paths.run, 'utf8'));
  const summary = summarize(readLines<ResultLine>(paths.results), readLines(paths.skipped), info.model, info.lpipsNetwork,
    { methods: info.methods, dtypes: info.dtypes });
  writeFileWhole(path.join(out, 'summary.json'), JSON.stringify(summary, null, 2));
  writeFileWhole(path.join(out, 'summary.md'), summaryMarkdown(summary));
  const grids: Grid[] = fs.existsSync(paths.grids)
    ? fs.readdirSync(paths.grids).sort().map((file) => {
      const match = /^(.*)-(float16|float32)\.png$/.exec(file);
      return { image: match?.[1] ?? file, dtype: match?.[2] ?? '', file: path.join('grids', file) };
    })
    : [];
  writeFileWhole(path.join(out, 'report.html'), renderReport(summary, grids, out));
  return summary;
}

/** Joins the results of several runs (shards) into `out`, with one summary. */
export function mergeRuns(out: string, runs: string[]): Summary {
  if (runs.length === 0) throw failure('merge needs the output folders of the runs to join');
  const paths = files(out);
  makeFolder(paths.grids);
  makeFolder(paths.reconstructions);
  const seen = new Set(readLines<ResultLine>(paths.results).map((l) => `${l.image}|${l.method}|${l.dtype}`));
  const skipped = new Set(readLines<{ file: string }>(paths.skipped).map((s) => s.file));
  let info: RunInfo | undefined;
  for (const run of runs) {
    const source = files(run);
    if (!fs.existsSync(source.run)) throw failure(`${run} holds no easyinv compare run (no run.json)`);
    const runInfo: RunInfo = JSON.parse(fs.readFileSync(source.run, 'utf8'));
    if (info && info.model.name !== runInfo.model.name) {
      throw failure(`cannot merge runs of different models (${info.model.name}, ${runInfo.model.name})`);
    }
    info ??= runInfo;
    for (const line of readLines<ResultLine>(source.results)) {
      const key = `${line.image}|${line.method}|${line.dtype}`;
      if (!seen.has(key)) appendLine(paths.results, line);
      seen.add(key);
    }
    for (const entry of readLines<{ file: string; reason: string }>(source.skipped)) {
      if (!skipped.has(entry.file)) appendLine(paths.skipped, entry);
      skipped.add(entry.file);
    }
    for (const folder of ['grids', 'reconstructions'] as const) {
      if (!fs.existsSync(source[folder])) continue;
      for (const file of fs.readdirSync(source[folder])) copyFileWhole(path.join(source[folder], file), path.join(paths[folder], file));
    }
  }
  writeFileWhole(paths.run, JSON.stringify(info, null, 2));
  return writeSummary(out);
}
