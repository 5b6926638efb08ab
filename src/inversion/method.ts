// What an inversion method is: a loop over the inversion transitions, and beside it, in the method's own file, its
// options with their defaults per model family and their checks.
import { optionError } from '../errors';
import type { Family } from '../manifest';
import type { Tensor } from '../native';
import type { Transition } from '../schedule';
import type { Run } from './run';

export interface MethodResult {
  latent: Tensor;
  /** Per sampling step, what DDIM sampling must add to land back on the inversion's path (method 'direct'). */
  offsets?: Tensor[];
}

export interface Method<Options, UserOptions = Partial<Options>> {
  /** The option names the method takes; any other is an error for it. */
  keys: readonly (keyof UserOptions & string)[];
  /** The user's options over the family's defaults, checked. */
  settings(user: UserOptions, family: Family): Options;
  /** From the clean latent z0, through the inversion transitions, to z_T. */
  invert(run: Run, z0: Tensor, steps: Transition[], options: Options): Promise<MethodResult>;
  /** What in these settings can make the loop diverge on latents of this side, told when the result is not finite. */
  divergence?(options: Options, side: number): string | undefined;
}

export function checkFraction(option: string, value: unknown): number {
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) optionError(option, `must be a number in [0, 1], not ${value}`);
  return value;
}

export function checkCount(option: string, value: unknown, max = Infinity): number {
  if (!Number.isInteger(value) || !((value as number) >= 0 && (value as number) <= max)) {
    optionError(option, `must be an integer ${max === Infinity ? '>= 0' : `from 0 to ${max}`}, not ${value}`);
  }
  return value as number;
}
