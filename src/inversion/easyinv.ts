import { rangeError } from '../errors';
import type { Family } from '../manifest';
import { ddimWeights } from '../schedule';
import { checkFraction, type Method } from './method';

export interface EasyInvOptions {
  /** Weight of the new latent in the blend. */
  eta: number;
  /** Fractions of N: step i blends when start * N < i < end * N (and i > 0). */
  window: [number, number];
}

/** The paper's settings per model family. */
const defaults: Record<Family, EasyInvOptions> = {
  sd1: { eta: 0.5, window: [0.05, 0.25] },
  sdxl: { eta: 0.8, window: [0.85, 0.95] },
  test: { eta: 0.5, window: [0.05, 0.25] },
};

/**
 * EasyInv (Zhang et al. 2024, eq. 16): DDIM inversion that, inside the window, blends each new latent with the one
 * before it, z_i <- eta z_i + (1 - eta) z_{i-1}, keeping more of the image. One UNet call per step, as DDIM.
 */
export const easyinv: Method<EasyInvOptions> = {
  keys: ['eta', 'window'],
  settings(user, family) {
    const { eta, window } = { ...defaults[family], ...user };
    checkFraction('eta', eta);
    if (!Array.isArray(window) || window.length !== 2) rangeError('window must be [start, end], fractions of the steps');
    window.forEach((edge, i) => checkFraction(`window[${i}]`, edge));
    if (window[0] > window[1]) rangeError(`window start ${window[0]} is after its end ${window[1]}`);
    return { eta, window };
  },
  async invert(run, z0, steps, { eta, window: [start, end] }) {
    const n = steps.length;
    let z = z0;
    for (const step of steps) {
      const i = step.index;
      const [a, b] = ddimWeights(step.from, step.to);
      const blend = i > 0 && i > start * n && i < end * n ? eta : 1;
      // eta DDIM(z_{i-1}, eps) + (1 - eta) z_{i-1} is one combination of z_{i-1} and eps: the blend costs nothing
      const next = await run.step(z, step.timestep, [blend * a + (1 - blend), blend * b]);
      run.free(z);
      z = next;
      await run.stepDone(step, z);
    }
    return { latent: z };
  },
};
