import { ddimWeights } from '../schedule';
import type { Method } from './method';

/** DDIM inversion: z_t = DDIM(z_s -> t, eps(z_s, t)), the UNet evaluated at the destination timestep t. */
export const ddim: Method<object> = {
  keys: [],
  settings: () => ({}),
  async invert(run, z0, steps) {
    let z = z0;
    for (const step of steps) {
      const next = await run.step(z, step.timestep, ddimWeights(step.from, step.to));
      run.free(z);
      z = next;
      await run.stepDone(step, z);
    }
    return { latent: z };
  },
};
