#!/usr/bin/env node
// Seconds and UNet calls of each inversion method on an analytic bundle, and the ratios to DDIM inversion.
// Rounds alternate between the methods so that machine noise hits all of them. Usage: npm run bench:inversion
'use strict';
const path = require('path');
const { invert, loadModel, methodNames, Tensor } = require('..');

const steps = 50, rounds = 15;
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

(async () => {
  const model = await loadModel(path.join(__dirname, '..', 'weights', 'analytic-mixture'));
  const z0 = await Tensor.randn([1, 4, 8, 8], { seed: 0 });
  const seconds = Object.fromEntries(methodNames.map((m) => [m, []]));
  const calls = {};
  for (let round = 0; round < rounds + 1; round++) {
    for (const method of methodNames) {
      const result = await invert(model, z0, { method, steps });
      if (round > 0) seconds[method].push(result.seconds); // round 0 warms up
      calls[method] = result.unetCalls;
      result.dispose();
    }
  }
  const ddim = median(seconds.ddim);
  console.log(`analytic-mixture, ${steps} steps, batch 1, median of ${rounds} rounds`);
  console.log('method        seconds   UNet calls   time / DDIM');
  for (const method of methodNames) {
    const time = median(seconds[method]);
    console.log(`${method.padEnd(12)} ${time.toFixed(4).padStart(8)}   ${String(calls[method]).padStart(10)}   ${(time / ddim).toFixed(3).padStart(11)}`);
  }
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
