// One image's round trip, as the demo, compare and bench measure it: the photo read at 8 bits and encoded, then
// invert, reconstruct, decode, quantise to 8 bits, and the metrics against the photo.
import { quantize, readImage, type ImageSource } from './image';
import { invert, optionsFor, reconstruct, type InvertOptions, type MethodName, type ProgressCallback, type SamplingOptions } from './inversion';
import { lpips, psnr, ssim } from './metrics';
import type { Model } from './model';
import type { Module } from './module';
import { addon, type Tensor } from './native';

/** The steps a method is compared at: fixed-point iteration at N = 20 (or fewer), as its authors run it. */
export const stepsFor = (method: MethodName, steps: number): number => (method === 'fixed-point' ? Math.min(steps, 20) : steps);

/** A photo at the model's resolution in 8-bit values (what a quantised reconstruction is compared with) and its z0. */
export async function encodePhoto(model: Model, file: ImageSource): Promise<{ reference: Tensor; z0: Tensor }> {
  const reference = await readImage(file, { size: model.resolution, device: model.device });
  const scaled = await reference.affine(2, -1);
  try {
    return { reference, z0: await model.encodeImage(scaled) };
  } catch (error) {
    reference.dispose();
    throw error;
  } finally {
    scaled.dispose();
  }
}

export interface RoundTripOptions {
  steps: number;
  prompt?: string;
  guidance?: number;
  stepsOffset?: number;
  /** The inversion's timestep list; the reconstruction samples over DDIM's. */
  timesteps?: SamplingOptions['timesteps'];
  sizeCondition?: number;
  /** Options for the methods; each method takes those that are its own. */
  methodOptions?: Record<string, unknown>;
  /** An LPIPS network: without one, lpips is null. */
  lpipsNetwork?: Module;
  onProgress?: (phase: 'invert' | 'reconstruct') => ProgressCallback | undefined;
  /** Stops the inversion or the reconstruction between steps (AbortError). */
  signal?: AbortSignal;
}

export interface RoundTrip {
  method: MethodName;
  steps: number;
  /** The reconstruction, quantised to 8 bits; the caller disposes it. */
  image: Tensor;
  psnr: number;
  ssim: number;
  lpips: number | null;
  unetCalls: number;
  invertSeconds: number;
  reconstructSeconds: number;
  peakMemoryBytes: number | null;
}

export async function roundTrip(model: Model, z0: Tensor, reference: Tensor, method: MethodName, options: RoundTripOptions): Promise<RoundTrip> {
  const sampling = {
    steps: options.steps, prompt: options.prompt ?? '', guidance: options.guidance ?? 1, stepsOffset: options.stepsOffset,
    sizeCondition: options.sizeCondition,
  };
  addon.resetPeakMemory(model.device);
  const inverted = await invert(model, z0, {
    ...optionsFor(method, options.methodOptions ?? {}), ...sampling, signal: options.signal, timesteps: options.timesteps, method, onProgress: options.onProgress?.('invert'),
  } as InvertOptions);
  const peakMemoryBytes = addon.peakMemory(model.device);
  try {
    const started = performance.now();
    // reconstruct() resolves with the device synchronised: the clock reads the work done
    const latent = await reconstruct(model, inverted.latent, { ...sampling, signal: options.signal, offsets: inverted.offsets, onProgress: options.onProgress?.('reconstruct') });
    const reconstructSeconds = (performance.now() - started) / 1000;
    const decoded = await model.decode(latent);
    latent.dispose();
    const image = await quantize(decoded);
    decoded.dispose();
    const [p] = await psnr(image, reference);
    const [s] = await ssim(image, reference);
    const l = options.lpipsNetwork ? (await lpips(image, reference, options.lpipsNetwork))[0] : null;
    return {
      method, steps: options.steps, image, psnr: p, ssim: s, lpips: l, unetCalls: inverted.unetCalls,
      invertSeconds: inverted.seconds, reconstructSeconds, peakMemoryBytes,
    };
  } finally {
    inverted.dispose();
  }
}

/** TorchScript optimises a module over its first calls; those must not count in the first measurement. */
export async function warmUp(model: Model): Promise<void> {
  const { channels, size } = model.manifest.latent;
  const z0 = await addon.Tensor.randn([1, channels, size, size], { seed: 0, device: model.device, dtype: model.dtype });
  try {
    (await invert(model, z0, { method: 'ddim', steps: 3 })).dispose();
  } finally {
    z0.dispose(); // also when the inversion fails: the warm-up is often the first call of a bundle's UNet
  }
}
