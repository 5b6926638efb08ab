// How many threads LibTorch computes with on each device thread when the host says nothing. LibTorch's own default
// is the number of physical cores as cpuinfo counts them, which is 1 on some virtual machines with 2 CPUs (Debian's
// LibTorch 1.13 here), leaving half the machine idle; docs/cpu.md has the measurements behind this choice.
import { availableParallelism } from 'os';

import { rangeError } from './errors';

// In LibTorch's order of precedence: MKL_NUM_THREADS, when set, overrides OMP_NUM_THREADS.
const threadVariables = ['MKL_NUM_THREADS', 'OMP_NUM_THREADS'] as const;

/** The count a user set in the environment (MKL_NUM_THREADS, then OMP_NUM_THREADS), else every CPU this process may run on. */
export function defaultThreads(env: NodeJS.ProcessEnv = process.env): number {
  for (const name of threadVariables) {
    const value = env[name]?.trim();
    if (!value) continue;
    if (!/^[1-9]\d{0,3}$/.test(value)) rangeError(`${name} must be a whole number of threads from 1 to 1024, not '${env[name]}'`);
    return Math.min(Number(value), 1024);
  }
  return availableParallelism();
}

/**
 * Loads the addon with OpenMP's idle threads sleeping at once (OMP_WAIT_POLICY=PASSIVE) unless the user chose
 * (OMP_WAIT_POLICY or GOMP_SPINCOUNT set). OpenMP reads the variable once, when LibTorch loads it; the environment is
 * restored after. By default they spin first, and where other processes share the CPUs the spinning threads take the
 * time slices the working ones need: 2 threads were 5x slower than 1 on a busy 2-CPU machine (docs/cpu.md).
 */
export function loadWithPassiveWaits<T>(load: () => T, env: NodeJS.ProcessEnv = process.env): T {
  if (env.OMP_WAIT_POLICY !== undefined || env.GOMP_SPINCOUNT !== undefined) return load();
  env.OMP_WAIT_POLICY = 'PASSIVE';
  try {
    return load();
  } finally {
    delete env.OMP_WAIT_POLICY;
  }
}
