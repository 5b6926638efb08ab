import { checkCount, type Method } from './method';

export interface FixedPointOptions {
  /** Refinements per step, one UNet call each, after the first DDIM estimate (default 5). */
  refinements: number;
}

/**
 * Fixed-point iteration (Pan et al. 2023; EasyInv eq. 11): solve z_t = DDIM(z_s -> t, eps(z_t, t)) by
 * eps^0 = eps(z_s, t), z^1 = DDIM(eps^0), eps^n = eps(z^n, t), z^{n+1} = DDIM((eps^n + eps^{n-1}) / 2).
 */
export const fixedPoint: Method<FixedPointOptions> = {
  keys: ['refinements'],
  settings: ({ refinements = 5 }) => ({ refinements: checkCount('refinements', refinements) }),
  async invert(run, z0, steps, { refinements }) {
    let z = z0;
    for (const step of steps) {
      let previous = await run.eps(z, step.timestep);
      let estimate = await run.ddim(z, previous, step);
      for (let n = 1; n <= refinements; n++) {
        const eps = await run.eps(estimate, step.timestep);
        const averaged = await run.combine([eps, previous], [0.5, 0.5]);
        run.free(estimate, previous);
        estimate = await run.ddim(z, averaged, step);
        run.free(averaged);
        previous = eps;
      }
      run.free(z, previous);
      z = estimate;
      await run.stepDone(step, z);
    }
    return { latent: z };
  },
};
