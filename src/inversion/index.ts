// invert() and reconstruct(): options, defaults and the run around one method.
import type { Family } from '../manifest';
import { Model } from '../model';
import { addon, isTensor, type Tensor } from '../native';
import { makeSchedule, type Transition } from '../schedule';
import { ddim } from './ddim';
import { direct } from './direct';
import { easyinv } from './easyinv';
import { fixedPoint } from './fixed-point';
import type { InversionMethod, MethodResult } from './method';
import { renoise, type ReNoiseOptions } from './renoise';
import { Run, type ProgressCallback } from './run';

export type { Progress, ProgressCallback } from './run';

const methods = { ddim, easyinv, 'fixed-point': fixedPoint, renoise, direct } as const;
export type MethodName = keyof typeof methods;
export const methodNames = Object.keys(methods) as MethodName[];

/** EasyInv's defaults per model family (the paper's settings). */
const easyinvDefaults: Record<Family, { eta: number; window: [number, number] }> = {
  sd1: { eta: 0.5, window: [0.05, 0.25] },
  sdxl: { eta: 0.8, window: [0.85, 0.95] },
  test: { eta: 0.5, window: [0.05, 0.25] },
};

export interface SamplingOptions {
  steps?: number;
  prompt?: string;
  negativePrompt?: string;
  /** Classifier-free guidance weight w: eps = eps_u + w (eps_c - eps_u); 1 = the conditional call alone. */
  guidance?: number;
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
}

export interface InvertOptions extends SamplingOptions {
  method?: MethodName;
  /** easyinv: weight of the new latent in the blend. */
  eta?: number;
  /** easyinv: [start, end] as fractions of the steps. */
  window?: [number, number];
  /** fixed-point: refinements per step (default 5); renoise: renoising iterations per step (default 2). */
  iterations?: number;
  /** renoise: iterations [from, to) whose noise is averaged (default: all but the first). */
  average?: [number, number];
  /** renoise: noise regularisation settings, or false to turn it off. */
  regularization?: ReNoiseOptions['regularization'] | false;
  /** renoise: seed of the regularisation's target noise. */
  seed?: number;
}

export interface InversionResult {
  /** z_T, on the model's device, in the model's dtype. */
  latent: Tensor;
  method: MethodName;
  steps: number;
  unetCalls: number;
  /** Wall time of the inversion, the device synchronised before the clock was read. */
  seconds: number;
  /** method 'direct': the offsets reconstruct() adds (pass the whole result, or `offsets`). */
  offsets?: Tensor[];
  /** Frees the latent and any offsets. */
  dispose(): void;
}

export interface ReconstructOptions extends SamplingOptions {
  /** The stored offsets of method 'direct', one per step. */
  offsets?: Tensor[];
}

function fail(message: string): never {
  throw new RangeError(`easyinv: ${message}`);
}

function checkFraction(name: string, value: number): void {
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) fail(`${name} must be a number in [0, 1], not ${value}`);
}

function checkSampling(options: SamplingOptions): Required<Pick<SamplingOptions, 'steps' | 'prompt' | 'negativePrompt' | 'guidance'>> {
  const { steps = 50, prompt = '', negativePrompt = '', guidance = 1 } = options;
  if (!Number.isInteger(steps) || steps < 1) fail(`steps must be an integer >= 1, not ${steps}`);
  if (typeof guidance !== 'number' || !(guidance >= 0)) fail(`guidance must be a number >= 0, not ${guidance}`);
  if (guidance === Infinity) fail('guidance must be finite, not Infinity');
  if (typeof prompt !== 'string' || typeof negativePrompt !== 'string') fail('prompt and negativePrompt must be strings');
  return { steps, prompt, negativePrompt, guidance };
}

function methodOptions(model: Model, name: MethodName, options: InvertOptions): object {
  const iterations = (fallback: number) => {
    const value = options.iterations ?? fallback;
    if (!Number.isInteger(value) || value < 0) fail(`iterations must be an integer >= 0, not ${value}`);
    return value;
  };
  switch (name) {
    case 'easyinv': {
      const { eta, window } = { ...easyinvDefaults[model.family], ...definedOnly({ eta: options.eta, window: options.window }) };
      checkFraction('eta', eta);
      if (!Array.isArray(window) || window.length !== 2) fail('window must be [start, end], fractions of the steps');
      window.forEach((edge, i) => checkFraction(`window[${i}]`, edge));
      if (window[0] > window[1]) fail(`window start ${window[0]} is after its end ${window[1]}`);
      return { eta, window };
    }
    case 'fixed-point':
      return { iterations: iterations(5) };
    case 'renoise': {
      const k = iterations(2);
      const average = options.average ?? [1, k + 1];
      if (!Array.isArray(average) || average.length !== 2 || !average.every(Number.isInteger) || average[0] > average[1]) {
        fail('average must be [from, to], integer iterations with from <= to');
      }
      const regularization = options.regularization === false ? null
        : options.regularization ?? { lambdaAc: 20, lambdaKl: 0.065, steps: 4, rolls: 5 };
      return { iterations: k, average, regularization, seed: options.seed ?? 0 };
    }
    default:
      return {};
  }
}

function definedOnly<T extends object>(object: T): Partial<T> {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined)) as Partial<T>;
}

// Checked once at the end rather than per step, so that no step waits for the device: a NaN or Inf anywhere in the
// loop reaches the result.
async function checkFinite(tensors: Tensor[], what: string): Promise<void> {
  for (const tensor of tensors) {
    const mean = await tensor.mean();
    if (!Number.isFinite(mean)) {
      fail(`the ${what} produced ${Number.isNaN(mean) ? 'NaN' : 'infinite'} values: the UNet overflowed (float16 on a ` +
        'model that needs float32?) or its inputs are not finite');
    }
  }
}

/** Runs `body` over the model's schedule and condition; frees everything but the result, also on error or abort. */
async function runOn<T>(
  model: Model,
  latent: Tensor,
  options: SamplingOptions,
  method: string,
  phase: 'invert' | 'reconstruct',
  body: (run: Run, start: Tensor, transitions: { inversion: Transition[]; sampling: Transition[] }) => Promise<T>,
  keep: (result: T) => Tensor[],
): Promise<{ result: T; unetCalls: number; seconds: number; steps: number }> {
  const { steps, prompt, negativePrompt, guidance } = checkSampling(options);
  if (!isTensor(latent)) fail('the latent must be a Tensor');
  const expected = [model.manifest.latent.channels, model.manifest.latent.size, model.manifest.latent.size];
  if (latent.shape.length !== 4 || latent.shape[0] < 1 || expected.some((size, i) => latent.shape[i + 1] !== size)) {
    fail(`the latent must have shape [B, ${expected.join(', ')}] for this model, not [${latent.shape.join(', ')}]`);
  }
  const schedule = makeSchedule(model.scheduler, steps);
  const condition = await model.condition(prompt, negativePrompt, latent.shape[0], guidance);
  const run = new Run(model, condition, method, phase, steps, options.onProgress, options.signal);
  try {
    run.throwIfAborted(0);
    const start = run.own(await latent.to({ device: model.device, dtype: model.dtype }));
    const result = await body(run, start, schedule);
    await addon.synchronize(model.device);
    const seconds = run.seconds();
    await checkFinite(keep(result), `${phase === 'invert' ? 'inversion' : 'reconstruction'} (${method}, ${steps} steps)`);
    run.finish(keep(result));
    return { result, unetCalls: run.unetCalls, seconds, steps };
  } catch (error) {
    run.finish([]);
    throw error;
  } finally {
    [condition.states, condition.textEmbeds, condition.timeIds].forEach((t) => t?.dispose());
  }
}

/** Inverts clean latents z0 [B, C, h, w] into noise z_T with one of the methods. */
function checkCall(model: Model, options: object | null): void {
  if (!(model instanceof Model)) fail('the first argument must be a Model (await loadModel(dir))');
  if (options === null || typeof options !== 'object') fail(`options must be an object, not ${options === null ? 'null' : typeof options}`);
}

export async function invert(model: Model, z0: Tensor, options: InvertOptions = {}): Promise<InversionResult> {
  checkCall(model, options);
  const name = options.method ?? 'easyinv';
  if (!Object.hasOwn(methods, name)) fail(`unknown method ${JSON.stringify(name)}: use one of ${methodNames.join(', ')}`);
  const settings = methodOptions(model, name, options);
  const method = methods[name] as InversionMethod<object>;
  const { result, unetCalls, seconds, steps } = await runOn<MethodResult>(
    model, z0, options, name, 'invert',
    (run, start, schedule) => method(run, start, schedule.inversion, settings),
    (result) => [result.latent, ...(result.offsets ?? [])],
  );
  const { latent, offsets } = result;
  return {
    latent, offsets, method: name, steps, unetCalls, seconds,
    dispose: () => [latent, ...(offsets ?? [])].forEach((t) => t.dispose()),
  };
}

/** DDIM sampling from z_T back to a clean latent with the same steps, prompt and guidance (and stored offsets). */
export async function reconstruct(model: Model, zT: Tensor, options: ReconstructOptions = {}): Promise<Tensor> {
  checkCall(model, options);
  const { offsets } = options;
  const { result } = await runOn<Tensor>(model, zT, options, 'ddim', 'reconstruct', async (run, start, schedule) => {
    if (offsets !== undefined && offsets.length !== schedule.sampling.length) {
      fail(`offsets has ${offsets.length} entries but there are ${schedule.sampling.length} steps`);
    }
    const wrong = offsets?.findIndex((o) => !isTensor(o) || o.shape.join() !== start.shape.join()) ?? -1;
    if (wrong >= 0) {
      const what = isTensor(offsets![wrong]) ? `has shape [${offsets![wrong].shape.join(', ')}]` : 'is not a Tensor';
      fail(`offsets[${wrong}] ${what}; each offset is a tensor of the latent's shape [${start.shape.join(', ')}]`);
    }
    let z = start;
    for (const step of schedule.sampling) {
      const eps = await run.eps(z, step.timestep);
      let next = await run.ddim(z, eps, step);
      if (offsets) {
        const corrected = await run.combine([next, offsets[step.index]], [1, 1]);
        run.free(next);
        next = corrected;
      }
      run.free(z, eps);
      z = next;
      await run.stepDone(step, z);
    }
    return z;
  }, (z) => [z]);
  return result;
}
