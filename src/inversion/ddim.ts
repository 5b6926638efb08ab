import type { Method } from './method';

/** DDIM inversion: z_t = DDIM(z_s -> t, eps(z_s, t)), the UNet evaluated at the destination timestep t. */
export const ddim: Method<object> = {
  keys: [],
  settings: () => ({}),
  async invert(run, z0, steps) {
    let z = z0;
    for (const step of steps) {
      const eps = await run.eps(z, step.timestep);
      const next = await run.ddim(z, eps, step);
      run.free(z, eps);
      z = next;
      await run.stepDone(step, z);
    }
    return { latent: z };
  },
};
