import * as path from 'path';

import { edit, editSettings, type EditMethod, type EditOptions } from '../edit';
import { editFigure } from '../edit-figure';
import { digits, fixed } from '../format';
import { writeImage } from '../image';
import { invert, methodNames, type InvertOptions, type MethodName } from '../inversion';
import { checkOutFolder, inversionFlags, list, number, openModel, progressBar, report, required, UsageError, type Flags } from './common';

/**
 * `easyinv edit`: a photo inverted and edited toward a prompt (MasaCtrl by default); with --inversions, the edit
 * after each inversion method beside its reconstruction (EasyInv's Fig. 6), as a PNG grid and a page.
 */
export async function editCommand(flags: Flags, signal?: AbortSignal): Promise<void> {
  const out = required(flags, 'out');
  const image = required(flags, 'image');
  const prompt = flags.prompt;
  if (prompt === undefined) throw new UsageError('--prompt is required: what the edit should show');
  const inversions = flags.inversions === undefined ? undefined : list<MethodName>(flags, 'inversions', methodNames, []);
  const inversion = flags.inversion ?? 'easyinv';
  if (!(methodNames as string[]).includes(inversion)) throw new UsageError(`--inversion must be one of ${methodNames.join(', ')}, not ${JSON.stringify(inversion)}`);
  if (inversions && flags.inversion !== undefined) throw new UsageError('give --inversion (one edit) or --inversions (the figure), not both');
  const extension = path.extname(out).toLowerCase();
  if (inversions ? extension !== '.png' : !['.png', '.jpg', '.jpeg', '.webp'].includes(extension)) {
    throw new UsageError(inversions ? `--out names the figure's PNG grid (the page goes beside it as .html), not ${out}`
      : `--out must name a .png, .jpg, .jpeg or .webp image, not ${out}`);
  }
  checkOutFolder(out);
  const { methodOptions, stepsOffset, sizeCondition, negativePrompt } = inversionFlags(flags);
  const options: EditOptions = {
    prompt, sourcePrompt: flags['source-prompt'], method: flags.method as EditMethod | undefined, startStep: number(flags, 'start-step'),
    startLayer: number(flags, 'start-layer'), steps: number(flags, 'steps'), guidance: number(flags, 'guidance'), negativePrompt, stepsOffset, sizeCondition,
    signal,
  };
  await using model = await openModel(flags, required(flags, 'model'));
  const settings = editSettings(model, options); // before the inversion's minutes
  if (inversions) {
    const { rows, page } = await editFigure(model, image, out, {
      inversions, edit: options, methodOptions, onProgress: (label) => progressBar(flags, label),
    });
    const table = [
      `| inversion | inversion (s) | reconstruction (s) | PSNR (dB) | ${settings.method} edit (s) |`, '|---|---|---|---|---|',
      ...rows.map((r) => `| ${r.inversion} | ${fixed(r.invertSeconds, digits.seconds)} | ${fixed(r.reconstructSeconds, digits.seconds)} | ` +
        `${fixed(r.psnr, digits.psnr)} | ${fixed(r.editSeconds, digits.seconds)} |`),
    ];
    report(flags, { out, page, image, ...settings, rows }, `${table.join('\n')}\n\nwrote ${out} and ${page}`);
    return;
  }
  using z0 = await model.encodeImage(image, { fit: flags.fit as 'fill' | 'cover' | undefined });
  using inverted = await invert(model, z0, {
    ...methodOptions, method: inversion, steps: settings.steps, prompt: settings.sourcePrompt, stepsOffset, sizeCondition, keepLatents: true,
    signal, onProgress: progressBar(flags, `invert ${inversion}`),
  } as InvertOptions);
  using edited = await edit(model, inverted, { ...options, onProgress: progressBar(flags, `edit ${settings.method}`) });
  using picture = await model.decode(edited.edits[0]);
  await writeImage(picture, out);
  const json = { out, image, inversion, ...settings, invertSeconds: inverted.seconds, editSeconds: edited.seconds, unetCalls: inverted.unetCalls + edited.unetCalls };
  report(flags, json, `wrote ${out}: ${settings.method} edit toward ${JSON.stringify(prompt)} after ${inversion} inversion, ${settings.steps} steps; ` +
    `inversion ${fixed(inverted.seconds, 2)} s, edit ${fixed(edited.seconds, 2)} s`);
}
