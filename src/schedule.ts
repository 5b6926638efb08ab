// The DDIM noise schedule, read from a bundle's manifest (the fields of diffusers' DDIMScheduler config).
import { optionError } from './errors';

export type BetaSchedule = 'scaled_linear' | 'linear';
export type TimestepSpacing = 'leading' | 'trailing' | 'linspace';
/**
 * Which scheduler's timestep list the steps run over: 'ddim' (DDIMScheduler's N timesteps) or 'pndm' (those of
 * PNDMScheduler with skip_prk_steps, as SD-1.4's checkpoint ships it: the second-noisiest timestep repeated, N + 1
 * steps, each still spanning num_train_timesteps // N).
 */
export type TimestepList = 'ddim' | 'pndm';

export interface SchedulerConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: BetaSchedule;
  steps_offset: number;
  set_alpha_to_one: boolean;
  timestep_spacing: TimestepSpacing;
}

export const sd1Scheduler: SchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  steps_offset: 1,
  set_alpha_to_one: false,
  timestep_spacing: 'leading',
};

/** One DDIM move between two noise levels; `from`/`to` are alpha-bar values. */
export interface Transition {
  /** Index of the step in its own direction (0 = first step taken). */
  index: number;
  /** The timestep the UNet is evaluated at. */
  timestep: number;
  from: number;
  to: number;
}

export interface Schedule {
  config: SchedulerConfig;
  steps: number;
  /** Sampling timesteps, descending (t_0 = noisiest); N + 1 of them for the 'pndm' list. */
  timesteps: number[];
  /** Inversion: clean to noisy; UNet at the destination timestep t, starting from the level t - delta. */
  inversion: Transition[];
  /** Sampling: noisy to clean; UNet at the start timestep t, ending at the level t - delta. */
  sampling: Transition[];
}

export function alphaBars(config: SchedulerConfig): Float64Array {
  const { num_train_timesteps: count, beta_start: start, beta_end: end } = config;
  const alphaBar = new Float64Array(count);
  let product = 1;
  for (let i = 0; i < count; i++) {
    const fraction = count === 1 ? 0 : i / (count - 1);
    const beta = config.beta_schedule === 'scaled_linear'
      ? (Math.sqrt(start) + fraction * (Math.sqrt(end) - Math.sqrt(start))) ** 2
      : start + fraction * (end - start);
    product *= 1 - beta;
    alphaBar[i] = product;
  }
  return alphaBar;
}

/** numpy's round: halves go to the even neighbour. */
function roundHalfEven(value: number): number {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction !== 0.5) return Math.round(value);
  return floor % 2 === 0 ? floor : floor + 1;
}

/** The sampling timesteps for `steps` steps, descending, as diffusers' DDIMScheduler.set_timesteps makes them. */
export function samplingTimesteps(config: SchedulerConfig, steps: number): number[] {
  const count = config.num_train_timesteps;
  const range = Array.from({ length: steps }, (_, i) => i);
  switch (config.timestep_spacing) {
    case 'leading':
      return range.map((i) => i * Math.floor(count / steps) + config.steps_offset).reverse();
    case 'trailing':
      return range.map((i) => roundHalfEven(count - i * (count / steps)) - 1);
    case 'linspace':
      return range.map((i) => roundHalfEven(steps === 1 ? 0 : (i * (count - 1)) / (steps - 1))).reverse();
  }
}

export function makeSchedule(config: SchedulerConfig, steps: number, list: TimestepList = 'ddim'): Schedule {
  if (!Number.isInteger(steps) || steps < 1 || steps > config.num_train_timesteps) {
    optionError('steps', `must be an integer from 1 to ${config.num_train_timesteps}, not ${steps}`);
  }
  const alphaBar = alphaBars(config);
  const final = config.set_alpha_to_one ? 1 : alphaBar[0];
  const at = (t: number) => (t >= 0 ? alphaBar[t] : final);
  const delta = Math.floor(config.num_train_timesteps / steps);
  const timesteps = samplingTimesteps(config, steps);
  const outside = timesteps.find((t) => t < 0 || t >= config.num_train_timesteps);
  if (outside !== undefined) {
    let most = steps - 1;
    while (most > 1 && samplingTimesteps(config, most).some((t) => t < 0 || t >= config.num_train_timesteps)) most--;
    optionError('steps', `${steps} with steps_offset ${config.steps_offset} (${config.timestep_spacing} spacing) reaches ` +
      `timestep ${outside}, outside the schedule's 0..${config.num_train_timesteps - 1}: use at most ${most} steps`);
  }
  if (list === 'pndm') timesteps.splice(1, 0, ...timesteps.slice(1, 2));
  const sampling = timesteps.map((t, index) => ({ index, timestep: t, from: at(t), to: at(t - delta) }));
  const inversion = [...timesteps].reverse().map((t, index) => ({ index, timestep: t, from: at(t - delta), to: at(t) }));
  return { config, steps, timesteps, inversion, sampling };
}

/**
 * The DDIM step between noise levels with noise `eps`, in either direction, as weights of [x, eps]:
 * x0 = (x - sqrt(1 - a_from) eps) / sqrt(a_from);  x_to = sqrt(a_to) x0 + sqrt(1 - a_to) eps.
 */
export function ddimWeights(from: number, to: number): [number, number] {
  const scale = Math.sqrt(to / from);
  return [scale, Math.sqrt(1 - to) - scale * Math.sqrt(1 - from)];
}
