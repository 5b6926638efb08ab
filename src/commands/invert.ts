import * as path from 'path';

import { invert, type InvertOptions } from '../inversion';
import { saveLatents } from '../latent-file';
import type { Tensor } from '../native';
import { checkOutFolder, inversionFlags, openModel, progressBar, report, required, type Flags } from './common';

/** `easyinv invert`: an image to its noise z_T, saved with its settings (and method direct's offsets). */
export async function invertCommand(flags: Flags, signal?: AbortSignal): Promise<void> {
  const out = required(flags, 'out');
  checkOutFolder(out);
  await using model = await openModel(flags, required(flags, 'model'));
  const image = required(flags, 'image');
  using z0 = await model.encodeImage(image, { fit: flags.fit as 'fill' | 'cover' | undefined });
  const { methodOptions, ...sampling } = inversionFlags(flags);
  const options = { ...sampling, ...methodOptions, signal, onProgress: progressBar(flags, `invert ${sampling.method ?? 'easyinv'}`) } as InvertOptions;
  using result = await invert(model, z0, options);
  const tensors: Record<string, Tensor> = { latent: result.latent };
  result.offsets?.forEach((offset, i) => (tensors[`offset.${i}`] = offset));
  const metadata = {
    format: 'easyinv-latent/1',
    model: model.manifest.name,
    family: model.family,
    image: path.resolve(image),
    method: result.method,
    steps: String(result.steps),
    prompt: sampling.prompt ?? '',
    negativePrompt: sampling.negativePrompt ?? '',
    guidance: String(sampling.guidance ?? 1),
    // what reconstruction must sample over (PNDM's timesteps are for the inversion alone)
    stepsOffset: String(sampling.stepsOffset ?? model.scheduler.steps_offset),
    ...(model.family === 'sdxl' ? { sizeCondition: String(sampling.sizeCondition ?? model.resolution) } : {}),
    options: JSON.stringify(methodOptions),
    unetCalls: String(result.unetCalls),
    seconds: result.seconds.toFixed(4),
  };
  await saveLatents(out, tensors, metadata);
  const json = { out, ...metadata, steps: result.steps, guidance: sampling.guidance ?? 1, options: methodOptions, unetCalls: result.unetCalls,
    seconds: result.seconds, shape: result.latent.shape };
  report(flags, json, `wrote ${out}: z_T ${JSON.stringify(result.latent.shape)}, ` +
    `${result.method}, ${result.steps} steps, ${result.unetCalls} UNet calls, ${result.seconds.toFixed(2)} s`);
}
