import * as path from 'path';

import { addon } from '../src/native';
import { invert, liveTensors, loadModel, methodNames, Model, reconstruct, Tensor, type InvertOptions } from '../src';
import { maxAbsDifference, relativeError, settledLiveTensors } from './helpers';

const reference = require('./fixtures/reference-inversion.json');
const bundle = (name: string) => path.join(__dirname, '..', 'weights', name);
const noRegularization = { regularization: false } as const;
/** Options with `rounds` refinements (fixed-point) or renoising iterations (renoise), for any method. */
const rounds = (method: string, count: number) =>
  (method === 'fixed-point' ? { refinements: count } : method === 'renoise' ? { iterations: count } : {});

describe.each(['analytic-gaussian', 'analytic-mixture'])('inversion on %s', (name) => {
  let model: Model;
  let z0: Tensor;
  const fixture = reference.bundles[name];

  beforeAll(async () => {
    model = await loadModel(bundle(name));
    z0 = Tensor.fromArray(fixture.z0, fixture.shape);
  });

  test.each(Object.keys(fixture.cases))('%s matches the independent Python reference to 1e-5', async (label) => {
    const { steps, options, latent, reconstruction } = fixture.cases[label];
    const inverted = await invert(model, z0, { ...options, steps });
    expect(maxAbsDifference(await inverted.latent.toArray(), latent)).toBeLessThan(1e-5);
    const back = await reconstruct(model, inverted.latent, { steps, offsets: inverted.offsets });
    expect(maxAbsDifference(await back.toArray(), reconstruction)).toBeLessThan(1e-5);
  });

  test('DDIM reconstruction error falls as N grows (10, 20, 50, 100)', async () => {
    const errors: number[] = [];
    for (const steps of [10, 20, 50, 100]) {
      const inverted = await invert(model, z0, { method: 'ddim', steps });
      errors.push(await relativeError(await reconstruct(model, inverted.latent, { steps }), z0));
    }
    for (let i = 1; i < errors.length; i++) expect(errors[i]).toBeLessThan(errors[i - 1]);
    expect(errors[3]).toBeLessThan(errors[0] / 3);
  });

  test('fixed-point at N = 20 beats DDIM at N = 20 by a clear factor', async () => {
    const error = async (method: 'ddim' | 'fixed-point') => {
      const inverted = await invert(model, z0, { method, steps: 20 });
      return relativeError(await reconstruct(model, inverted.latent, { steps: 20 }), z0);
    };
    expect(await error('fixed-point')).toBeLessThan((await error('ddim')) / 10);
  });

  test('renoise reconstructs better than DDIM at the same N', async () => {
    const error = async (options: InvertOptions) => {
      const inverted = await invert(model, z0, { steps: 20, ...options });
      return relativeError(await reconstruct(model, inverted.latent, { steps: 20 }), z0);
    };
    expect(await error({ method: 'renoise', ...noRegularization })).toBeLessThan((await error({ method: 'ddim' })) / 5);
  });

  test('direct reconstructs exactly (within 1e-4 relative) with its stored offsets', async () => {
    const inverted = await invert(model, z0, { method: 'direct', steps: 50 });
    expect(inverted.offsets).toHaveLength(50);
    expect(inverted.unetCalls).toBe(100);
    const back = await reconstruct(model, inverted.latent, { steps: 50, offsets: inverted.offsets });
    expect(await relativeError(back, z0)).toBeLessThan(1e-4);
    const withoutOffsets = await reconstruct(model, inverted.latent, { steps: 50 });
    expect(await relativeError(withoutOffsets, z0)).toBeGreaterThan(1e-3);
  });
});

describe('inversion behaviour', () => {
  let model: Model;
  let z0: Tensor;
  beforeAll(async () => {
    model = await loadModel(bundle('analytic-mixture'));
    const fixture = reference.bundles['analytic-mixture'];
    z0 = Tensor.fromArray(fixture.z0, fixture.shape);
  });

  test('EasyInv blends at exactly the window steps i = 3..12 at N = 50 and makes N UNet calls', async () => {
    const latents: Float32Array[] = [];
    const inverted = await invert(model, z0, {
      method: 'easyinv', steps: 50, eta: 0,
      onProgress: async ({ latent }) => void latents.push((await latent.toArray()) as Float32Array),
    });
    expect(inverted.unetCalls).toBe(50);
    expect(latents).toHaveLength(50);
    // with eta = 0 a blended step keeps the latent it started from, bit for bit
    const unchanged = latents.flatMap((latent, i) => (i > 0 && maxAbsDifference(latent, latents[i - 1]) === 0 ? [i] : []));
    expect(unchanged).toEqual([3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  });

  test('EasyInv with eta = 1 is DDIM inversion', async () => {
    const easy = await invert(model, z0, { method: 'easyinv', steps: 20, eta: 1 });
    const plain = await invert(model, z0, { method: 'ddim', steps: 20 });
    expect(maxAbsDifference(await easy.latent.toArray(), await plain.latent.toArray())).toBe(0);
  });

  test.each([
    [{ method: 'ddim', steps: 10 }, 10],
    [{ method: 'fixed-point', steps: 10, refinements: 3 }, 40],
    [{ method: 'renoise', steps: 10, iterations: 2, ...noRegularization }, 30],
    [{ method: 'renoise', steps: 10, iterations: 2 }, 40],
  ] as [InvertOptions, number][])('%j reports the UNet calls it really made', async (options, calls) => {
    const spy = jest.spyOn(model.unet, 'denoise');
    const inverted = await invert(model, z0, options);
    expect(inverted.unetCalls).toBe(spy.mock.calls.length);
    expect(inverted.unetCalls).toBe(calls);
    spy.mockRestore();
  });

  test('guidance 7.5 makes one batched UNet call per step on [uncond; cond]', async () => {
    const denoise = model.unet.denoise.bind(model.unet);
    const shapes: number[][][] = [];
    const spy = jest.spyOn(model.unet, 'denoise').mockImplementation((latents, timesteps, conditioning, guidance, weights) => {
      shapes.push([latents, timesteps, ...conditioning].map((input) => input.shape));
      return denoise(latents, timesteps, conditioning, guidance, weights);
    });
    const guided = await invert(model, z0, { method: 'ddim', steps: 10, guidance: 7.5 });
    spy.mockRestore();
    expect(guided.unetCalls).toBe(10);
    expect(shapes).toEqual(Array(10).fill([[2, 4, 8, 8], [4], [4, 77, 8]]));
    // the empty prompt's condition equals the unconditional one, so guidance cannot change the noise
    const plain = await invert(model, z0, { method: 'ddim', steps: 10 });
    expect(maxAbsDifference(await guided.latent.toArray(), await plain.latent.toArray())).toBeLessThan(1e-5);
  });

  test.each(methodNames)('%s: a batch of 4 equals four single runs', async (method) => {
    const batch = await Tensor.cat([z0, z0]);
    const inverted = await invert(model, batch, { method, steps: 10, ...rounds(method, 2) } as InvertOptions);
    expect(inverted.latent.shape).toEqual([4, 4, 8, 8]);
    const parts = await inverted.latent.split([1, 1, 1, 1]);
    const singles = await z0.split([1, 1]);
    for (let i = 0; i < 4; i++) {
      const single = await invert(model, singles[i % 2], { method, steps: 10, ...rounds(method, 2) } as InvertOptions);
      expect(maxAbsDifference(await parts[i].toArray(), await single.latent.toArray())).toBeLessThan(1e-5);
    }
  });

  test('progress has the same shape for every method and counts the steps', async () => {
    for (const method of methodNames) {
      const seen: unknown[] = [];
      await invert(model, z0, {
        method, steps: 4, ...(method === 'renoise' ? noRegularization : {}),
        onProgress: ({ latent, seconds, unetCalls, ...rest }) => {
          expect(latent.shape).toEqual([2, 4, 8, 8]);
          expect(seconds).toBeGreaterThanOrEqual(0);
          expect(unetCalls).toBeGreaterThan(0);
          seen.push(rest);
        },
      });
      expect(seen).toEqual([1, 2, 3, 4].map((step, i) => ({
        method, phase: 'invert', step, steps: 4, timestep: [1, 251, 501, 751][i],
      })));
    }
  });

  test('an abort mid-way rejects between steps and leaves no tensors behind', async () => {
    for (const method of methodNames) {
      const before = await settledLiveTensors();
      const controller = new AbortController();
      const run = invert(model, z0, {
        method, steps: 20, signal: controller.signal,
        onProgress: ({ step }) => void (step === 5 && controller.abort()),
      });
      await expect(run).rejects.toThrow(`easyinv: ${method} inversion aborted after 5 of 20 steps`);
      await expect(run).rejects.toMatchObject({ name: 'AbortError', cause: controller.signal.reason });
      expect(liveTensors()).toBe(before);
    }
  });

  test('a finished inversion and reconstruction leave only their results', async () => {
    const before = await settledLiveTensors();
    const inverted = await invert(model, z0, { method: 'direct', steps: 10 });
    expect(liveTensors()).toBe(before + 11);
    const back = await reconstruct(model, inverted.latent, { steps: 10, offsets: inverted.offsets });
    expect(liveTensors()).toBe(before + 12);
    inverted.dispose();
    back.dispose();
    expect(liveTensors()).toBe(before);
  });

  test('bad options are clear errors', async () => {
    await expect(invert(model, z0, { method: 'magic' as never })).rejects.toThrow(/^easyinv: method "magic" is unknown: use one of ddim, easyinv/);
    await expect(invert(model, z0, { steps: 0 })).rejects.toThrow('steps must be an integer >= 1, not 0');
    await expect(invert(model, z0, { eta: 1.5 })).rejects.toThrow('eta must be a number in [0, 1], not 1.5');
    await expect(invert(model, z0, { eta: -0.1 })).rejects.toThrow('eta must be a number in [0, 1]');
    await expect(invert(model, z0, { window: [0.1, 1.2] })).rejects.toThrow('window must be [start, end], fractions of the steps with 0 <= start <= end <= 1, not [0.1,1.2]');
    await expect(invert(model, z0, { window: [0.5, 0.2] })).rejects.toThrow('window must be [start, end], fractions of the steps with 0 <= start <= end <= 1, not [0.5,0.2]');
    await expect(invert(model, z0, { guidance: -1 })).rejects.toThrow('guidance must be a number >= 0, not -1');
    await expect(invert(model, z0, { method: 'fixed-point', refinements: -1 })).rejects.toThrow('refinements must be an integer >= 0');
    // Options are the method's own: another method's option is an error, not silently ignored.
    await expect(invert(model, z0, { method: 'ddim', eta: 0.5 } as never)).rejects.toThrow('eta is not an option of method ddim (its options: none)');
    await expect(invert(model, z0, { method: 'fixed-point', iterations: 3 } as never)).rejects.toThrow('iterations is not an option of method fixed-point (its options: refinements)');
    await expect(invert(model, z0, { eta: 0.5, seed: 1 } as never)).rejects.toThrow('seed is not an option of method easyinv (its options: eta, window, variant)');
    await expect(invert(model, z0, { variant: 'colab' as never })).rejects.toThrow('variant must be \'paper\' or \'notebook\', not "colab"');
    await expect(invert(model, z0, { timesteps: 'plms' as never })).rejects.toThrow('timesteps must be \'ddim\' or \'pndm\', not "plms"');
    await expect(reconstruct(model, z0, { timesteps: 'pndm' })).rejects.toThrow("timesteps 'pndm' is for invert only");
    await expect(invert(model, z0, { stepsOffset: -1 })).rejects.toThrow('stepsOffset must be an integer >= 0, not -1');
    await expect(invert(model, z0, { sizeCondition: 0 })).rejects.toThrow('sizeCondition must be an integer >= 1 (pixels), not 0');
    await expect(invert(model, z0, { sizeCondition: 512 })).rejects.toThrow('sizeCondition is for SDXL bundles only');
    await expect(invert(model, z0, { negativePrompt: 5 as never })).rejects.toThrow(new TypeError('easyinv: negativePrompt must be a string'));
    await expect(invert(model, {} as never)).rejects.toThrow('the latent must be a Tensor');
    await expect(invert(model, Tensor.fromArray(new Float32Array(16), [1, 4, 2, 2]))).rejects.toThrow('the latent must have shape [B, 4, 8, 8] for this model, not [1, 4, 2, 2]');
    await expect(invert(model, z0, { prompt: 'a cat' })).rejects.toThrow(/has no text encoder, so it takes no prompt/);
    await expect(reconstruct(model, z0, { steps: 10, offsets: [] })).rejects.toThrow('offsets has 0 entries but there are 10 steps');
    await expect(invert(null as never, z0)).rejects.toThrow('the first argument must be a Model (await loadModel(dir))');
    await expect(invert(model, z0, null as never)).rejects.toThrow('options must be an object, not null');
    await expect(reconstruct(model, z0, null as never)).rejects.toThrow('options must be an object, not null');
    await expect(invert(model, Tensor.fromArray(new Float32Array(0), [0, 4, 8, 8]))).rejects.toThrow('the latent must have shape [B, 4, 8, 8] for this model, not [0, 4, 8, 8]');
  });

  test('ReNoise\'s settings are refused under the names the caller gave them, nested ones with their path', async () => {
    const regularization = { lambdaAc: 20, lambdaKl: 0.065, steps: 4, rolls: 5 };
    const renoise = (options: object) => invert(model, z0, { method: 'renoise', steps: 2, ...options } as InvertOptions);
    const before = await settledLiveTensors();
    await expect(renoise({ regularization: { ...regularization, steps: -1 } }))
      .rejects.toThrow(/^easyinv: regularization\.steps must be an integer from 0 to 1000, not -1$/);
    await expect(renoise({ regularization: { ...regularization, steps: -1 } })).rejects.toMatchObject({ option: 'regularization.steps' });
    await expect(renoise({ regularization: { ...regularization, rolls: 0.5 } })).rejects.toThrow('regularization.rolls must be an integer from 0 to 1000, not 0.5');
    await expect(renoise({ regularization: { ...regularization, lambdaKl: Infinity } }))
      .rejects.toThrow('regularization.lambdaKl must be a finite number >= 0, not Infinity');
    await expect(renoise({ regularization: { ...regularization, lambdaAc: undefined } }))
      .rejects.toThrow('regularization.lambdaAc must be a finite number >= 0, not undefined');
    await expect(renoise({ regularization: 'on' })).rejects.toThrow(
      new TypeError('easyinv: regularization must be { lambdaAc, lambdaKl, steps, rolls } or false, not "on"'));
    await expect(renoise({ seed: -1 })).rejects.toThrow('seed must be an integer from 0 to 9007199254740991, not -1');
    await expect(renoise({ average: [2, 1] })).rejects.toThrow('average must be [from, to], integer iterations with from <= to, not [2,1]');
    expect(liveTensors()).toBe(before);
  });

  test('ReNoise\'s regularization diverging on small latents is an error that says why and what to change', async () => {
    const before = await settledLiveTensors();
    const noise = await Tensor.randn([2, 4, 8, 8], { seed: 3 });
    const regularization = { lambdaAc: 20, lambdaKl: 0.065, steps: 4, rolls: 5 }; // ReNoise's defaults
    await expect(invert(model, noise, { method: 'renoise', steps: 5 })).rejects.toThrow(
      /produced NaN values: ReNoise's noise regularization may have diverged: .* regularization\.lambdaAc 20 may be too large for 8 x 8 ones: give a smaller one, or regularization: false/);
    const smaller = await invert(model, noise, { method: 'renoise', steps: 5, regularization: { ...regularization, lambdaAc: 10 } });
    expect(Number.isFinite(await smaller.latent.mean())).toBe(true);
    smaller.dispose();
    noise.dispose();
    expect(await settledLiveTensors()).toBe(before);
  });

  test('inputs that would give a wrong answer without a word are errors', async () => {
    const before = await settledLiveTensors();
    await expect(invert(model, z0, { guidance: Infinity })).rejects.toThrow('guidance must be finite, not Infinity');
    // leading spacing with steps_offset 1: 1000 steps would evaluate the UNet at timestep 1000, past the schedule
    await expect(invert(model, z0, { steps: 1000 })).rejects.toThrow(
      'steps 1000 with steps_offset 1 (leading spacing) reaches timestep 1000, outside the schedule\'s 0..999: use at most 999 steps');
    const small = await Tensor.randn([1, 1, 8, 8], { seed: 1 });
    const offsets = [small, small];
    await expect(reconstruct(model, z0, { steps: 2, offsets })).rejects.toThrow(
      "offsets[0] has shape [1, 1, 8, 8]; each offset is a tensor of the latent's shape [2, 4, 8, 8]");
    small.dispose();
    const values = new Float32Array(512).fill(0.5);
    values[7] = NaN;
    const poisoned = Tensor.fromArray(values, [2, 4, 8, 8]);
    await expect(invert(model, poisoned, { method: 'ddim', steps: 4 })).rejects.toThrow(
      /^easyinv: the inversion \(ddim, 4 steps\) produced NaN values/);
    poisoned.dispose();
    expect(await settledLiveTensors()).toBe(before);
  });
});

describe('ReNoise noise regularisation', () => {
  const { shape, eps, target, result } = reference.regularization;
  const settings = { lambdaAc: 20, lambdaKl: 0.065, steps: 4, rolls: 5, seed: 0 };

  test('matches the ReNoise authors\' formulation run in PyTorch', async () => {
    const regular = await addon.regularizeNoise(Tensor.fromArray(eps, shape), Tensor.fromArray(target, shape), settings);
    expect(maxAbsDifference(await regular.toArray(), result)).toBeLessThan(1e-4);
  });

  test('it lowers the noise\'s correlation with its shifted self', async () => {
    const correlation = (values: ArrayLike<number>) => {
      let sum = 0;
      for (let i = 0; i < values.length; i++) sum += values[i] * values[i % 16 === 0 ? i + 15 : i - 1];
      return Math.abs(sum / values.length);
    };
    const regular = await addon.regularizeNoise(Tensor.fromArray(eps, shape), Tensor.fromArray(target, shape), settings);
    expect(correlation(await regular.toArray())).toBeLessThan(correlation(eps) / 2);
  });

  test('bad input is a clear error', async () => {
    expect(() => addon.regularizeNoise(Tensor.fromArray(eps, shape), Tensor.fromArray([1], [1]), settings)).toThrow(/same shape/);
    expect(() => addon.regularizeNoise(Tensor.fromArray(eps, shape), Tensor.fromArray(target, shape), { ...settings, steps: -1 }))
      .toThrow('regularizeNoise option steps must be an integer from 0 to 1000, not -1');
    for (const bad of [{ steps: Infinity }, { steps: 1e300 }, { seed: NaN }, { rolls: 0.5 }]) {
      expect(() => addon.regularizeNoise(Tensor.fromArray(eps, shape), Tensor.fromArray(target, shape), { ...settings, ...bad }))
        .toThrow(/regularizeNoise option \w+ must be an integer from 0 to/);
    }
    expect(() => addon.regularizeNoise(Tensor.fromArray(eps, shape), Tensor.fromArray(target, shape), { ...settings, lambdaKl: Infinity }))
      .toThrow('regularizeNoise option lambdaKl must be a finite non-negative number');
  });
});
