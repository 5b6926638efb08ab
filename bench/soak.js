#!/usr/bin/env node
// Leak check: 1,000 forwards and 100,000 small tensor ops, each result disposed; RSS at start and end.
// Exits 1 when RSS grew by 5% or more. Run with: npm run soak
'use strict';
const path = require('path');
const { loadModule, Tensor } = require('..');

const forwards = 1000, ops = 100000, limit = 0.05;
const rssMiB = () => {
  global.gc?.();
  return process.memoryUsage().rss / 2 ** 20;
};

async function work(unet, inputs, x, y, forwardCount, opCount) {
  for (let i = 0; i < forwardCount; i++) (await unet.forward(...inputs)).dispose();
  for (let i = 0; i < opCount; i++) {
    const sum = await Tensor.weightedSum([x, y], [0.5, i % 7]);
    const small = Tensor.fromArray([i, 1, 2, 3], [4]);
    const blended = await sum.lerp(small, 0.25);
    sum.dispose();
    small.dispose();
    blended.dispose();
    i += 2; // three ops per round
  }
}

(async () => {
  const unet = await loadModule(path.join(__dirname, '..', 'weights', 'test', 'conv_unet.pt'));
  const inputs = [
    await Tensor.randn([1, 4, 16, 16], { seed: 0 }),
    Tensor.fromArray([500], [1], { dtype: 'int64' }),
    await Tensor.randn([1, 77, 32], { seed: 1 }),
  ];
  const x = Tensor.fromArray([1, 2, 3, 4], [4]);
  const y = Tensor.fromArray([4, 3, 2, 1], [4]);
  await work(unet, inputs, x, y, 50, 3000); // warm the allocators and the JIT before the first reading
  const start = rssMiB();
  const started = Date.now();
  await work(unet, inputs, x, y, forwards, ops);
  const end = rssMiB();
  const growth = (end - start) / start;
  console.log(`${forwards} forwards and ${ops} tensor ops in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  console.log(`RSS start ${start.toFixed(1)} MiB, end ${end.toFixed(1)} MiB, growth ${(growth * 100).toFixed(2)}% (limit ${limit * 100}%)`);
  process.exit(growth < limit ? 0 : 1);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
