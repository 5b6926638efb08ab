import type { Tensor } from '../native';
import type { Transition } from '../schedule';
import type { Run } from './run';

/**
 * DDIM sampling from z_T to a clean latent: z_s = DDIM(z_t -> s, eps(z_t, t)), plus, when given (method 'direct'),
 * each step's stored offset.
 */
export async function sample(run: Run, zT: Tensor, steps: Transition[], offsets?: Tensor[]): Promise<Tensor> {
  let z = zT;
  for (const step of steps) {
    const eps = await run.eps(z, step.timestep);
    let next = await run.ddim(z, eps, step);
    if (offsets) {
      const corrected = await run.combine([next, offsets[step.index]], [1, 1]);
      run.free(next);
      next = corrected;
    }
    run.free(z, eps);
    z = next;
    await run.stepDone(step, z);
  }
  return z;
}
