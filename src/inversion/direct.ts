import type { Tensor } from '../native';
import { ddimWeights } from '../schedule';
import type { Method } from './method';

/**
 * DDIM inversion that also stores, for every step, the offset between the inversion's latent z_s and what DDIM
 * sampling makes of z_t (after Direct Inversion, Ju et al. 2024): reconstruction that adds the offsets lands on
 * the inversion's path at every step and returns z0 to float precision. Two UNet calls per step.
 */
export const direct: Method<object> = {
  keys: [],
  settings: () => ({}),
  async invert(run, z0, steps) {
    const offsets: Tensor[] = [];
    let z = z0;
    for (const step of steps) {
      const next = await run.step(z, step.timestep, ddimWeights(step.from, step.to));
      const sampled = await run.step(next, step.timestep, ddimWeights(step.to, step.from));
      offsets.unshift(await run.combine([z, sampled], [1, -1]));
      run.free(z, sampled);
      z = next;
      await run.stepDone(step, z);
    }
    return { latent: z, offsets };
  },
};
