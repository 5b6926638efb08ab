// A model bundle (a folder with manifest.json and TorchScript files) loaded on a device: the noise predictor and
// the conditioning it needs.
import * as fs from 'fs';
import * as path from 'path';

import { failure, optionError, rangeError, typeError } from './errors';
import { readImage, type Fit, type ImageSource } from './image';
import { bundleError, compareVersions, readManifest, verifyFiles, writerVersion, type Family, type Manifest, type ModelDtype } from './manifest';
import { loadModule, Module } from './module';
import { addon, disposeAll, isTensor, type Tensor } from './native';
import type { SchedulerConfig } from './schedule';
import { bundleTokenizer, type ClipTokenizer } from './tokenizer';

export interface ModelOptions {
  device?: string;
  dtype?: ModelDtype;
  /** UNet and VAE in channels_last (NHWC) order, the layout oneDNN and cuDNN convolve fastest (same values). */
  channelsLast?: boolean;
  /** CUDA: the UNet's steps replay a CUDA graph captured per batch shape instead of launching each kernel (same
   * values within float rounding; the first step of each shape captures). */
  cudaGraphs?: boolean;
  /** Check each file against the SHA-256 its manifest records before loading (default true; false skips it). */
  verifyFiles?: boolean;
}

/**
 * The UNet's conditioning for a batch: the text states [B, 77, D] (SDXL: also the pooled text embeddings [B, P] and
 * time_ids [B, 6]), with [uncond; cond] stacked on the batch axis when guidance != 1. A UNet with mutual attention
 * also takes attentionSources, int64 [R, L] for its R rows and L self-attention layers (see Model.attentionSources).
 */
export interface Condition {
  guidance: number;
  states: Tensor;
  textEmbeds?: Tensor;
  timeIds?: Tensor;
  attentionSources?: Tensor;
}

/** One prompt's text encoding: states [1, 77, D]; SDXL also the pooled embedding [1, P]. */
export interface PromptEncoding {
  states: Tensor;
  pooled?: Tensor;
}

interface Parts {
  unet: Module;
  vaeEncoder?: Module;
  vaeDecoder?: Module;
  textEncoders: Module[];
  tokenizers: ClipTokenizer[];
}

// TorchScript written by a newer PyTorch often fails to load in an older LibTorch (new operators, new format), with
// messages that name neither version.
async function explainWriterVersion(dir: string, manifest: Manifest, error: Error): Promise<Error> {
  const writer = writerVersion(manifest);
  const { libtorch } = await addon.capabilities();
  if (writer === undefined || compareVersions(writer, libtorch) <= 0) return error;
  return bundleError(dir, `was written by PyTorch ${writer}, newer than this build's LibTorch ${libtorch}, and did not load. ` +
    `Re-export it with PyTorch ${libtorch.replace(/^(\d+\.\d+).*/, '$1')} or older, or rebuild easyinv against ` +
    `a LibTorch at least as new (LIBTORCH_USE_PYTORCH=1 npm rebuild easyinv, with that PyTorch in python3).\n` +
    `LibTorch said: ${error.message}`);
}

export class Model {
  readonly unet: Module;
  private readonly parts: Parts;

  private constructor(
    readonly dir: string,
    readonly manifest: Manifest,
    readonly device: string,
    readonly dtype: ModelDtype,
    parts: Parts,
  ) {
    this.unet = parts.unet;
    this.parts = parts;
  }

  static async load(dir: string, options: ModelOptions = {}): Promise<Model> {
    const manifest = readManifest(dir);
    const device = options.device ?? manifest.device;
    const dtype = options.dtype ?? manifest.dtype;
    if (manifest.device === 'cuda' && !device.startsWith('cuda')) {
      throw bundleError(dir, `was traced on cuda and cannot run on ${device}: export a cpu bundle ` +
        '(tools/export_sd.py --device cpu --dtype float32)');
    }
    const dtypes = manifest.dtypes ?? [manifest.dtype];
    if (!dtypes.includes(dtype)) {
      throw bundleError(dir, `was traced in ${manifest.dtype}, not ${dtype}: export one in ${dtype} ` +
        `(tools/export_sd.py --dtype ${dtype})`);
    }
    if (options.verifyFiles ?? true) await verifyFiles(dir, manifest);
    const { files } = manifest;
    const channelsLast = options.channelsLast ?? false;
    const load = (name?: string, cudaGraphs?: boolean) =>
      (name === undefined ? undefined : loadModule(path.join(dir, name), { device, dtype, channelsLast, cudaGraphs }));
    const [unet, vaeEncoder, vaeDecoder, ...textEncoders] = await Promise.all([
      load(files.unet, options.cudaGraphs), load(files.vae_encoder), load(files.vae_decoder), load(files.text_encoder), load(files.text_encoder_2),
    ]).catch(async (error: Error) => {
      throw await explainWriterVersion(dir, manifest, error);
    });
    const tokenizers = [files.tokenizer, files.tokenizer_2].flatMap((name) => (name ? [bundleTokenizer(dir, name)] : []));
    const encoders = textEncoders.filter((m): m is Module => m !== undefined);
    if (encoders.length > tokenizers.length) throw bundleError(dir, 'has a text encoder without its tokenizer');
    return new Model(dir, manifest, device, dtype, { unet: unet!, vaeEncoder, vaeDecoder, textEncoders: encoders, tokenizers });
  }

  get family(): Family {
    return this.manifest.family;
  }

  get scheduler(): SchedulerConfig {
    return this.manifest.scheduler;
  }

  get resolution(): number {
    return this.manifest.resolution;
  }

  /** A compiled bundle's modules take the batch sizes they were exported for (manifest export.batch); others throw. */
  private checkBatch(rows: number, why = ''): void {
    const accepted = (this.manifest.export as { batch?: [number, number] } | undefined)?.batch;
    if (accepted && !(rows >= accepted[0] && rows <= accepted[1])) {
      rangeError(`the compiled bundle at ${this.dir} takes batches of ${accepted[0]} to ${accepted[1]}, not ${rows}${why}: ` +
        'split the batch, or export with a larger --max-batch');
    }
  }

  /**
   * Clean latents [B, C, h, w] (scaled by the VAE's scaling factor) of an image file, resized to the bundle's
   * resolution, or of an image Tensor [B, 3, H, W] in [-1, 1].
   */
  async encodeImage(input: ImageSource | Tensor, options: { fit?: Fit } = {}): Promise<Tensor> {
    const encoder = this.parts.vaeEncoder;
    if (!encoder) throw bundleError(this.dir, 'has no VAE encoder, so it takes latents, not images');
    const size = this.resolution;
    let source: Tensor;
    if (typeof input === 'string' || input instanceof Uint8Array) {
      const pixels = await readImage(input, { ...options, size, device: this.device });
      source = await pixels.affine(2, -1);
      pixels.dispose();
    } else if (!isTensor(input) || input.shape.length !== 4 || input.shape[1] !== 3 || input.shape[2] !== size || input.shape[3] !== size) {
      rangeError(`an image Tensor for this model has shape [B, 3, ${size}, ${size}] and values in [-1, 1]`);
    } else {
      source = input;
    }
    // Freed also when a step fails (the encoder disposed meanwhile, say), not left to the garbage collector.
    const temporary = source === input ? [] : [source];
    const keep = (tensor: Tensor) => (temporary.push(tensor), tensor);
    try {
      this.checkBatch(source.shape[0]);
      const typed = keep(await source.to({ device: this.device, dtype: this.dtype }));
      const mean = keep((await encoder.forward(typed)) as Tensor);
      return await mean.affine(this.manifest.latent.scaling_factor, 0);
    } finally {
      disposeAll(temporary);
    }
  }

  /** Images [B, 3, H, W] in [0, 1] (float32) of latents scaled as encodeImage makes them. */
  async decode(latents: Tensor): Promise<Tensor> {
    const decoder = this.parts.vaeDecoder;
    if (!decoder) throw bundleError(this.dir, 'has no VAE decoder, so it cannot make images');
    this.checkBatch(latents.shape[0]);
    const temporary: Tensor[] = []; // freed also when a step fails, as in encodeImage
    const keep = (tensor: Tensor) => (temporary.push(tensor), tensor);
    try {
      const unscaled = keep(await latents.affine(1 / this.manifest.latent.scaling_factor, 0));
      const typed = keep(await unscaled.to({ device: this.device, dtype: this.dtype }));
      const decoded = keep((await decoder.forward(typed)) as Tensor);
      const shifted = keep(await decoded.affine(0.5, 0.5));
      const clamped = keep(await shifted.clamp(0, 1));
      return await clamped.to({ dtype: 'float32' });
    } finally {
      disposeAll(temporary);
    }
  }

  /** The text encoders' output for one prompt (SD-1: last hidden state; SDXL: both penultimate states and pooled). */
  async encodePrompt(prompt: string): Promise<PromptEncoding> {
    const { textEncoders, tokenizers } = this.parts;
    if (typeof prompt !== 'string') typeError('a prompt must be a string');
    if (textEncoders.length === 0) {
      if (prompt !== '') throw bundleError(this.dir, 'has no text encoder, so it takes no prompt: pass prompt \'\'');
      return this.zeroPrompt();
    }
    const outputs = await Promise.all(textEncoders.map(async (encoder, i) => {
      const ids = addon.Tensor.fromArray(tokenizers[i].encode(prompt), [1, 77], { device: this.device, dtype: 'int64' });
      const output = encoder.forward(ids);
      ids.dispose();
      return output;
    }));
    if (this.family !== 'sdxl') return { states: outputs[0] as Tensor };
    const [first, [second, pooled]] = outputs as [Tensor, Tensor[]];
    const states = await addon.Tensor.cat([first, second], -1);
    disposeAll([first, second]);
    return { states, pooled };
  }

  private zeroPrompt(pooledLike?: Tensor): PromptEncoding {
    const [tokens, width] = this.manifest.cond_shape;
    const placement = { device: this.device, dtype: this.dtype };
    const states = addon.Tensor.fromArray(new Float32Array(tokens * width), [1, tokens, width], placement);
    if (this.family !== 'sdxl') return { states };
    const size = pooledLike?.shape[1] ?? Number(this.manifest.pooled_dim ?? 1280);
    return { states, pooled: addon.Tensor.fromArray(new Float32Array(size), [1, size], placement) };
  }

  /** The self-attention layers of a UNet with mutual attention (it takes attention_sources); undefined for others. */
  get mutualAttentionLayers(): number | undefined {
    return this.manifest.mutual_attention_layers;
  }

  /** The self-attention layers of a UNet with mutual attention; an error for a bundle without it. */
  requireMutualAttention(): number {
    const layers = this.mutualAttentionLayers;
    if (layers === undefined) {
      throw bundleError(this.dir, 'has no mutual attention (no "mutual_attention_layers" in its manifest): re-export it with ' +
        'tools/export_sd.py --mutual-attention (its default)');
    }
    return layers;
  }

  /**
   * The conditioning for `batch` latents, with one prompt for all, or one per latent. The negative prompt is the
   * unconditional half; SDXL, as diffusers, uses zeros for an empty negative prompt. SDXL is conditioned on the
   * original and target size `sizeCondition` (default: the bundle's resolution). A UNet with mutual attention gets
   * the identity sources: the plain UNet.
   */
  async condition(prompt: string | string[], negativePrompt: string, batch: number, guidance: number, sizeCondition?: number): Promise<Condition> {
    if (sizeCondition !== undefined && this.family !== 'sdxl') optionError('sizeCondition', `is for SDXL bundles only; this one is ${this.family}`);
    const prompts = Array.isArray(prompt) ? prompt : Array<string>(batch).fill(prompt);
    if (prompts.length !== batch) optionError('prompt', `has ${prompts.length} prompts for a batch of ${batch}: give one, or one per latent`);
    const encodings = new Map<string, PromptEncoding>();
    let uncond: PromptEncoding | undefined;
    try {
      for (const text of prompts) if (!encodings.has(text)) encodings.set(text, await this.encodePrompt(text));
      const first = encodings.get(prompts[0])!;
      uncond = guidance === 1 ? undefined
        : this.family === 'sdxl' && negativePrompt === '' ? this.zeroPrompt(first.pooled) : await this.encodePrompt(negativePrompt);
    } catch (error) {
      // the text encoder disposed between two prompts, say
      disposeAll([...encodings.values()].flatMap((encoding) => [encoding.states, encoding.pooled]));
      throw error;
    }
    const rows = (part: 'states' | 'pooled') => [
      ...Array<Tensor | undefined>(uncond ? batch : 0).fill(uncond?.[part]),
      ...prompts.map((text) => encodings.get(text)![part]),
    ] as Tensor[];
    const states = await addon.Tensor.cat(rows('states'));
    const count = rows('states').length;
    const condition: Condition = { guidance, states };
    if (this.family === 'sdxl') {
      condition.textEmbeds = await addon.Tensor.cat(rows('pooled'));
      const size = sizeCondition ?? this.resolution;
      const ids = Array.from({ length: count }, () => [size, size, 0, 0, size, size]).flat(); // original, crop, target
      condition.timeIds = addon.Tensor.fromArray(ids, [count, 6], { device: this.device, dtype: this.dtype });
    }
    // Built once per condition, not per step: every UNet call of a run passes it.
    if (this.mutualAttentionLayers !== undefined) condition.attentionSources = this.attentionSources(count, (row) => row);
    disposeAll([...encodings.values(), uncond].flatMap((encoding) => [encoding?.states, encoding?.pooled]));
    return condition;
  }

  /**
   * The attention_sources input of a UNet with mutual attention, for `rows` UNet rows ([uncond; cond] with
   * guidance): row r's self-attention in layer l takes its keys and values from row source(r, l).
   */
  attentionSources(rows: number, source: (row: number, layer: number) => number): Tensor {
    const layers = this.requireMutualAttention();
    const data = new BigInt64Array(rows * layers);
    for (let r = 0; r < rows; r++) for (let l = 0; l < layers; l++) data[r * layers + l] = BigInt(source(r, l));
    return addon.Tensor.fromArray(data, [rows, layers], { device: this.device });
  }

  /**
   * The UNet's noise for `latents` at `timestep`, in one UNet call. With guidance w != 1 the call runs on the
   * doubled batch [uncond; cond] and eps = eps_u + w (eps_c - eps_u).
   */
  async predictNoise(latents: Tensor, timestep: number, condition: Condition): Promise<Tensor> {
    const timesteps = this.timesteps(timestep, latents.shape[0], condition);
    try {
      return await this.denoise(latents, timesteps, condition);
    } finally {
      timesteps.dispose(); // the queued job keeps its own reference
    }
  }

  /** `timestep` on the device, once per row of the UNet's batch for `batch` latents (2 batch with guidance). */
  timesteps(timestep: number, batch: number, condition: Condition): Tensor {
    const rows = condition.guidance === 1 ? batch : 2 * batch;
    return addon.Tensor.fromArray(new BigInt64Array(rows).fill(BigInt(timestep)), [rows], { device: this.device });
  }

  /**
   * predictNoise with the timesteps already on the device; given `weights` [a, b] it returns a latents + b eps
   * instead of eps (a DDIM-type step), all in one native job.
   */
  denoise(latents: Tensor, timesteps: Tensor, condition: Condition, weights?: [number, number]): Promise<Tensor> {
    const guided = condition.guidance !== 1;
    this.checkBatch(latents.shape[0] * (guided ? 2 : 1), guided ? ' (guidance doubles the batch)' : '');
    const added = condition.textEmbeds && condition.timeIds ? [condition.textEmbeds, condition.timeIds] : [];
    const sources = condition.attentionSources ? [condition.attentionSources] : [];
    return this.unet.denoise(latents, timesteps, [condition.states, ...added, ...sources], condition.guidance, weights);
  }

  dispose(): void {
    const { unet, vaeEncoder, vaeDecoder, textEncoders } = this.parts;
    [unet, vaeEncoder, vaeDecoder, ...textEncoders].forEach((m) => m?.dispose());
  }

  /** For `await using model = await loadModel(...)`. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }
}

export const loadModel = (dir: string, options?: ModelOptions) => Model.load(dir, options);
