#!/usr/bin/env node
// node bench/compiled.js TORCHSCRIPT_BUNDLE COMPILED_BUNDLE [--rounds 9] [--forwards 10] [--steps 50] [--json]: a
// bundle's TorchScript files against its compiled .pt2 twin (test/python/make_pt2_bundles.py, tools/export_sd.py
// --format pt2) on the CPU, in one process, rounds interleaved with the order alternating: the UNet's forward at
// batch 1 and 2 (the mean of --forwards), and DDIM and EasyInv inversions of --steps steps; medians, spreads, the
// ratio, and how far apart their outputs and z_T are. Needs the addon built
// against the PyTorch that compiled the packages (LIBTORCH_USE_PYTORCH=1) and `npm run build`.
'use strict';
const { invert, loadModel, retainFreedMemory, Tensor } = require('../dist');
const { median } = require('../dist/statistics');

const args = process.argv.slice(2);
const flag = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const [torchscriptDir, compiledDir] = args.filter((arg, i) => !arg.startsWith('--') && !args[i - 1]?.startsWith('--'));
const rounds = Number(flag('--rounds', 9));
const forwards = Number(flag('--forwards', 10));
const steps = Number(flag('--steps', 50));

async function unetInputs(model, batch) {
  const { channels, size } = model.manifest.latent;
  const latents = await Tensor.randn([batch, channels, size, size], { seed: batch });
  const prompt = model.manifest.files.text_encoder ? 'a photo of a cat' : ''; // UNet-only bundles condition on zeros
  const condition = await model.condition(prompt, '', batch, 1);
  const timesteps = model.timesteps(500, batch, condition);
  return { latents, condition, timesteps, dispose: () => [latents, timesteps, condition.states].forEach((t) => t.dispose()) };
}

async function timeForwards(model, inputs) {
  const started = performance.now();
  for (let i = 0; i < forwards; i++) (await model.denoise(inputs.latents, inputs.timesteps, inputs.condition)).dispose();
  return (performance.now() - started) / forwards / 1000;
}

async function maxDifference(a, b) {
  const [x, y] = [await a.toArray(), await b.toArray()];
  return x.reduce((max, v, i) => Math.max(max, Math.abs(v - y[i])), 0);
}

async function main() {
  if (!torchscriptDir || !compiledDir) throw new Error('usage: node bench/compiled.js TORCHSCRIPT_BUNDLE COMPILED_BUNDLE [--rounds N] [--forwards N] [--steps N] [--json]');
  retainFreedMemory(); // as the CLI: a full-size UNet's forwards would fault their activations in afresh each time
  const models = { torchscript: await loadModel(torchscriptDir), compiled: await loadModel(compiledDir) };
  const kinds = Object.keys(models);
  const rows = [];
  for (const batch of [1, 2]) {
    const inputs = Object.fromEntries(await Promise.all(kinds.map(async (k) => [k, await unetInputs(models[k], batch)])));
    const outputs = await Promise.all(kinds.map((k) => models[k].denoise(inputs[k].latents, inputs[k].timesteps, inputs[k].condition)));
    const difference = await maxDifference(outputs[0], outputs[1]);
    outputs.forEach((o) => o.dispose());
    for (const k of kinds) await timeForwards(models[k], inputs[k]); // warm-up
    const seconds = { torchscript: [], compiled: [] };
    for (let round = 0; round < rounds; round++) {
      for (const k of round % 2 ? [...kinds].reverse() : kinds) seconds[k].push(await timeForwards(models[k], inputs[k]));
    }
    rows.push({ what: `UNet forward, batch ${batch}`, seconds, difference });
    kinds.forEach((k) => inputs[k].dispose());
  }
  const { channels, size } = models.torchscript.manifest.latent;
  const z0 = await Tensor.randn([1, channels, size, size], { seed: 7 });
  for (const method of ['ddim', 'easyinv']) {
    const options = { method, steps };
    const results = await Promise.all(kinds.map((k) => invert(models[k], z0, options)));
    const difference = await maxDifference(results[0].latent, results[1].latent);
    results.forEach((r) => r.dispose());
    const seconds = { torchscript: [], compiled: [] };
    for (let round = 0; round < Math.ceil(rounds / 2); round++) {
      for (const k of round % 2 ? [...kinds].reverse() : kinds) {
        const result = await invert(models[k], z0, options);
        seconds[k].push(result.seconds);
        result.dispose();
      }
    }
    rows.push({ what: `${method} inversion, ${steps} steps`, seconds, difference });
  }
  z0.dispose();
  kinds.forEach((k) => models[k].dispose());

  if (args.includes('--json')) {
    console.log(JSON.stringify(rows, null, 1));
    return;
  }
  const ms = (s) => (s * 1000).toFixed(s < 0.1 ? 2 : 1);
  console.log(`${torchscriptDir} (TorchScript) against ${compiledDir} (.pt2), ${rounds} rounds, medians (min - max):\n`);
  console.log('| | TorchScript ms | .pt2 ms | .pt2 / TorchScript | max abs difference |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const { what, seconds, difference } of rows) {
    const [t, c] = [median(seconds.torchscript), median(seconds.compiled)];
    const spread = (values) => `${ms(Math.min(...values))} - ${ms(Math.max(...values))}`;
    console.log(`| ${what} | ${ms(t)} (${spread(seconds.torchscript)}) | ${ms(c)} (${spread(seconds.compiled)}) | ${(c / t).toFixed(2)} | ${difference.toExponential(1)} |`);
  }
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
