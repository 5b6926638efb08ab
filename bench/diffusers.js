#!/usr/bin/env node
// easyinv's DDIM and EasyInv inversion and reconstruction against diffusers' own (DDIMInverseScheduler and
// DDIMScheduler in a Python loop, test/python/reference_diffusers.py), on bundles that tools/export_sd.py made from small
// random-weight diffusers pipelines (weights/diffusers-sd1, weights/diffusers-sdxl; test/python/make_diffusers_bundles.py).
// Prints, per case, the relative difference ||easyinv - diffusers|| / ||diffusers|| of z_T and of the reconstruction.
//   node bench/diffusers.js [--json]       (after npm run build; the bundles need LibTorch >= the PyTorch that wrote them)
'use strict';
const path = require('path');

const { invert, loadLatents, loadModel, reconstruct } = require('../dist');

const weights = path.join(__dirname, '..', 'weights');
const referenceFile = path.join(weights, 'test', 'diffusers-reference.safetensors');
const settings = require(path.join(weights, 'test', 'diffusers-reference.json'));

async function relativeDifference(a, b) {
  const [x, y] = await Promise.all([a.toArray(), b.toArray()]);
  let difference = 0;
  let norm = 0;
  for (let i = 0; i < y.length; i++) {
    difference += (x[i] - y[i]) ** 2;
    norm += y[i] ** 2;
  }
  return Math.sqrt(difference / norm);
}

/**
 * One row per family, method, guidance, prompt and number of steps, in the reference's order; `bundle(family)` is the
 * bundle that inverts (default weights/diffusers-<family>).
 */
async function compareWithDiffusers(families = Object.keys(settings.families), bundle = (family) => path.join(weights, `diffusers-${family}`)) {
  const { tensors } = loadLatents(referenceFile);
  const rows = [];
  const models = [];
  try {
    for (const family of families) {
      const model = await loadModel(bundle(family));
      models.push(model);
      for (const method of settings.methods) {
        for (const guidance of settings.guidances) {
          for (const [promptKey, prompt] of Object.entries(settings.prompts)) {
            for (const steps of settings.steps) {
              const key = `${family}/${method}/g${guidance}/${promptKey}/N${steps}`;
              const options = { steps, prompt, guidance };
              const inv = await invert(model, tensors.latent, { method, ...options });
              const z0 = await reconstruct(model, inv.latent, options);
              rows.push({
                family, method, guidance, prompt: promptKey, steps,
                zT: await relativeDifference(inv.latent, tensors[`${key}/zT`]),
                z0: await relativeDifference(z0, tensors[`${key}/z0`]),
              });
              inv.dispose();
              z0.dispose();
            }
          }
        }
      }
    }
  } finally {
    Object.values(tensors).forEach((tensor) => tensor.dispose());
    models.forEach((model) => model.dispose());
  }
  return rows;
}

function table(rows) {
  const lines = ['| bundle | method | guidance | prompt | N | z_T rel. diff. | reconstruction rel. diff. |', '|---|---|---|---|---|---|---|'];
  for (const r of rows) {
    lines.push(`| ${r.family} | ${r.method} | ${r.guidance} | ${r.prompt === 'empty' ? "''" : 'real'} | ${r.steps} | ` +
      `${r.zT.toExponential(1)} | ${r.z0.toExponential(1)} |`);
  }
  return lines.join('\n');
}

module.exports = { compareWithDiffusers, relativeDifference };

if (require.main === module) {
  compareWithDiffusers().then(
    (rows) => console.log(process.argv.includes('--json') ? JSON.stringify(rows, null, 1) : table(rows)),
    (error) => {
      console.error(error.message);
      process.exit(1);
    },
  );
}
