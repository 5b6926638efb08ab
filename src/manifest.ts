// A model bundle's manifest.json (the project's spec, section 3), read and checked once, at load: every field the
// library uses is named with the form it must have, so no later step fails on a missing or malformed one.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

import { failure } from './errors';
import { packagedTokenizers } from './tokenizer';
import type { SchedulerConfig } from './schedule';

import type { Dtype } from './native';

export type Family = 'sd1' | 'sdxl' | 'test';
/** The dtypes a model runs in. */
export type ModelDtype = Extract<Dtype, 'float32' | 'float16'>;

export interface Manifest {
  format: 'easyinv-bundle/1';
  family: Family;
  name: string;
  device: 'cuda' | 'cpu';
  dtype: ModelDtype;
  resolution: number;
  latent: { channels: number; size: number; scaling_factor: number };
  cond_shape: [number, number];
  scheduler: SchedulerConfig;
  /** The dtypes the modules run in, when more than the traced one (scripted modules convert cleanly). */
  dtypes?: ModelDtype[];
  files: { unet: string; [module: string]: string };
  /** The SHA-256 of each file of the bundle, by file name, as written at export (hex). */
  sha256?: Record<string, string>;
  /** The UNet's self-attention layers, when it takes attention_sources [R, L] as its last input (mutual attention). */
  mutual_attention_layers?: number;
  [unknown: string]: unknown;
}

export function bundleError(dir: string, problem: string): Error {
  return failure(`the bundle at ${dir} ${problem}`);
}

type Check = (value: unknown) => boolean;
const isPositiveInteger: Check = (v) => Number.isSafeInteger(v) && (v as number) > 0;
const oneOf = (...values: unknown[]): Check => (v) => values.includes(v);
const isFraction: Check = (v) => typeof v === 'number' && v > 0 && v < 1;

// [field path, check, the expected form as the error states it]
const fields: [string, Check, string][] = [
  ['format', oneOf('easyinv-bundle/1'), '"easyinv-bundle/1"'],
  ['family', oneOf('sd1', 'sdxl', 'test'), 'sd1, sdxl or test'],
  ['device', oneOf('cpu', 'cuda'), '"cpu" or "cuda" (the device it was traced on)'],
  ['dtype', oneOf('float32', 'float16'), '"float32" or "float16" (the dtype it was traced in)'],
  ['resolution', isPositiveInteger, 'a positive integer (image side in pixels)'],
  ['latent.channels', isPositiveInteger, 'a positive integer'],
  ['latent.size', isPositiveInteger, 'a positive integer (latent side)'],
  ['latent.scaling_factor', (v) => typeof v === 'number' && Number.isFinite(v) && v > 0, 'a positive number'],
  ['cond_shape', (v) => Array.isArray(v) && v.length === 2 && v.every(isPositiveInteger), '[tokens, width], positive integers'],
  ['scheduler.num_train_timesteps', (v) => isPositiveInteger(v) && (v as number) <= 10_000, 'a positive integer up to 10000'],
  ['scheduler.beta_start', isFraction, 'a number between 0 and 1'],
  ['scheduler.beta_end', isFraction, 'a number between 0 and 1'],
  ['scheduler.beta_schedule', oneOf('scaled_linear', 'linear'), '"scaled_linear" or "linear" (the schedules easyinv implements)'],
  ['scheduler.steps_offset', (v) => Number.isSafeInteger(v) && (v as number) >= 0, 'a non-negative integer'],
  ['scheduler.set_alpha_to_one', (v) => typeof v === 'boolean', 'true or false'],
  ['scheduler.timestep_spacing', oneOf('leading', 'trailing', 'linspace'), '"leading", "trailing" or "linspace"'],
  ['files.unet', (v) => typeof v === 'string' && v !== '', 'the UNet\'s file name'],
];

const at = (object: unknown, field: string) =>
  field.split('.').reduce<unknown>((value, key) => (value !== null && typeof value === 'object' ? (value as any)[key] : undefined), object);

/** The problems of a parsed manifest, one line each; empty when it is valid. */
export function manifestProblems(manifest: unknown): string[] {
  if (manifest === null || typeof manifest !== 'object' || Array.isArray(manifest)) return ['is not a JSON object'];
  const problems = fields.filter(([field, check]) => !check(at(manifest, field)))
    .map(([field, , expected]) => `"${field}" is ${JSON.stringify(at(manifest, field)) ?? 'missing'}; expected ${expected}`);
  const m = manifest as Manifest;
  const { num_train_timesteps: count, steps_offset: offset } = m.scheduler ?? ({} as SchedulerConfig);
  if (isPositiveInteger(count) && Number.isSafeInteger(offset) && offset >= count) {
    problems.push(`"scheduler.steps_offset" is ${offset}; expected less than num_train_timesteps (${count})`);
  }
  if (m.dtypes !== undefined && !(Array.isArray(m.dtypes) && m.dtypes.every(oneOf('float32', 'float16')))) {
    problems.push(`"dtypes" is ${JSON.stringify(m.dtypes)}; expected a list of "float32" and "float16"`);
  }
  if (m.files !== null && typeof m.files === 'object') {
    for (const [role, name] of Object.entries(m.files)) {
      if (typeof name !== 'string' || name === '') problems.push(`"files.${role}" is ${JSON.stringify(name)}; expected a file name`);
    }
  } else {
    problems.push(`"files" is ${JSON.stringify(m.files) ?? 'missing'}; expected an object of file names`);
  }
  if (m.mutual_attention_layers !== undefined && !isPositiveInteger(m.mutual_attention_layers)) {
    problems.push(`"mutual_attention_layers" is ${JSON.stringify(m.mutual_attention_layers)}; expected a positive integer (the UNet's self-attention layers)`);
  }
  if (m.sha256 !== undefined) {
    const digests = m.sha256 !== null && typeof m.sha256 === 'object' && !Array.isArray(m.sha256) ? Object.entries(m.sha256) : [];
    if (digests.length === 0 || !digests.every(([, digest]) => typeof digest === 'string' && /^[0-9a-f]{64}$/.test(digest))) {
      problems.push(`"sha256" is ${JSON.stringify(m.sha256)}; expected an object of 64-digit hex SHA-256 digests by file name`);
    }
  }
  return problems;
}

/**
 * Checks each file the manifest records a SHA-256 for against it, before LibTorch reads any (a truncated, corrupt or
 * replaced file is then an error that names it, not LibTorch's; a .pt2 package holds native code that loading runs).
 */
export async function verifyFiles(dir: string, manifest: Manifest): Promise<void> {
  for (const [name, expected] of Object.entries(manifest.sha256 ?? {})) {
    const file = path.join(dir, name);
    const hash = crypto.createHash('sha256');
    try {
      for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
    } catch (error) {
      throw bundleError(dir, `has a SHA-256 for ${name}, which cannot be read: ${(error as Error).message}`);
    }
    const actual = hash.digest('hex');
    if (actual !== expected) {
      throw bundleError(dir, `has a file ${name} (${fs.statSync(file).size} bytes) whose SHA-256 is not the one its manifest ` +
        `records: it is truncated, corrupt or replaced (expected ${expected}, found ${actual}). Copy or export the bundle again`);
    }
  }
}

export function readManifest(dir: string): Manifest {
  const file = path.join(dir, 'manifest.json');
  if (!fs.existsSync(file)) throw bundleError(dir, 'has no manifest.json (make bundles with tools/export_sd.py)');
  let manifest: Manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw bundleError(dir, `has a manifest.json that is not valid JSON: ${(error as Error).message}`);
  }
  const problems = manifestProblems(manifest);
  if (problems.length > 0) {
    throw bundleError(dir, `has a manifest.json that easyinv cannot use:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
  const outside = (field: string, name: string, how: string) => bundleError(dir, `has "${field}": ${JSON.stringify(name)}, ` +
    `${how} outside the bundle's folder: a bundle names files of its own folder, so that a copy of the folder works`);
  for (const [role, name] of Object.entries(manifest.files)) {
    if (role.startsWith('tokenizer') && Object.hasOwn(packagedTokenizers, name)) continue;
    const file = path.join(dir, name);
    if (path.isAbsolute(name) || !isInside(dir, file)) throw outside(`files.${role}`, name, 'a path that leads');
    if (!fs.existsSync(file)) throw bundleError(dir, `lacks its ${role} file ${name}`);
    if (!isInside(fs.realpathSync(dir), fs.realpathSync(file))) throw outside(`files.${role}`, name, 'a link that leads');
  }
  for (const name of Object.keys(manifest.sha256 ?? {})) {
    if (path.isAbsolute(name) || !isInside(dir, path.join(dir, name))) throw outside('sha256', name, 'a path that leads');
  }
  return manifest;
}

function isInside(dir: string, file: string): boolean {
  const relative = path.relative(dir, file);
  return relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative);
}

/** The PyTorch version that wrote the bundle's TorchScript files (export_sd.py records it), if known. */
export function writerVersion(manifest: Manifest): string | undefined {
  const torch = (manifest.export as { torch?: unknown } | undefined)?.torch;
  return typeof torch === 'string' ? torch : undefined;
}

const versionParts = (version: string) => (version.match(/^(\d+)\.(\d+)(?:\.(\d+))?/) ?? []).slice(1).map((n) => Number(n ?? 0));

/** Compares release numbers (major.minor.patch), ignoring local tags such as +cpu. */
export function compareVersions(a: string, b: string): number {
  const [x, y] = [versionParts(a), versionParts(b)];
  for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
}
