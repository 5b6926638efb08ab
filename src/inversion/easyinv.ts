import { optionError } from '../errors';
import type { Family } from '../manifest';
import type { Tensor } from '../native';
import { ddimWeights, type Transition } from '../schedule';
import { checkFraction, type Method } from './method';
import type { Run } from './run';

/**
 * 'paper': eq. 16 as the authors' example.py writes it, each step's output blended with its input.
 * 'notebook': as the authors' notebooks (by_referenceSDV1-4.ipynb, EasyInv_SDXL) compute it: eps from the step's
 * unblended input, then that input blended with the previous step's (blended) input, then the DDIM step from the blend.
 */
export type EasyInvVariant = 'paper' | 'notebook';

export interface EasyInvOptions {
  /** Weight of the new latent in the blend. */
  eta: number;
  /** Fractions of N: step i blends when start * N < i < end * N (and i > 0). */
  window: [number, number];
  variant: EasyInvVariant;
}

/** The paper's settings per model family. */
const defaults: Record<Family, EasyInvOptions> = {
  sd1: { eta: 0.5, window: [0.05, 0.25], variant: 'paper' },
  sdxl: { eta: 0.8, window: [0.85, 0.95], variant: 'paper' },
  test: { eta: 0.5, window: [0.05, 0.25], variant: 'paper' },
};

/** What the authors' notebooks run besides the blend, per family (SD-1.4's PNDM timesteps; their SDXL scheduler). */
export const notebookSettings: Record<Family, { steps: number; guidance: number; timesteps: 'ddim' | 'pndm'; stepsOffset?: number; sizeCondition?: number }> = {
  sd1: { steps: 50, guidance: 7.5, timesteps: 'pndm' },
  sdxl: { steps: 20, guidance: 5, timesteps: 'ddim', stepsOffset: 0, sizeCondition: 512 },
  test: { steps: 50, guidance: 7.5, timesteps: 'pndm' },
};

const inWindow = (i: number, n: number, [start, end]: [number, number]) => i > 0 && i > start * n && i < end * n;

async function paper(run: Run, z0: Tensor, steps: Transition[], { eta, window }: EasyInvOptions): Promise<Tensor> {
  let z = z0;
  for (const step of steps) {
    const [a, b] = ddimWeights(step.from, step.to);
    const blend = inWindow(step.index, run.steps, window) ? eta : 1;
    // eta DDIM(z_{i-1}, eps) + (1 - eta) z_{i-1} is one combination of z_{i-1} and eps: the blend costs nothing
    const next = await run.step(z, step.timestep, [blend * a + (1 - blend), blend * b]);
    run.free(z);
    z = next;
    await run.stepDone(step, z);
  }
  return z;
}

async function notebook(run: Run, z0: Tensor, steps: Transition[], { eta, window }: EasyInvOptions): Promise<Tensor> {
  let z = z0;
  let previous: Tensor | undefined;
  for (const step of steps) {
    const eps = await run.eps(z, step.timestep);
    if (previous !== undefined && inWindow(step.index, run.steps, window)) {
      const blended = await run.combine([z, previous], [eta, 1 - eta]);
      run.free(z);
      z = blended;
    }
    if (previous !== undefined) run.free(previous);
    previous = z;
    z = await run.ddim(previous, eps, step);
    run.free(eps);
    await run.stepDone(step, z);
  }
  if (previous !== undefined) run.free(previous);
  return z;
}

/**
 * EasyInv (Zhang et al. 2024, eq. 16): DDIM inversion that, inside the window, blends each new latent with the one
 * before it, z_i <- eta z_i + (1 - eta) z_{i-1}, keeping more of the image. One UNet call per step, as DDIM.
 */
export const easyinv: Method<EasyInvOptions> = {
  keys: ['eta', 'window', 'variant'],
  settings(user, family) {
    const { eta, window, variant } = { ...defaults[family], ...user };
    checkFraction('eta', eta);
    // One check of the pair, so that its message names `window`: one flag on the command line (--window START,END).
    const fractions = Array.isArray(window) && window.length === 2 && window.every((edge) => typeof edge === 'number' && edge >= 0 && edge <= 1);
    if (!fractions || window[0] > window[1]) {
      optionError('window', `must be [start, end], fractions of the steps with 0 <= start <= end <= 1, not ${JSON.stringify(window)}`);
    }
    if (variant !== 'paper' && variant !== 'notebook') optionError('variant', `must be 'paper' or 'notebook', not ${JSON.stringify(variant)}`);
    return { eta, window, variant };
  },
  async invert(run, z0, steps, options) {
    return { latent: await (options.variant === 'notebook' ? notebook : paper)(run, z0, steps, options) };
  },
};
