import type { Tensor } from '../native';
import type { Transition } from '../schedule';
import type { Run } from './run';

export interface MethodResult {
  latent: Tensor;
  /** Per sampling step, what DDIM sampling must add to land back on the inversion's path (method 'direct'). */
  offsets?: Tensor[];
}

/** An inversion method: from the clean latent z0, through the inversion transitions, to z_T. */
export type InversionMethod<Options> = (run: Run, z0: Tensor, steps: Transition[], options: Options) => Promise<MethodResult>;
