import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp, { type Sharp } from 'sharp';

import { ddimWeights, imageBytes, invert, loadModel, methodNames, Model, readImage, reconstruct, Tensor, writeImage } from '../src';
import { maxAbsDifference } from './helpers';

const weights = path.join(__dirname, '..', 'weights');
const photo = path.join(weights, 'photos', 'coffee.png');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-sd-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

describe.each([
  ['test-sd1', 256, 32, 32, undefined],
  ['test-sdxl', 128, 16, 40, 12],
])('%s end to end', (bundle, resolution, latentSize, condWidth, pooledWidth) => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(path.join(weights, bundle));
  });

  test('image -> latent -> each method -> reconstruction -> PNG', async () => {
    const z0 = await model.encodeImage(photo);
    expect(z0.shape).toEqual([1, 4, latentSize, latentSize]);
    const vaeImage = await model.decode(z0);
    for (const method of methodNames) {
      const inverted = await invert(model, z0, { method, steps: 5, prompt: 'a cup of coffee' });
      expect(inverted.latent.shape).toEqual(z0.shape);
      expect(Number.isFinite(await inverted.latent.norm())).toBe(true);
      const latent = await reconstruct(model, inverted.latent, { steps: 5, prompt: 'a cup of coffee', offsets: inverted.offsets });
      const image = await model.decode(latent);
      expect(image.shape).toEqual([1, 3, resolution, resolution]);
      // direct's offsets bring the reconstruction back to z0 itself, so its picture is the VAE's own of the photo
      if (method === 'direct') expect(maxAbsDifference(await image.toArray(), await vaeImage.toArray())).toBeLessThan(1e-4);
      const file = path.join(scratch, `${bundle}-${method}.png`);
      await writeImage(image, file);
      expect(await sharp(file).metadata()).toMatchObject({ format: 'png', width: resolution, height: resolution, channels: 3 });
    }
  });

  test('a fused step (UNet, guidance, DDIM combination in one job) equals the formula over plain forwards', async () => {
    const z0 = await model.encodeImage(photo);
    const guidance = 7.5;
    const condition = await model.condition('a cup of coffee', '', 1, guidance);
    const rows = (tensor: Tensor) => tensor.split([1, 1]);
    const [uncondStates, condStates] = await rows(condition.states);
    const extra = condition.textEmbeds && condition.timeIds ? [await rows(condition.textEmbeds), await rows(condition.timeIds)] : [];
    const timestep = 501;
    const t = Tensor.fromArray(new BigInt64Array([BigInt(timestep)]), [1]);
    const epsU = (await model.unet.forward(z0, t, uncondStates, ...extra.map((pair) => pair[0]))) as Tensor;
    const epsC = (await model.unet.forward(z0, t, condStates, ...extra.map((pair) => pair[1]))) as Tensor;
    const [u, c] = [await epsU.toArray(), await epsC.toArray()];
    const z = await z0.toArray();
    const [a, b] = ddimWeights(0.9, 0.3);
    const reference = Array.from(z, (zi, i) => a * zi + b * (u[i] + guidance * (c[i] - u[i])));
    const timesteps = model.timesteps(timestep, 1, condition);
    const step = await model.denoise(z0, timesteps, condition, [a, b]);
    const eps = await model.predictNoise(z0, timestep, condition);
    // float32 on the batched forward against two single ones: rounding only
    expect(maxAbsDifference(await step.toArray(), reference)).toBeLessThan(1e-4);
    expect(maxAbsDifference(await eps.toArray(), Array.from(u, (ui, i) => ui + guidance * (c[i] - ui)))).toBeLessThan(1e-4);
    expect(maxAbsDifference(Array.from(c), Array.from(u))).toBeGreaterThan(1e-3); // the prompt changes the noise
    await expect(model.denoise(z0, t, condition)).rejects.toThrow(/timesteps \[2B\] \(2 rows\), not \[1, 4, \d+, \d+\] and \[1\]/);
    await expect(model.unet.denoise(z0, timesteps, [condition.states], guidance, [1] as never)).rejects.toThrow(/weights must be \[a, b\]/);
    [z0, uncondStates, condStates, ...extra.flat(), t, epsU, epsC, timesteps, step, eps, condition.states,
      condition.textEmbeds, condition.timeIds].forEach((tensor) => tensor?.dispose());
  });

  test('channels_last (NHWC) weights and inputs give the same inversion and reconstruction', async () => {
    const nhwc = await loadModel(path.join(weights, bundle), { channelsLast: true });
    expect([nhwc.unet.channelsLast, model.unet.channelsLast]).toEqual([true, false]);
    const z0 = await model.encodeImage(photo);
    const z0Nhwc = await nhwc.encodeImage(photo);
    expect(maxAbsDifference(await z0Nhwc.toArray(), await z0.toArray())).toBeLessThan(1e-4);
    for (const method of ['ddim', 'easyinv'] as const) {
      const plain = await invert(model, z0, { method, steps: 5, prompt: 'a cup of coffee', guidance: 3 });
      const other = await invert(nhwc, z0, { method, steps: 5, prompt: 'a cup of coffee', guidance: 3 });
      expect(maxAbsDifference(await other.latent.toArray(), await plain.latent.toArray())).toBeLessThan(1e-4);
      const back = await reconstruct(nhwc, other.latent, { steps: 5 });
      const backPlain = await reconstruct(model, plain.latent, { steps: 5 });
      expect(maxAbsDifference(await back.toArray(), await backPlain.toArray())).toBeLessThan(1e-4);
      [plain, other].forEach((r) => r.dispose());
      [back, backPlain].forEach((t) => t.dispose());
    }
    nhwc.dispose();
    await expect(loadModel(path.join(weights, bundle), { channelsLast: 'yes' as never })).rejects.toThrow(/channelsLast must be true or false/);
  });

  test('prompts: the text encoders\' shapes, and different prompts give different conditions', async () => {
    const cat = await model.encodePrompt('a photo of a cat');
    const again = await model.encodePrompt('a photo of a cat');
    const dog = await model.encodePrompt('a photo of a dog');
    expect(cat.states.shape).toEqual([1, 77, condWidth]);
    expect(cat.pooled?.shape).toEqual(pooledWidth ? [1, pooledWidth] : undefined);
    expect(maxAbsDifference(await cat.states.toArray(), await again.states.toArray())).toBe(0);
    expect(maxAbsDifference(await cat.states.toArray(), await dog.states.toArray())).toBeGreaterThan(1e-3);
  });

  test('guidance 7.5 makes one batched UNet call per step with every conditioning input', async () => {
    const z0 = await model.encodeImage(photo);
    const denoise = model.unet.denoise.bind(model.unet);
    const calls: { shapes: number[][]; guidance: number; states: Promise<ArrayLike<number>>; timeIds?: Promise<ArrayLike<number>> }[] = [];
    const spy = jest.spyOn(model.unet, 'denoise').mockImplementation((latents, timesteps, conditioning, guidance, weights) => {
      calls.push({
        shapes: [latents, timesteps, ...conditioning].map((t) => t.shape), guidance,
        states: conditioning[0].toArray(), timeIds: conditioning[2]?.toArray(),
      });
      return denoise(latents, timesteps, conditioning, guidance, weights);
    });
    const inverted = await invert(model, z0, { method: 'ddim', steps: 4, prompt: 'a cup of coffee', guidance: 7.5 });
    spy.mockRestore();
    expect(inverted.unetCalls).toBe(4);
    expect(calls).toHaveLength(4);
    // the latents go once; the UNet's batch, the timesteps and the conditioning have the rows [uncond; cond]
    const expected = [[1, 4, latentSize, latentSize], [2], [2, 77, condWidth]];
    if (pooledWidth) expected.push([2, pooledWidth], [2, 6]);
    expect(calls[0].shapes).toEqual(expected);
    expect(calls[0].guidance).toBe(7.5);
    const states = await calls[0].states;
    const half = 77 * condWidth;
    const uncondMagnitude = Array.from(states).slice(0, half).reduce((s, v) => s + Math.abs(v), 0);
    if (pooledWidth) {
      // SDXL, as diffusers: an empty negative prompt is zeros, and time_ids are (original, crop, target) sizes
      expect(uncondMagnitude).toBe(0);
      expect(Array.from(await calls[0].timeIds!)).toEqual([resolution, resolution, 0, 0, resolution, resolution,
        resolution, resolution, 0, 0, resolution, resolution]);
    } else {
      expect(uncondMagnitude).toBeGreaterThan(0); // SD-1 encodes the empty negative prompt
    }
    const unguided = await invert(model, z0, { method: 'ddim', steps: 4, prompt: 'a cup of coffee' });
    expect(maxAbsDifference(await inverted.latent.toArray(), await unguided.latent.toArray())).toBeGreaterThan(1e-4);
  });

  test('an image Tensor in [-1, 1] encodes as its file does', async () => {
    const pixels = await readImage(photo, { size: resolution });
    const fromTensor = await model.encodeImage(await pixels.affine(2, -1));
    const fromFile = await model.encodeImage(photo);
    expect(maxAbsDifference(await fromTensor.toArray(), await fromFile.toArray())).toBeLessThan(1e-6);
    await expect(model.encodeImage(pixels.affine(1, 0) as never)).rejects.toThrow(/an image Tensor for this model has shape/);
  });
});

describe('images in', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(path.join(weights, 'test-sdxl'));
  });

  test('images come from Buffers as from files, and go out as PNG, JPEG or WebP by extension or to bytes', async () => {
    const bytes = fs.readFileSync(photo);
    const fromFile = await model.encodeImage(photo);
    const fromBytes = await model.encodeImage(bytes);
    const fromView = await model.encodeImage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    expect(await fromBytes.toArray()).toEqual(await fromFile.toArray());
    expect(await fromView.toArray()).toEqual(await fromFile.toArray());
    const image = await readImage(bytes, { size: 64 });
    for (const [file, format] of [['out.jpg', 'jpeg'], ['out.JPEG', 'jpeg'], ['out.webp', 'webp'], ['out.png', 'png']]) {
      await writeImage(image, path.join(scratch, file));
      expect((await sharp(path.join(scratch, file)).metadata()).format).toBe(format);
    }
    expect((await sharp(await imageBytes(image, 'webp')).metadata()).format).toBe('webp');
    // A PNG decodes to the very pixels written; a JPEG at quality 95 to nearly them.
    const back = await readImage(await imageBytes(image));
    expect(maxAbsDifference(await back.toArray(), await image.toArray())).toBeLessThan(1 / 255 / 2 + 1e-6);
    const jpeg = await readImage(fs.readFileSync(path.join(scratch, 'out.jpg')));
    expect(maxAbsDifference(await jpeg.toArray(), await image.toArray())).toBeLessThan(0.25);
    await expect(writeImage(image, path.join(scratch, 'out.bmp'))).rejects.toThrow(/cannot tell the image format of .*out.bmp/);
    await expect(readImage(Buffer.from('not an image'))).rejects.toThrow(/cannot read image <12 bytes in memory>/);
    await expect(readImage(42 as never)).rejects.toThrow(/an image is a file path, a Buffer or a Uint8Array/);
  });

  test('PNG, JPEG and WebP, grey and with alpha, all become RGB at the bundle\'s resolution', async () => {
    const png = await readImage(photo, { size: 64 });
    for (const [name, make] of [
      ['photo.jpg', (s: Sharp) => s.jpeg({ quality: 95 })],
      ['photo.webp', (s: Sharp) => s.webp({ quality: 95 })],
      ['alpha.png', (s: Sharp) => s.ensureAlpha(0.5).png()],
      ['grey.png', (s: Sharp) => s.greyscale().png()],
    ] as const) {
      const file = path.join(scratch, name);
      await make(sharp(photo)).toFile(file);
      const image = await readImage(file, { size: 64 });
      expect(image.shape).toEqual([1, 3, 64, 64]);
      const difference = maxAbsDifference(await image.toArray(), await png.toArray());
      if (name === 'grey.png') {
        const values = await image.toArray();
        expect(maxAbsDifference(values.slice(0, 4096), values.slice(4096, 8192))).toBe(0); // R = G
      } else {
        expect(difference).toBeLessThan(0.25);
      }
      expect((await model.encodeImage(file)).shape).toEqual([1, 4, 16, 16]);
    }
  });

  test('fit cover crops to the centre square, fill stretches', async () => {
    const fill = await readImage(photo, { size: 64, fit: 'fill' });
    const cover = await readImage(photo, { size: 64, fit: 'cover' });
    expect(maxAbsDifference(await fill.toArray(), await cover.toArray())).toBeGreaterThan(0.1);
    const square = path.join(weights, 'photos', 'astronaut.png');
    const a = await readImage(square, { size: 64, fit: 'fill' });
    const b = await readImage(square, { size: 64, fit: 'cover' });
    expect(maxAbsDifference(await a.toArray(), await b.toArray())).toBe(0);
  });
});
