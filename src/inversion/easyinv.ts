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
    let next = await run.ddim(z, eps, step);
    if (i > 0 && i > start * n && i < end * n) {
      const blended = await run.combine([next, z], [eta, 1 - eta]);
      run.free(next);
      next = blended;
    }
    run.free(z, eps);
    z = next;
    await run.stepDone(step, z);
  }
  return { latent: z };
};
