#!/usr/bin/env node
// The cost of one small forward through the addon from JS, against the same forward in a C++ loop without Node and,
// where python3 has torch, in a PyTorch loop. Rounds alternate between the three so that machine noise hits all.
// Usage: npm run bench:overhead [-- --side 32 --iterations 300 --rounds 5]
'use strict';
const { execFileSync, spawnSync } = require('child_process');
const path = require('path');
const { loadModule, Tensor } = require('..');

const root = path.join(__dirname, '..');
const option = (name, fallback) => {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
};
const side = option('side', 32), iterations = option('iterations', 300), rounds = option('rounds', 5);
const warmup = 30, condDim = 32;
const modulePath = path.join(root, 'weights', 'test', 'conv_unet.pt');

async function addonLoop(unet, inputs) {
  for (let i = 0; i < warmup; i++) (await unet.forward(...inputs)).dispose();
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) (await unet.forward(...inputs)).dispose();
  return Number(process.hrtime.bigint() - start) / 1e3 / iterations;
}

function externalLoop(command, args) {
  const out = execFileSync(command, [...args, modulePath, iterations, warmup, side, condDim].map(String), { encoding: 'utf8' });
  return JSON.parse(out).microsecondsPerCall;
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

(async () => {
  const built = spawnSync('cmake', ['--build', path.join(root, 'build'), '--target', 'forward_loop'], { stdio: 'inherit' });
  if (built.status !== 0) throw new Error('could not build the C++ loop (run npm install first)');
  const cppLoop = path.join(root, 'build', 'forward_loop');
  const python = ['python3', '/usr/bin/python3'].find((candidate) => spawnSync(candidate, ['-c', 'import torch']).status === 0);
  const hasPython = python !== undefined;

  const unet = await loadModule(modulePath);
  const inputs = [
    await Tensor.randn([1, 4, side, side], { seed: 0 }),
    Tensor.fromArray([500], [1], { dtype: 'int64' }),
    await Tensor.randn([1, 77, condDim], { seed: 1 }),
  ];
  const times = { addon: [], cpp: [], python: [] };
  for (let round = 0; round < rounds; round++) {
    times.addon.push(await addonLoop(unet, inputs));
    times.cpp.push(externalLoop(cppLoop, []));
    if (hasPython) times.python.push(externalLoop(python, [path.join(__dirname, 'forward_loop.py')]));
  }
  const addon = median(times.addon), cpp = median(times.cpp);
  console.log(`forward of conv_unet at [1, 4, ${side}, ${side}], ${iterations} calls x ${rounds} rounds (median)`);
  console.log(`  addon from JS : ${addon.toFixed(1)} us/call`);
  console.log(`  C++ loop      : ${cpp.toFixed(1)} us/call   addon / C++ = ${(addon / cpp).toFixed(3)}`);
  if (hasPython) {
    const python = median(times.python);
    console.log(`  Python loop   : ${python.toFixed(1)} us/call   addon / Python = ${(addon / python).toFixed(3)}`);
  } else {
    console.log('  Python loop   : skipped (python3 has no torch)');
  }
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
