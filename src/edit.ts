// Editing a real image from its inversion with MasaCtrl (Cao et al., ICCV 2023: mutual self-attention control), or
// with the target prompt alone. One batch [source, target_1..k] starts from the inversion's z_T, each row with its own
// prompt; from step startStep on, the self-attention of layers startLayer.. of every row takes its keys and values
// from the source row (per guidance half), so that the targets keep the photo's content and look while their prompts
// change what it shows.
import { optionError, rangeError, typeError } from './errors';
import { checkSampling, runOn, type SamplingOptions } from './inversion';
import type { Run } from './inversion/run';
import type { Family } from './manifest';
import { Model } from './model';
import { addon, disposeAll, isTensor, type Tensor } from './native';
import { ddimWeights } from './schedule';

export type EditMethod = 'masactrl' | 'prompt';

/** What an edit starts from: z_T alone, or an inversion's result (InversionResult is one). */
export interface EditSource {
  /** z_T of one image, [1, C, h, w]. */
  latent: Tensor;
  /** Method 'direct''s offsets, one per step: added to the source row, as reconstruct() adds them. */
  offsets?: Tensor[];
  /**
   * The inversion's latents (invert with keepLatents), latents[j] the one after inversion step j: the source row is
   * set to the inversion's latent at the level each step starts from, so that it retraces the inversion (MasaCtrl's
   * ref_intermediate_latents, which also hold z0 first). Offsets are then not used.
   */
  latents?: Tensor[];
  /** The inversion's steps: the edit's when options.steps is not given. */
  steps?: number;
}

export interface EditOptions extends Pick<SamplingOptions, 'steps' | 'negativePrompt' | 'stepsOffset' | 'timesteps' | 'sizeCondition' | 'onProgress' | 'signal'> {
  /** The target prompt, or several: one edit each, all in one batch. */
  prompt: string | string[];
  /** The prompt of the source row (what the photo shows); default ''. */
  sourcePrompt?: string;
  /** 'masactrl' (default), or 'prompt': the same batch with plain self-attention (the edit by prompt alone). */
  method?: EditMethod;
  /** The first denoising step (0-based) with mutual attention; MasaCtrl's default 4. */
  startStep?: number;
  /** The first self-attention layer (in call order) with mutual attention; MasaCtrl's default SD-1 10 of 16, SDXL 44 of 70. */
  startLayer?: number;
  /** Classifier-free guidance weight; default 7.5, as MasaCtrl samples. */
  guidance?: number;
}

export interface EditResult {
  /** The source row's final latent: the reconstruction under the source prompt (or the end of the pinned path). */
  source: Tensor;
  /** One latent per target prompt, in order. */
  edits: Tensor[];
  method: EditMethod;
  steps: number;
  unetCalls: number;
  /** Wall time of the edit, the device synchronised before the clock was read. */
  seconds: number;
  /** Frees the source and the edits. */
  dispose(): void;
  [Symbol.dispose](): void;
}

export interface EditSettings {
  method: EditMethod;
  targets: string[];
  sourcePrompt: string;
  steps: number;
  guidance: number;
  /** masactrl only. */
  startStep?: number;
  startLayer?: number;
}

// MasaCtrl's own settings: its SD-1 layer 10 of 16 and SDXL layer 44 of 70 both start in the decoder, at about 5/8.
const defaults: Record<Family, { startStep: number; startLayer: number }> = {
  sd1: { startStep: 4, startLayer: 10 },
  sdxl: { startStep: 4, startLayer: 44 },
  test: { startStep: 4, startLayer: 10 },
};

const keys = ['prompt', 'sourcePrompt', 'method', 'startStep', 'startLayer', 'guidance', 'negativePrompt', 'steps', 'stepsOffset',
  'timesteps', 'sizeCondition', 'onProgress', 'signal'];

/**
 * The edit's settings from its options over MasaCtrl's defaults for the model's family, checked (so that a caller can
 * check them before it inverts). `sourceSteps`: the inversion's steps, the default for steps.
 */
export function editSettings(model: Model, options: EditOptions, sourceSteps?: number): EditSettings {
  if (!(model instanceof Model)) typeError('the first argument must be a Model (await loadModel(dir))');
  if (options === null || typeof options !== 'object') typeError('edit needs options with at least a prompt: { prompt: \'a photo of a cat\' }');
  const foreign = Object.keys(options).filter((key) => (options as unknown as Record<string, unknown>)[key] !== undefined && !keys.includes(key));
  if (foreign.length > 0) optionError(foreign[0], `is not an option of edit (its options: ${keys.join(', ')})`);
  const { prompt, sourcePrompt = '', method = 'masactrl', guidance = 7.5, steps = sourceSteps ?? 50 } = options;
  const targets = typeof prompt === 'string' ? [prompt] : prompt;
  if (!Array.isArray(targets) || targets.length === 0 || !targets.every((p) => typeof p === 'string')) {
    optionError('prompt', 'must be a string or a non-empty array of strings: the target prompts', TypeError);
  }
  if (typeof sourcePrompt !== 'string') optionError('sourcePrompt', `must be a string, not ${typeof sourcePrompt}`, TypeError);
  checkSampling({ ...options, prompt: '', steps, guidance });
  const settings = { method, targets, sourcePrompt, steps, guidance };
  if (method === 'prompt') {
    const given = (['startStep', 'startLayer'] as const).find((key) => options[key] !== undefined);
    if (given) optionError(given, "places MasaCtrl's mutual attention, which method 'prompt' has not");
    return settings;
  }
  if (method !== 'masactrl') optionError('method', `must be 'masactrl' or 'prompt', not ${JSON.stringify(method)}`);
  const layers = model.requireMutualAttention();
  const { startStep = defaults[model.family].startStep, startLayer = defaults[model.family].startLayer } = options;
  if (!Number.isInteger(startStep) || startStep < 0 || startStep > steps) {
    optionError('startStep', `must be an integer from 0 to steps (${steps}), not ${startStep}`);
  }
  if (!Number.isInteger(startLayer) || startLayer < 0 || startLayer >= layers) {
    const given = options.startLayer === undefined ? ` (MasaCtrl's default for ${model.family})` : '';
    optionError('startLayer', `must be an integer from 0 to ${layers - 1} (this UNet has ${layers} self-attention layers), not ` +
      `${startLayer}${given}`);
  }
  return { ...settings, startStep, startLayer };
}

function checkSource(source: Tensor | EditSource, steps: number): EditSource {
  const given = isTensor(source) ? { latent: source } : source;
  if (given === null || typeof given !== 'object' || !isTensor(given.latent)) {
    typeError('the source must be z_T (a Tensor) or an inversion result ({ latent, offsets?, latents? })');
  }
  const shape = given.latent.shape;
  if (shape[0] !== 1) rangeError(`the source must be one image's z_T, [1, C, h, w], not [${shape.join(', ')}]`);
  for (const name of ['offsets', 'latents'] as const) {
    const list = given[name];
    if (list === undefined) continue;
    if (!Array.isArray(list)) typeError(`the source's ${name} must be a list of tensors`);
    if (list.length !== steps) {
      rangeError(`the source's ${name} has ${list.length} entries but the edit takes ${steps} steps: edit with the ` +
        'inversion\'s steps (over DDIM\'s timesteps)');
    }
    const wrong = list.findIndex((t) => !isTensor(t) || t.shape.join() !== shape.join());
    if (wrong >= 0) rangeError(`the source's ${name}[${wrong}] is not a tensor of z_T's shape [${shape.join(', ')}]`);
  }
  return given;
}

/** `batch` (freed) with its source row, row 0, replaced by what `replace` makes of it; the targets' rows as they are. */
async function replaceSourceRow(run: Run, batch: Tensor, replace: (row: Tensor) => Promise<Tensor> | Tensor): Promise<Tensor> {
  const [row, targets] = await batch.split([1, batch.shape[0] - 1]);
  try {
    const source = await replace(row);
    const replaced = run.own(await addon.Tensor.cat([source, targets]));
    run.free(source, batch);
    return replaced;
  } finally {
    disposeAll([row, targets]);
  }
}

/**
 * Edits the image whose inversion is `source` (or from z_T itself) toward each target prompt: DDIM sampling over the
 * same schedule as reconstruct(), one UNet call per step for the whole batch [source, targets].
 */
export async function edit(model: Model, source: Tensor | EditSource, options: EditOptions): Promise<EditResult> {
  const settings = editSettings(model, options, isTensor(source) ? undefined : source?.steps);
  const { method, targets, sourcePrompt, steps, guidance, startStep, startLayer } = settings;
  const { latent, offsets, latents } = checkSource(source, steps);
  const rows = 1 + targets.length;
  const batch = await addon.Tensor.cat(Array(rows).fill(latent));
  const sampling = { ...options, prompt: undefined, steps, guidance };
  const ran = await runOn(model, batch, sampling, method, 'edit', async (run, start, schedule, condition) => {
    // Per guidance half, every row takes the self-attention keys and values of that half's source row.
    const unetRows = guidance === 1 ? rows : 2 * rows;
    const mutual = method === 'masactrl'
      ? { ...condition, attentionSources: run.own(model.attentionSources(unetRows, (r, l) => (l < startLayer! ? r : r < rows ? 0 : rows))) }
      : condition;
    let z = start;
    for (const step of schedule.sampling) {
      const pinned = latents?.[steps - 1 - step.index];
      if (pinned) z = await replaceSourceRow(run, z, () => pinned);
      const stepCondition = step.index >= (startStep ?? steps) ? mutual : condition;
      let next = await run.step(z, step.timestep, ddimWeights(step.from, step.to), stepCondition);
      const offset = latents ? undefined : offsets?.[step.index];
      if (offset) next = await replaceSourceRow(run, next, (row) => run.combine([row, offset], [1, 1]));
      run.free(z);
      z = next;
      await run.stepDone(step, z);
    }
    return z;
  }, (z) => [z], [sourcePrompt, ...targets]).finally(() => batch.dispose());
  const final = ran.result;
  const [sourceLatent, ...edits] = await final.split(Array(rows).fill(1));
  final.dispose(); // the rows are views that keep its data
  const dispose = () => disposeAll([sourceLatent, edits]);
  return {
    source: sourceLatent, edits, method, steps, unetCalls: ran.unetCalls, seconds: ran.seconds, dispose, [Symbol.dispose]: dispose,
  };
}
