// A model bundle (a folder with manifest.json and TorchScript files) loaded on a device: the noise predictor and
// the conditioning it needs.
import * as fs from 'fs';
import * as path from 'path';

import { loadModule, Module } from './module';
import { addon, type Dtype, type Tensor } from './native';
import type { SchedulerConfig } from './schedule';

export type Family = 'sd1' | 'sdxl' | 'test';

export interface Manifest {
  format: 'easyinv-bundle/1';
  family: Family;
  name: string;
  device: 'cuda' | 'cpu';
  dtype: 'float16' | 'float32';
  resolution: number;
  latent: { channels: number; size: number; scaling_factor: number };
  cond_shape: [number, number];
  scheduler: SchedulerConfig;
  files: { unet: string; [module: string]: string };
  [unknown: string]: unknown;
}

export interface ModelOptions {
  device?: string;
  dtype?: 'float32' | 'float16';
}

/** The UNet's conditioning for a batch: the text states [B, 77, D], or [uncond; cond] stacked when guidance != 1. */
export interface Condition {
  guidance: number;
  states: Tensor;
}

function bundleError(dir: string, problem: string): Error {
  return new Error(`easyinv: the bundle at ${dir} ${problem}`);
}

export function readManifest(dir: string): Manifest {
  const file = path.join(dir, 'manifest.json');
  if (!fs.existsSync(file)) throw bundleError(dir, 'has no manifest.json (make bundles with weights/export_sd.py)');
  let manifest: Manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw bundleError(dir, `has a manifest.json that is not valid JSON: ${(error as Error).message}`);
  }
  if (manifest?.format !== 'easyinv-bundle/1') {
    throw bundleError(dir, `has manifest format ${JSON.stringify(manifest?.format)}; expected "easyinv-bundle/1"`);
  }
  if (!['sd1', 'sdxl', 'test'].includes(manifest.family)) {
    throw bundleError(dir, `has an unknown family ${JSON.stringify(manifest.family)}; expected sd1, sdxl or test`);
  }
  if (typeof manifest.files?.unet !== 'string') throw bundleError(dir, 'names no unet file in manifest.json "files"');
  for (const [role, name] of Object.entries(manifest.files)) {
    if (!fs.existsSync(path.join(dir, name))) throw bundleError(dir, `lacks its ${role} file ${name}`);
  }
  return manifest;
}

export class Model {
  private constructor(
    readonly dir: string,
    readonly manifest: Manifest,
    readonly device: string,
    readonly dtype: Dtype,
    readonly unet: Module,
  ) {}

  static async load(dir: string, options: ModelOptions = {}): Promise<Model> {
    const manifest = readManifest(dir);
    const device = options.device ?? manifest.device;
    const dtype = options.dtype ?? manifest.dtype;
    if (manifest.device === 'cuda' && !device.startsWith('cuda')) {
      throw bundleError(dir, `was traced on cuda and cannot run on ${device}: export a cpu bundle ` +
        '(weights/export_sd.py --device cpu --dtype float32)');
    }
    if (manifest.family !== 'test' && dtype !== manifest.dtype) {
      throw bundleError(dir, `was traced in ${manifest.dtype}, not ${dtype}: export one in ${dtype} ` +
        `(weights/export_sd.py --dtype ${dtype})`);
    }
    const unet = await loadModule(path.join(dir, manifest.files.unet), { device, dtype });
    return new Model(dir, manifest, device, unet.dtype, unet);
  }

  get family(): Family {
    return this.manifest.family;
  }

  get scheduler(): SchedulerConfig {
    return this.manifest.scheduler;
  }

  /** The conditioning for `batch` latents; without a text encoder only the empty prompt exists (zeros). */
  async condition(prompt: string, negativePrompt: string, batch: number, guidance: number): Promise<Condition> {
    if ((prompt !== '' || negativePrompt !== '') && this.manifest.files.text_encoder === undefined) {
      throw bundleError(this.dir, 'has no text encoder, so it takes no prompt: pass prompt \'\'');
    }
    const [tokens, width] = this.manifest.cond_shape;
    const rows = guidance === 1 ? batch : 2 * batch;
    const states = addon.Tensor.fromArray(new Float32Array(rows * tokens * width), [rows, tokens, width], {
      device: this.device,
      dtype: this.dtype,
    });
    return { guidance, states };
  }

  /**
   * The UNet's noise for `latents` at `timestep`, in one UNet call. With guidance w != 1 the call runs on the
   * doubled batch [uncond; cond] and eps = eps_u + w (eps_c - eps_u).
   */
  async predictNoise(latents: Tensor, timestep: number, condition: Condition): Promise<Tensor> {
    const { guidance, states } = condition;
    if (guidance === 1) return this.unetCall(latents, timestep, states);
    const batch = latents.shape[0];
    const doubled = await addon.Tensor.cat([latents, latents]);
    const both = await this.unetCall(doubled, timestep, states);
    const [uncond, cond] = await both.split([batch, batch]);
    const eps = await addon.Tensor.weightedSum([uncond, cond], [1 - guidance, guidance]);
    [doubled, both, uncond, cond].forEach((t) => t.dispose());
    return eps;
  }

  private async unetCall(latents: Tensor, timestep: number, states: Tensor): Promise<Tensor> {
    const batch = latents.shape[0];
    const timesteps = addon.Tensor.fromArray(new BigInt64Array(batch).fill(BigInt(timestep)), [batch], {
      device: this.device,
    });
    const eps = this.unet.forward(latents, timesteps, states);
    timesteps.dispose(); // the queued forward keeps its own reference
    return (await eps) as Tensor;
  }

  dispose(): void {
    this.unet.dispose();
  }
}

export const loadModel = (dir: string, options?: ModelOptions) => Model.load(dir, options);
