// invert() and reconstruct(): the registry of methods and the run around one: sampling options, schedule,
// condition, the final finite check, and freeing everything but the result, also on error or abort.
import { failure, optionError, rangeError, typeError } from '../errors';
import { Model, type Condition } from '../model';
import { addon, disposeAll, isTensor, type Tensor } from '../native';
import { makeSchedule, type TimestepList, type Transition } from '../schedule';
import { ddim } from './ddim';
import { direct } from './direct';
import { easyinv, type EasyInvOptions } from './easyinv';
import { fixedPoint, type FixedPointOptions } from './fixed-point';
import type { Method, MethodResult } from './method';
import { renoise, type ReNoiseUserOptions } from './renoise';
import { phaseNames, Run, type Progress, type ProgressCallback } from './run';
import { sample } from './sampling';

export type { Progress, ProgressCallback } from './run';
export type { EasyInvOptions, EasyInvVariant } from './easyinv';
export { notebookSettings } from './easyinv';
export type { FixedPointOptions } from './fixed-point';
export type { ReNoiseOptions, ReNoiseUserOptions, Regularization } from './renoise';

const methods = { ddim, easyinv, 'fixed-point': fixedPoint, renoise, direct } as const;
export type MethodName = keyof typeof methods;
export const methodNames = Object.keys(methods) as MethodName[];

export interface SamplingOptions {
  steps?: number;
  prompt?: string;
  negativePrompt?: string;
  /** Classifier-free guidance weight w: eps = eps_u + w (eps_c - eps_u); 1 = the conditional call alone. */
  guidance?: number;
  /** Overrides the bundle's scheduler steps_offset (what is added to every timestep). */
  stepsOffset?: number;
  /** 'pndm': invert over PNDM's timesteps (SD-1.4's checkpoint scheduler; invert only). Default 'ddim'. */
  timesteps?: TimestepList;
  /** SDXL: the original and target size in pixels it is conditioned on (time_ids); default the bundle's resolution. */
  sizeCondition?: number;
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
}

/** Each method's own options (defaults per model family where the paper has them); no method takes another's. */
export type InvertOptions = SamplingOptions & (
  | ({ method?: 'easyinv' } & Partial<EasyInvOptions>)
  | { method: 'ddim' }
  | ({ method: 'fixed-point' } & Partial<FixedPointOptions>)
  | ({ method: 'renoise' } & ReNoiseUserOptions)
  | { method: 'direct' }
) & {
  /** Also return every step's latent (`latents`), as an edit's source branch follows them. */
  keepLatents?: boolean;
};

const samplingKeys = ['method', 'steps', 'prompt', 'negativePrompt', 'guidance', 'stepsOffset', 'timesteps', 'sizeCondition', 'onProgress',
  'signal', 'keepLatents'];

/** The options among `options` that `method` takes (for callers that hold one set of options for several methods). */
export function optionsFor(method: MethodName, options: Record<string, unknown>): Record<string, unknown> {
  const keys: readonly string[] = methods[method].keys;
  return Object.fromEntries(Object.entries(options).filter(([key]) => keys.includes(key)));
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
  /** With keepLatents: the latent after each inversion step, noisier and noisier; the last is `latent` itself. */
  latents?: Tensor[];
  /** Frees the latent, any offsets and any latents. */
  dispose(): void;
  [Symbol.dispose](): void;
}

export interface ReconstructOptions extends SamplingOptions {
  /** The stored offsets of method 'direct', one per step. */
  offsets?: Tensor[];
}

type CheckedSampling = Required<Pick<SamplingOptions, 'steps' | 'prompt' | 'negativePrompt' | 'guidance' | 'timesteps'>> &
  Pick<SamplingOptions, 'stepsOffset' | 'sizeCondition'>;

export function checkSampling(options: SamplingOptions): CheckedSampling {
  const { steps = 50, prompt = '', negativePrompt = '', guidance = 1, stepsOffset, timesteps = 'ddim', sizeCondition } = options;
  if (!Number.isInteger(steps) || steps < 1) optionError('steps', `must be an integer >= 1, not ${steps}`);
  if (typeof guidance !== 'number' || !(guidance >= 0)) optionError('guidance', `must be a number >= 0, not ${guidance}`);
  if (guidance === Infinity) optionError('guidance', 'must be finite, not Infinity');
  if (typeof prompt !== 'string') optionError('prompt', 'must be a string', TypeError);
  if (typeof negativePrompt !== 'string') optionError('negativePrompt', 'must be a string', TypeError);
  if (stepsOffset !== undefined && !(Number.isInteger(stepsOffset) && stepsOffset >= 0)) {
    optionError('stepsOffset', `must be an integer >= 0, not ${stepsOffset}`);
  }
  if (timesteps !== 'ddim' && timesteps !== 'pndm') optionError('timesteps', `must be 'ddim' or 'pndm', not ${JSON.stringify(timesteps)}`);
  if (sizeCondition !== undefined && !(Number.isInteger(sizeCondition) && sizeCondition >= 1)) {
    optionError('sizeCondition', `must be an integer >= 1 (pixels), not ${sizeCondition}`);
  }
  return { steps, prompt, negativePrompt, guidance, stepsOffset, timesteps, sizeCondition };
}

/** The method's settings from the options, refusing options that belong to no method or to another one. */
function methodSettings(model: Model, name: MethodName, options: Record<string, unknown>): object {
  const method = methods[name] as Method<object, Record<string, unknown>>;
  const foreign = Object.keys(options).filter((key) => options[key] !== undefined && !samplingKeys.includes(key) && !method.keys.includes(key));
  if (foreign.length > 0) {
    optionError(foreign[0], `is not an option of method ${name} (its options: ${method.keys.join(', ') || 'none'})`);
  }
  return method.settings(Object.fromEntries(method.keys.map((key) => [key, options[key]]).filter(([, v]) => v !== undefined)), model.family);
}

// Checked once at the end rather than per step, so that no step waits for the device: a NaN or Inf anywhere in the
// loop reaches the result.
async function checkFinite(tensors: Tensor[], what: string, divergence?: string): Promise<void> {
  for (const tensor of tensors) {
    const mean = await tensor.mean();
    if (!Number.isFinite(mean)) {
      throw failure(`the ${what} produced ${Number.isNaN(mean) ? 'NaN' : 'infinite'} values: ${divergence ? `${divergence}; or ` : ''}` +
        'the UNet overflowed (float16 on a model that needs float32?) or its inputs are not finite');
    }
  }
}

function checkCall(model: Model, options: object | null): void {
  if (!(model instanceof Model)) typeError('the first argument must be a Model (await loadModel(dir))');
  if (options === null || typeof options !== 'object') typeError(`options must be an object, not ${options === null ? 'null' : typeof options}`);
}

/**
 * Runs `body` over the model's schedule and condition (`prompts`, one per latent, instead of options.prompt when
 * given); frees everything but the result, also on error or abort.
 */
export async function runOn<T>(
  model: Model,
  latent: Tensor,
  options: SamplingOptions,
  method: string,
  phase: Progress['phase'],
  body: (run: Run, start: Tensor, transitions: { inversion: Transition[]; sampling: Transition[] }, condition: Condition) => Promise<T>,
  keep: (result: T) => Tensor[],
  prompts?: string[],
  divergence?: string,
): Promise<{ result: T; unetCalls: number; seconds: number; steps: number }> {
  const { steps, prompt, negativePrompt, guidance, stepsOffset, timesteps, sizeCondition } = checkSampling(options);
  if (!isTensor(latent)) typeError('the latent must be a Tensor');
  const expected = [model.manifest.latent.channels, model.manifest.latent.size, model.manifest.latent.size];
  if (latent.shape.length !== 4 || latent.shape[0] < 1 || expected.some((size, i) => latent.shape[i + 1] !== size)) {
    rangeError(`the latent must have shape [B, ${expected.join(', ')}] for this model, not [${latent.shape.join(', ')}]`);
  }
  if (phase !== 'invert' && timesteps === 'pndm') {
    optionError('timesteps', `'pndm' is for invert only: ${phase} samples with DDIM (PNDM's own sampler is not implemented)`);
  }
  const schedule = makeSchedule({ ...model.scheduler, steps_offset: stepsOffset ?? model.scheduler.steps_offset }, steps, timesteps);
  const condition = await model.condition(prompts ?? prompt, negativePrompt, latent.shape[0], guidance, sizeCondition);
  const transitions = schedule[phase === 'invert' ? 'inversion' : 'sampling'].length;
  const run = new Run(model, condition, method, phase, steps, transitions, options.onProgress, options.signal);
  try {
    run.throwIfAborted(0);
    const start = run.own(await latent.to({ device: model.device, dtype: model.dtype }));
    const result = await body(run, start, schedule, condition);
    await addon.synchronize(model.device);
    const seconds = run.seconds();
    await checkFinite(keep(result), `${phaseNames[phase]} (${method}, ${steps} steps)`, divergence);
    run.finish(keep(result));
    return { result, unetCalls: run.unetCalls, seconds, steps };
  } catch (error) {
    run.finish([]);
    throw error;
  } finally {
    disposeAll({ ...condition });
  }
}

/** Inverts clean latents z0 [B, C, h, w] into noise z_T with one of the methods. */
export async function invert(model: Model, z0: Tensor, options: InvertOptions = {}): Promise<InversionResult> {
  checkCall(model, options);
  const name = options.method ?? 'easyinv';
  if (!Object.hasOwn(methods, name)) optionError('method', `${JSON.stringify(name)} is unknown: use one of ${methodNames.join(', ')}`);
  const settings = methodSettings(model, name, options as Record<string, unknown>);
  const { keepLatents = false } = options;
  if (typeof keepLatents !== 'boolean') optionError('keepLatents', `must be true or false, not ${JSON.stringify(keepLatents)}`, TypeError);
  const method = methods[name] as Method<object>;
  const { result, unetCalls, seconds, steps } = await runOn<MethodResult & { latents?: Tensor[] }>(
    model, z0, options, name, 'invert',
    async (run, start, schedule) => {
      const latents = keepLatents ? run.keepLatents() : undefined;
      return { ...(await method.invert(run, start, schedule.inversion, settings)), latents };
    },
    (result) => [result.latent, ...(result.offsets ?? []), ...(result.latents ?? [])],
    undefined,
    method.divergence?.(settings, model.manifest.latent.size),
  );
  const { latent, offsets, latents } = result;
  const dispose = () => disposeAll([latent, offsets, latents]);
  return { latent, offsets, latents, method: name, steps, unetCalls, seconds, dispose, [Symbol.dispose]: dispose };
}

/** DDIM sampling from z_T back to a clean latent with the same steps, prompt and guidance (and stored offsets). */
export async function reconstruct(model: Model, zT: Tensor, options: ReconstructOptions = {}): Promise<Tensor> {
  checkCall(model, options);
  const { offsets } = options;
  const { result } = await runOn<Tensor>(model, zT, options, 'ddim', 'reconstruct', async (run, start, schedule) => {
    if (offsets !== undefined && offsets.length !== schedule.sampling.length) {
      optionError('offsets', `has ${offsets.length} entries but there are ${schedule.sampling.length} steps`);
    }
    const wrong = offsets?.findIndex((o) => !isTensor(o) || o.shape.join() !== start.shape.join()) ?? -1;
    if (wrong >= 0) {
      const what = isTensor(offsets![wrong]) ? `has shape [${offsets![wrong].shape.join(', ')}]` : 'is not a Tensor';
      optionError(`offsets[${wrong}]`, `${what}; each offset is a tensor of the latent's shape [${start.shape.join(', ')}]`);
    }
    return sample(run, start, schedule.sampling, offsets);
  }, (z) => [z]);
  return result;
}
