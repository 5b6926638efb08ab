#!/usr/bin/env node
// easyinv's EasyInv against the authors' notebook code (bench/paper_code.py, stored in
// weights/test/paper-code-reference.*), on weights/diffusers-sd1 and weights/diffusers-sdxl, from the same clean
// latent, with the notebooks' settings per family (src/inversion/easyinv.ts notebookSettings). Prints, per case, the
// relative difference ||easyinv - authors|| / ||authors|| of z_T for variant 'notebook' and, beside it, the
// default variant 'paper' at the same settings.
//   node bench/paper-code.js [--json]     (after npm run build; the bundles need LibTorch >= the PyTorch that wrote them)
'use strict';
const path = require('path');

const { invert, loadLatents, loadModel, notebookSettings } = require('../dist');
const { relativeDifference } = require('./diffusers.js');

const weights = path.join(__dirname, '..', 'weights');
const referenceFile = path.join(weights, 'test', 'paper-code-reference.safetensors');
const settings = require(path.join(weights, 'test', 'paper-code-reference.json'));
const latentFile = path.join(weights, 'test', 'diffusers-reference.safetensors');

/** One row per family, prompt and number of steps, in the reference's order; one column per variant. */
async function compareWithPaperCode(families = Object.keys(settings.steps), variants = ['notebook', 'paper']) {
  const { tensors } = loadLatents(referenceFile);
  const { tensors: clean } = loadLatents(latentFile);
  const rows = [];
  try {
    for (const family of families) {
      const model = await loadModel(path.join(weights, `diffusers-${family}`));
      for (const [promptKey, prompt] of Object.entries(settings.prompts)) {
        for (const steps of settings.steps[family]) {
          const reference = tensors[`${family}/${promptKey}/N${steps}/zT`];
          const row = { family, prompt: promptKey, steps, guidance: notebookSettings[family].guidance };
          for (const variant of variants) {
            const inv = await invert(model, clean.latent, { method: 'easyinv', variant, ...notebookSettings[family], steps, prompt });
            row[variant] = await relativeDifference(inv.latent, reference);
            inv.dispose();
          }
          rows.push(row);
        }
      }
      model.dispose();
    }
  } finally {
    [...Object.values(tensors), ...Object.values(clean)].forEach((tensor) => tensor.dispose());
  }
  return rows;
}

function table(rows) {
  const lines = ["| bundle | guidance | prompt | N | variant 'notebook': z_T rel. diff. | default 'paper': z_T rel. diff. |",
    '|---|---|---|---|---|---|'];
  for (const r of rows) {
    lines.push(`| ${r.family} | ${r.guidance} | ${r.prompt === 'empty' ? "''" : 'real'} | ${r.steps} | ` +
      `${r.notebook.toExponential(1)} | ${r.paper.toExponential(1)} |`);
  }
  return lines.join('\n');
}

module.exports = { compareWithPaperCode };

if (require.main === module) {
  compareWithPaperCode().then(
    (rows) => console.log(process.argv.includes('--json') ? JSON.stringify(rows, null, 1) : table(rows)),
    (error) => {
      console.error(error.message);
      process.exit(1);
    },
  );
}
