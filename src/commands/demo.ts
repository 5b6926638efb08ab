import * as path from 'path';

import { encodePhoto, roundTrip, stepsFor, warmUp } from '../evaluation';
import { makeFolder } from '../files';
import { digits, fixed } from '../format';
import { writeGrid } from '../image';
import { methodNames } from '../inversion';
import type { Tensor } from '../native';
import { number, openModel, progressBar, report, type Flags } from './common';

const root = path.join(__dirname, '..', '..');
export const demoDefaults = {
  model: path.join(root, 'weights', 'tiny-sd1-256'),
  image: path.join(root, 'weights', 'photos', 'astronaut.png'),
};

/** `easyinv demo`: every method on the bundled model and photo; a table and a side-by-side picture. */
export async function demoCommand(flags: Flags, signal?: AbortSignal): Promise<void> {
  const imageFile = flags.image ?? demoDefaults.image;
  const outDir = flags.out ?? 'easyinv-demo';
  const steps = number(flags, 'steps') ?? 50;
  const model = await openModel(flags, flags.model ?? demoDefaults.model);
  const { reference, z0 } = await encodePhoto(model, imageFile);
  await warmUp(model);
  const tiles: { image: Tensor; label: string }[] = [{ image: reference, label: 'input' }];
  const rows = [];
  for (const method of methodNames) {
    const trip = await roundTrip(model, z0, reference, method, {
      steps: stepsFor(method, steps), signal, onProgress: (phase) => progressBar(flags, `${phase} ${method}`),
    });
    const { image, lpips, reconstructSeconds, peakMemoryBytes, ...row } = trip;
    rows.push(row);
    tiles.push({ image, label: `${method} ${fixed(row.psnr, 2)} dB` });
  }
  makeFolder(outDir);
  const picture = path.join(outDir, 'demo.png');
  await writeGrid(tiles, picture);
  tiles.forEach((tile) => tile.image.dispose());
  z0.dispose();
  model.dispose();
  const table = [
    `easyinv demo: ${model.manifest.name} (${model.family}, ${model.device}, ${model.dtype}) on ${path.basename(imageFile)}`,
    '',
    '| method | steps | PSNR (dB) | SSIM | UNet calls | inversion (s) |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.method} | ${r.steps} | ${fixed(r.psnr, digits.psnr)} | ${fixed(r.ssim, 4)} | ${r.unetCalls} | ${fixed(r.invertSeconds, digits.seconds)} |`),
    '',
    `side by side: ${picture}`,
  ].join('\n');
  report(flags, { model: model.manifest.name, image: imageFile, picture, rows }, table);
}
