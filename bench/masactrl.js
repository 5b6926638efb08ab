#!/usr/bin/env node
// easyinv's edit() against MasaCtrl's own code (MutualSelfAttentionControl with diffusers, run in Python by
// test/python/reference_masactrl.py) on the bundles exported from the same small pipelines (weights/diffusers-sd1,
// weights/diffusers-sdxl): the same z_T (seeded, or MasaCtrl's inversion of a photo, whose latents can pin the source
// row), guidance 7.5, MasaCtrl's control or the plain two-prompt run. Prints, per case, the relative difference
// ||easyinv - MasaCtrl|| / ||MasaCtrl|| of the source row and of the edited (target) row, beside the float32 floor.
//   node bench/masactrl.js [--json]       (after npm run build)
'use strict';
const path = require('path');

const { edit, loadLatents, loadModel } = require('../dist');
const { relativeDifference } = require('./diffusers.js');

const weights = path.join(__dirname, '..', 'weights');
const referenceFile = path.join(weights, 'test', 'masactrl-reference.safetensors');
const settings = require(path.join(weights, 'test', 'masactrl-reference.json'));

function parseCase(key) {
  const [family, start, n, control, pinned] = key.split('/');
  const [, startStep, startLayer] = control.split('-').map(Number);
  return { key, family, start, steps: Number(n.slice(1)), control, pinned: pinned === 'pinned', startStep, startLayer };
}

/**
 * One row per case of the reference (those whose key `keep` keeps), in its order; `bundle(family)` is the bundle that
 * edits (default weights/diffusers-<family>).
 */
async function compareWithMasaCtrl({ families = ['sd1', 'sdxl'], keep = () => true, bundle = (family) => path.join(weights, `diffusers-${family}`) } = {}) {
  const { tensors } = loadLatents(referenceFile);
  const cases = Object.keys(settings.floors).filter(keep).map(parseCase).filter((c) => families.includes(c.family));
  const rows = [];
  try {
    for (const family of families.filter((f) => cases.some((c) => c.family === f))) {
      const model = await loadModel(bundle(family));
      try {
        for (const c of cases.filter((each) => each.family === family)) {
          const prefix = `${family}/${c.start}/N${c.steps}`;
          // MasaCtrl's latents are z_0 .. z_N; an inversion's (keepLatents) are z_1 .. z_N.
          const latents = c.pinned ? (await tensors[`${prefix}/latents`].split(Array(c.steps + 1).fill(1))) : undefined;
          const source = { latent: tensors[`${prefix}/zT`], latents: latents?.slice(1) };
          const options = { prompt: settings.target_prompt, sourcePrompt: settings.source_prompt, guidance: settings.guidance, steps: c.steps };
          const result = await edit(model, source, c.control === 'plain'
            ? { ...options, method: 'prompt' }
            : { ...options, method: 'masactrl', startStep: c.startStep, startLayer: c.startLayer });
          const [sourceRow, targetRow] = await tensors[c.key].split([1, 1]);
          rows.push({
            ...c, floor: settings.floors[c.key],
            source: await relativeDifference(result.source, sourceRow),
            target: await relativeDifference(result.edits[0], targetRow),
          });
          result.dispose();
          [sourceRow, targetRow, ...(latents ?? [])].forEach((tensor) => tensor.dispose());
        }
      } finally {
        model.dispose();
      }
    }
  } finally {
    Object.values(tensors).forEach((tensor) => tensor.dispose());
  }
  return rows;
}

function table(rows) {
  const lines = ['| bundle | z_T | N | control | source pinned | source rel. diff. | target rel. diff. | float32 floor (target) |',
    '|---|---|---|---|---|---|---|---|'];
  for (const r of rows) {
    const control = r.control === 'plain' ? 'plain (two prompts)' : `MasaCtrl step ${r.startStep}, layer ${r.startLayer}`;
    lines.push(`| ${r.family} | ${r.start} | ${r.steps} | ${control} | ${r.pinned ? 'yes' : 'no'} | ` +
      `${r.source.toExponential(1)} | ${r.target.toExponential(1)} | ${r.floor.toExponential(1)} |`);
  }
  return lines.join('\n');
}

module.exports = { compareWithMasaCtrl };

if (require.main === module) {
  compareWithMasaCtrl().then(
    (rows) => console.log(process.argv.includes('--json') ? JSON.stringify(rows, null, 1) : table(rows)),
    (error) => {
      console.error(error.message);
      process.exit(1);
    },
  );
}
