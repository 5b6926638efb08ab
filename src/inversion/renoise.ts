import { optionError } from '../errors';
import type { Tensor } from '../native';
import { checkCount, type Method } from './method';

// The native regulariser's limits on its step and roll counts.
const maxCount = 1000;

export interface Regularization {
  lambdaAc: number;
  lambdaKl: number;
  steps: number;
  rolls: number;
}

export interface ReNoiseOptions {
  /** Renoising iterations per step: eps re-evaluated at the current estimate of z_t, K + 1 estimates in all. */
  iterations: number;
  /** Iterations [from, to) whose noise estimates are averaged into the step's final noise. */
  average: [number, number];
  /** Noise regularisation settings; null turns it off. */
  regularization: Regularization | null;
  /** Seed of the noise that makes the regularisation's target, eps(sqrt(a_t) z0 + sqrt(1 - a_t) noise, t). */
  seed: number;
}

export interface ReNoiseUserOptions extends Partial<Omit<ReNoiseOptions, 'regularization'>> {
  /** Noise regularisation settings, or false to turn it off. */
  regularization?: Regularization | false;
}

/** The ReNoise paper's settings: 2 renoising iterations, all but the first averaged, its regulariser's weights. */
const defaults = { iterations: 2, regularization: { lambdaAc: 20, lambdaKl: 0.065, steps: 4, rolls: 5 }, seed: 0 };

// Checked here, where the names are the caller's (regularization.steps), before the native regulariser sees them.
function checkRegularization(value: Regularization): Regularization {
  if (typeof value !== 'object') {
    optionError('regularization', `must be { lambdaAc, lambdaKl, steps, rolls } or false, not ${JSON.stringify(value)}`, TypeError);
  }
  const { lambdaAc, lambdaKl, steps, rolls } = value;
  for (const [name, weight] of Object.entries({ lambdaAc, lambdaKl })) {
    if (typeof weight !== 'number' || !(weight >= 0 && weight < Infinity)) {
      optionError(`regularization.${name}`, `must be a finite number >= 0, not ${weight}`);
    }
  }
  return { lambdaAc, lambdaKl, steps: checkCount('regularization.steps', steps, maxCount), rolls: checkCount('regularization.rolls', rolls, maxCount) };
}

/**
 * ReNoise (Garibi et al. 2024): at each step, iterate z_t^(k+1) = DDIM(z_s -> t, eps(z_t^(k), t)) from
 * z_t^(0)'s noise eps(z_s, t); average the estimates in the window, optionally regularised, for the final step.
 */
export const renoise: Method<ReNoiseOptions, ReNoiseUserOptions> = {
  keys: ['iterations', 'average', 'regularization', 'seed'],
  settings(user) {
    const iterations = checkCount('iterations', user.iterations ?? defaults.iterations);
    const average = user.average ?? [1, iterations + 1];
    if (!Array.isArray(average) || average.length !== 2 || !average.every(Number.isInteger) || average[0] > average[1]) {
      optionError('average', `must be [from, to], integer iterations with from <= to, not ${JSON.stringify(average)}`);
    }
    const regularization = user.regularization === false ? null : checkRegularization(user.regularization ?? defaults.regularization);
    return { iterations, average, regularization, seed: checkCount('seed', user.seed ?? defaults.seed, Number.MAX_SAFE_INTEGER) };
  },
  async invert(run, z0, steps, { iterations, average: [from, to], regularization, seed }) {
    // One noise for every sample, so that a batch gets what its samples get one by one.
    const noise = regularization ? await run.noiseLike(z0, seed) : null;
    let z = z0;
    for (const step of steps) {
      let target: Tensor | undefined;
      if (noise) {
        const forward = await run.combine([z0, noise], [Math.sqrt(step.to), Math.sqrt(1 - step.to)]);
        target = await run.eps(forward, step.timestep);
        run.free(forward);
      }
      const regularize = async (eps: Tensor) =>
        regularization && target ? run.regularize(eps, target, { ...regularization, seed }) : eps;
      const averaged: Tensor[] = [];
      let estimate = z;
      for (let k = 0; k <= iterations; k++) {
        const eps = await run.eps(estimate, step.timestep);
        if (estimate !== z) run.free(estimate);
        const inWindow = k >= from && k < to;
        if (inWindow) averaged.push(eps);
        if (k === iterations && averaged.length > 0) break; // the averaged noise makes the final estimate
        const used = k >= from ? await regularize(eps) : eps;
        estimate = await run.ddim(z, used, step);
        if (used !== eps) run.free(used);
        if (!inWindow) run.free(eps);
      }
      if (averaged.length > 0) {
        const mean = await run.combine(averaged, averaged.map(() => 1 / averaged.length));
        const used = await regularize(mean);
        estimate = await run.ddim(z, used, step);
        run.free(mean, used, ...averaged);
      }
      if (target) run.free(target);
      if (z !== z0) run.free(z); // z0 makes every step's regularisation target
      z = estimate;
      await run.stepDone(step, z);
    }
    if (noise) run.free(noise);
    run.free(z0);
    return { latent: z };
  },
  // The auto-correlation loss is a mean over the latent's H x W positions, so each gradient step is about
  // lambdaAc / (H x W) of the noise: the default weight, set for SD's 64 x 64 latents, overshoots on small ones
  // (NaN by step 2 on 8 x 8 with lambdaAc 20; 10 converges).
  divergence: ({ regularization }, side) => (regularization && regularization.lambdaAc > 0
    ? `ReNoise's noise regularization may have diverged: each of its steps moves the noise by about lambdaAc / (H x W) ` +
      `of itself (the default 20 suits 64 x 64 latents), and regularization.lambdaAc ${regularization.lambdaAc} may be too ` +
      `large for ${side} x ${side} ones: give a smaller one, or regularization: false`
    : undefined),
};
