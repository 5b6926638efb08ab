import { ddimWeights } from '../schedule';
import type { InversionMethod } from './method';

export interface EasyInvOptions {
  /** Weight of the new latent in the blend. */
  eta: number;
  /** Fractions of N: step i blends when start * N < i < end * N (and i > 0). */
  window: [number, number];
}

/**
 * EasyInv (Zhang et al. 2024, eq. 16): DDIM inversion that, inside the window, blends each new latent with the one
 * before it, z_i <- eta z_i + (1 - eta) z_{i-1}, keeping more of the image. One UNet call per step, as DDIM.
 */
export const easyinv: InversionMethod<EasyInvOptions> = async (run, z0, steps, { eta, window: [start, end] }) => {
  const n = steps.length;
  let z = z0;
  for (const step of steps) {
    const i = step.index;
    const eps = await run.eps(z, step.timestep);
    const [a, b] = ddimWeights(step.from, step.to);
    const blend = i > 0 && i > start * n && i < end * n ? eta : 1;
    // eta DDIM(z_{i-1}, eps) + (1 - eta) z_{i-1} is one combination of z_{i-1} and eps: the blend costs nothing
    const next = await run.combine([z, eps], [blend * a + (1 - blend), blend * b]);
    run.free(z, eps);
    z = next;
    await run.stepDone(step, z);
  }
  return { latent: z };
};
