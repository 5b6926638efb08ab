// EasyInv's Fig. 6 for one photo: after each inversion method, its reconstruction and its edit, with their times, as
// a PNG grid (the reconstructions above, the edits below) and a page in the compare report's look.
import * as fs from 'fs';
import * as path from 'path';

import { escapeHtml, htmlPage } from './compare/report';
import { edit, editSettings, type EditOptions, type EditSettings } from './edit';
import { encodePhoto, warmUp } from './evaluation';
import { writeFileWhole } from './files';
import { digits, fixed } from './format';
import { quantize, writeGrid } from './image';
import { invert, optionsFor, reconstruct, type InvertOptions, type MethodName, type ProgressCallback } from './inversion';
import { psnr, ssim } from './metrics';
import type { Model } from './model';
import { addon, type Tensor } from './native';

export interface FigureRow {
  inversion: MethodName;
  invertSeconds: number;
  invertUnetCalls: number;
  reconstructSeconds: number;
  /** The 8-bit reconstruction against the photo at the model's resolution, as compare measures it. */
  psnr: number;
  ssim: number;
  editSeconds: number;
  editUnetCalls: number;
}

export interface FigureOptions {
  inversions: MethodName[];
  /** The edit's options; its sourcePrompt, steps, stepsOffset, sizeCondition and signal are the inversions' too. */
  edit: EditOptions;
  /** Options for the inversion methods; each takes its own. */
  methodOptions?: Record<string, unknown>;
  onProgress?: (label: string) => ProgressCallback | undefined;
}

async function picture(model: Model, latent: Tensor): Promise<Tensor> {
  const decoded = await model.decode(latent);
  try {
    return await quantize(decoded);
  } finally {
    decoded.dispose();
  }
}

/**
 * Inverts the photo with each method (the source prompt, guidance 1, keeping the latents the edit's source row
 * follows), reconstructs it, and edits it; writes the grid to `file` (.png) and the page beside it (.html).
 */
export async function editFigure(model: Model, photo: string, file: string, options: FigureOptions): Promise<{ rows: FigureRow[]; page: string }> {
  const { inversions, methodOptions = {}, onProgress } = options;
  const settings = editSettings(model, options.edit);
  const { stepsOffset, sizeCondition, signal } = options.edit;
  const sampling = { steps: settings.steps, prompt: settings.sourcePrompt, stepsOffset, sizeCondition, signal };
  const { reference, z0 } = await encodePhoto(model, photo);
  const white = addon.Tensor.fromArray(new Float32Array(reference.shape.reduce((a, b) => a * b)).fill(1), reference.shape);
  const above = [{ image: reference, label: 'input' }];
  const below = [{ image: white, label: `"${settings.targets[0]}"` }];
  const rows: FigureRow[] = [];
  try {
    await warmUp(model);
    for (const inversion of inversions) {
      using inverted = await invert(model, z0, {
        ...optionsFor(inversion, methodOptions), ...sampling, method: inversion, keepLatents: true, onProgress: onProgress?.(`invert ${inversion}`),
      } as InvertOptions);
      const started = performance.now();
      // reconstruct() resolves with the device synchronised: the clock reads the work done
      using back = await reconstruct(model, inverted.latent, { ...sampling, offsets: inverted.offsets, onProgress: onProgress?.(`reconstruct ${inversion}`) });
      const reconstructSeconds = (performance.now() - started) / 1000;
      const tile = { image: await picture(model, back), label: inversion as string };
      above.push(tile);
      const [p] = await psnr(tile.image, reference);
      const [s] = await ssim(tile.image, reference);
      tile.label = `${inversion} ${fixed(p, 2)} dB`;
      using edited = await edit(model, inverted, { ...options.edit, onProgress: onProgress?.(`edit ${inversion}`) });
      below.push({ image: await picture(model, edited.edits[0]), label: `${inversion} ${settings.method}` });
      rows.push({
        inversion, invertSeconds: inverted.seconds, invertUnetCalls: inverted.unetCalls, reconstructSeconds, psnr: p, ssim: s,
        editSeconds: edited.seconds, editUnetCalls: edited.unetCalls,
      });
    }
    await writeGrid([...above, ...below], file, above.length);
  } finally {
    [...above, ...below].forEach((tile) => tile.image.dispose());
    z0.dispose();
  }
  const page = path.join(path.dirname(file), `${path.basename(file, path.extname(file))}.html`);
  writeFileWhole(page, renderPage(model, photo, settings, rows, fs.readFileSync(file)));
  return { rows, page };
}

function renderPage(model: Model, photo: string, settings: EditSettings, rows: FigureRow[], png: Buffer): string {
  const { method, steps, guidance, startStep, startLayer, sourcePrompt, targets } = settings;
  const headers = ['Inversion', 'Inversion (s)', 'UNet calls', 'Reconstruction (s)', 'PSNR (dB) ↑', 'SSIM ↑', 'Edit (s)', 'Edit UNet calls'];
  const cells = rows.map((r) => [r.inversion, fixed(r.invertSeconds, digits.seconds), String(r.invertUnetCalls),
    fixed(r.reconstructSeconds, digits.seconds), fixed(r.psnr, digits.psnr), fixed(r.ssim, digits.ssim),
    fixed(r.editSeconds, digits.seconds), String(r.editUnetCalls)]);
  const tr = (row: string[], tag: string) => `<tr>${row.map((c) => `<${tag}>${escapeHtml(c)}</${tag}>`).join('')}</tr>`;
  const control = method === 'masactrl' ? `masactrl from step ${startStep}, layer ${startLayer}` : 'the prompt alone (no mutual attention)';
  return htmlPage(`easyinv edit: ${model.manifest.name}`, `<p class="meta">Family ${escapeHtml(model.family)} · device ` +
    `${escapeHtml(model.device)} · ${steps} steps · ${escapeHtml(control)} · guidance ${guidance}</p>
<p class="meta">${escapeHtml(path.basename(photo))}: source prompt ${escapeHtml(JSON.stringify(sourcePrompt))}, target ` +
    `${escapeHtml(JSON.stringify(targets[0]))}</p>
<div class="wide"><table><thead>${tr(headers, 'th')}</thead><tbody>
${cells.map((row) => tr(row, 'td')).join('\n')}
</tbody></table></div>
<p class="meta">Each inversion at the source prompt and guidance 1; the reconstruction samples back under the same; the ` +
    `edit starts from the same noise, its source row following the inversion's latents, at guidance ${guidance}.</p>
<figure><figcaption>Above: the photo and each reconstruction (PSNR). Below: each edit.</figcaption>` +
    `<img src="data:image/png;base64,${png.toString('base64')}" alt="${escapeHtml(`${path.basename(photo)}: reconstructions and edits`)}"></figure>`);
}
