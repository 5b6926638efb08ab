import { writeImage } from '../image';
import { reconstruct } from '../inversion';
import { loadLatents } from '../latent-file';
import { checkOutFolder, inversionFlags, openModel, progressBar, report, required, UsageError, type Flags } from './common';

/** `easyinv reconstruct`: DDIM sampling from saved noise back to an image, with the settings saved beside it. */
export async function reconstructCommand(flags: Flags, signal?: AbortSignal): Promise<void> {
  const out = required(flags, 'out');
  checkOutFolder(out);
  await using model = await openModel(flags, required(flags, 'model'));
  const { tensors, metadata } = loadLatents(required(flags, 'latent'), model.device);
  if (!tensors.latent) throw new UsageError(`--latent ${flags.latent} holds no tensor named latent`);
  const offsets = Object.keys(tensors).filter((name) => name.startsWith('offset.'))
    .sort((a, b) => Number(a.slice(7)) - Number(b.slice(7))).map((name) => tensors[name]);
  const given = inversionFlags(flags);
  const steps = given.steps ?? Number(metadata.steps ?? 50);
  const latent = await reconstruct(model, tensors.latent, {
    steps,
    prompt: given.prompt ?? metadata.prompt ?? '',
    negativePrompt: given.negativePrompt ?? metadata.negativePrompt ?? '',
    guidance: given.guidance ?? Number(metadata.guidance ?? 1),
    stepsOffset: given.stepsOffset ?? (metadata.stepsOffset === undefined ? undefined : Number(metadata.stepsOffset)),
    sizeCondition: given.sizeCondition ?? (metadata.sizeCondition === undefined ? undefined : Number(metadata.sizeCondition)),
    timesteps: given.timesteps,
    offsets: offsets.length > 0 ? offsets : undefined,
    onProgress: progressBar(flags, 'reconstruct'),
    signal,
  });
  await writeImage(await model.decode(latent), out);
  report(flags, { out, steps }, `wrote ${out}`);
}
