import type { Tensor } from '../native';
import { ddimWeights, type Transition } from '../schedule';
import type { Run } from './run';

/**
 * DDIM sampling from z_T to a clean latent: z_s = DDIM(z_t -> s, eps(z_t, t)), plus, when given (method 'direct'),
 * each step's stored offset.
 */
export async function sample(run: Run, zT: Tensor, steps: Transition[], offsets?: Tensor[]): Promise<Tensor> {
  let z = zT;
  for (const step of steps) {
    let next = await run.step(z, step.timestep, ddimWeights(step.from, step.to));
    if (offsets) {
      const corrected = await run.combine([next, offsets[step.index]], [1, 1]);
      run.free(next);
      next = corrected;
    }
    run.free(z);
    z = next;
    await run.stepDone(step, z);
  }
  return z;
}
