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

// Read once, when LibTorch's libraries load with the addon, so set for that moment only, each unless the user set it
// (or, for OpenMP, OMP_WAIT_POLICY). OpenMP's idle threads spin 300,000 rounds before they sleep: where other
// processes share the CPUs they take the time slices the working ones need (2 threads 5.5x slower than 1 on a busy
// 2-CPU machine); 30,000 kept the quiet machine's speed (sleeping at once cost it 1.7x). OpenBLAS, when it is the
// system's BLAS (Debian's LibTorch 1.13), starts a pool of its own as large as the machine, which fights LibTorch's
// (2.3x slower forwards). docs/cpu.md has the measurements.
const loadTimeSettings = [
  { name: 'GOMP_SPINCOUNT', value: '30000', unlessSet: ['GOMP_SPINCOUNT', 'OMP_WAIT_POLICY'] },
  { name: 'OPENBLAS_NUM_THREADS', value: '1', unlessSet: ['OPENBLAS_NUM_THREADS'] },
];

/** Runs `load` with the settings above in the environment, and leaves the environment as it was. */
export function loadWithThreadSettings<T>(load: () => T, env: NodeJS.ProcessEnv = process.env): T {
  const added = loadTimeSettings.filter(({ unlessSet }) => unlessSet.every((name) => env[name] === undefined));
  for (const { name, value } of added) env[name] = value;
  try {
    return load();
  } finally {
    for (const { name } of added) delete env[name];
  }
}
