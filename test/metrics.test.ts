import * as path from 'path';
import sharp from 'sharp';

import { imageTensor } from '../src/image';
import { psnr, ssim, Tensor } from '../src';

const reference: Record<string, { psnr: number; ssim: number }> = require('./fixtures/reference-metrics.json');

async function photoPixels(name: string) {
  const { data, info } = await sharp(path.join(__dirname, '..', 'weights', 'photos', `${name}.png`))
    .removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { pixels: new Uint8Array(data), width: info.width, height: info.height };
}

// The same exact integer degradations as test/python/reference_metrics.py.
function degrade(pixels: Uint8Array, width: number, height: number, kind: string): Uint8Array {
  const out = new Uint8Array(pixels.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        const i = (y * width + x) * 3 + c;
        if (kind === 'bits4') out[i] = pixels[i] & 0xf0;
        else if (kind === 'shift2') out[i] = pixels[(y * width + ((x - 2 + width) % width)) * 3 + c];
        else out[i] = pixels[i] ^ ((i * 7919) % 64);
      }
    }
  }
  return out;
}

describe('metrics', () => {
  test.each(Object.keys(reference))('%s: PSNR and SSIM agree with scikit-image to 1e-4', async (key) => {
    const [name, kind] = key.split('/');
    const { pixels, width, height } = await photoPixels(name);
    const original = imageTensor(pixels, width, height);
    const degraded = imageTensor(degrade(pixels, width, height, kind), width, height);
    const [p] = await psnr(original, degraded);
    const [s] = await ssim(original, degraded);
    expect(Math.abs(p - reference[key].psnr)).toBeLessThan(1e-4);
    expect(Math.abs(s - reference[key].ssim)).toBeLessThan(1e-4);
  });

  test('one value per image of a batch, and identical images score SSIM 1 and PSNR infinity', async () => {
    const a = await Tensor.randn([3, 3, 32, 32], { seed: 1 });
    const b = await Tensor.randn([3, 3, 32, 32], { seed: 2 });
    const scores = await ssim(a, b);
    expect(scores).toHaveLength(3);
    const [first] = await a.split([1, 2]);
    const [other] = await b.split([1, 2]);
    expect((await ssim(first, other))[0]).toBeCloseTo(scores[0], 12);
    expect((await ssim(a, a)).every((v) => Math.abs(v - 1) < 1e-12)).toBe(true);
    expect(await psnr(a, a)).toEqual([Infinity, Infinity, Infinity]);
  });

  test('bad input is a clear error', () => {
    const image = Tensor.fromArray(new Float32Array(3 * 16 * 16), [1, 3, 16, 16]);
    expect(() => psnr(image, Tensor.fromArray(new Float32Array(3 * 8 * 8), [1, 3, 8, 8]))).toThrow('psnr needs two image tensors of the same shape');
    const tiny = Tensor.fromArray(new Float32Array(3 * 8 * 8), [1, 3, 8, 8]);
    expect(() => ssim(tiny, tiny)).toThrow('ssim needs images of at least 11x11 pixels');
  });
});
