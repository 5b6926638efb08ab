import { spawnSync } from 'child_process';
import * as path from 'path';

import { loadLpips, lpips, readImage, Tensor } from '../src';
import type { Module } from '../src';

// weights/test-lpips/lpips.pt: LPIPS's structure with small random weights (test/python/make_test_lpips.py), wrapped
// as tools/export_lpips.py wraps the real network; not a perceptual metric, but the same contract.
const root = path.join(__dirname, '..');
const photos = ['astronaut', 'chelsea', 'coffee'];
const python = '/usr/bin/python3';

describe('lpips', () => {
  let net: Module;
  const images: Record<string, Tensor> = {};

  beforeAll(async () => {
    net = await loadLpips(path.join(root, 'weights', 'test-lpips', 'lpips.pt'), { device: 'cpu', dtype: 'float32' });
    for (const name of photos) {
      images[name] = await readImage(path.join(root, 'weights', 'photos', `${name}.png`), { size: 128 });
    }
  });

  afterAll(() => {
    net.dispose();
    Object.values(images).forEach((t) => t.dispose());
  });

  test.each(photos)('%s: LPIPS(x, x) = 0', async (name) => {
    expect(images[name].shape).toEqual([1, 3, 128, 128]);
    const distances = await lpips(images[name], images[name], net);
    expect(distances).toHaveLength(1);
    expect(Math.abs(distances[0])).toBeLessThan(1e-6);
  });

  test('symmetric, and positive between different photos', async () => {
    for (const [a, b] of [['astronaut', 'chelsea'], ['chelsea', 'coffee'], ['coffee', 'astronaut']]) {
      const [ab] = await lpips(images[a], images[b], net);
      const [ba] = await lpips(images[b], images[a], net);
      expect(ab).toBeGreaterThan(0);
      expect(Math.abs(ab - ba)).toBeLessThan(1e-6);
    }
  });

  test.each(photos)('%s: grows with the strength of Gaussian noise', async (name) => {
    const x = images[name];
    const noise = await Tensor.randn(x.shape, { seed: 1234 });
    const distances: number[] = [];
    for (const std of [0.02, 0.05, 0.1, 0.2]) {
      const noisy = await Tensor.weightedSum([x, noise], [1, std]);
      const clamped = await noisy.clamp(0, 1);
      distances.push((await lpips(x, clamped, net))[0]);
      noisy.dispose();
      clamped.dispose();
    }
    noise.dispose();
    expect(distances[0]).toBeGreaterThan(0);
    for (let i = 1; i < distances.length; i++) expect(distances[i]).toBeGreaterThan(distances[i - 1]);
  });

  test('a batch gives one value per image, equal to the one-by-one values', async () => {
    const noise = await Tensor.randn([1, 3, 128, 128], { seed: 99 });
    const others = await Promise.all(photos.map(async (name) => {
      const noisy = await Tensor.weightedSum([images[name], noise], [1, 0.1]);
      const clamped = await noisy.clamp(0, 1);
      noisy.dispose();
      return clamped;
    }));
    const a = await Tensor.cat(photos.map((name) => images[name]));
    const b = await Tensor.cat(others);
    expect(a.shape).toEqual([3, 3, 128, 128]);
    const batched = await lpips(a, b, net);
    expect(batched).toHaveLength(3);
    const [a0, a1, a2] = await a.split([1, 1, 1]);
    const [b0, b1, b2] = await b.split([1, 1, 1]);
    const single = [(await lpips(a0, b0, net))[0], (await lpips(a1, b1, net))[0], (await lpips(a2, b2, net))[0]];
    for (let i = 0; i < 3; i++) {
      expect(single[i]).toBeGreaterThan(0);
      expect(Math.abs(batched[i] - single[i])).toBeLessThan(1e-6 * Math.max(1, Math.abs(single[i])));
      expect(Math.abs(batched[i] - (await lpips(images[photos[i]], others[i], net))[0])).toBeLessThan(1e-6);
    }
    [noise, a, b, a0, a1, a2, b0, b1, b2, ...others].forEach((t) => t.dispose());
  });

  const hasTorch = spawnSync(python, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
  (hasTorch ? test : test.skip)(
    hasTorch
      ? 'tools/test_export_lpips.py passes under /usr/bin/python3'
      : 'tools/test_export_lpips.py (skipped: /usr/bin/python3 cannot import torch)',
    () => {
      const run = spawnSync(python, ['-m', 'unittest', 'tools/test_export_lpips.py'], { cwd: root, encoding: 'utf8' });
      const output = `${run.stdout}${run.stderr}`;
      expect({ status: run.status, output }).toEqual({ status: 0, output: expect.stringMatching(/\nOK\b/) });
    },
  );
});
