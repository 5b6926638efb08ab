import { availableParallelism } from 'os';

import { capabilities, setThreads } from '../src';
import { defaultThreads, loadWithThreadSettings } from '../src/threads';
import { runIsolated } from './isolated';

// Errors made by the addon come from Node's realm, not jest's: compared by name and message.
const thrown = (call: () => unknown) => {
  try {
    call();
  } catch (error) {
    return { name: (error as Error).name, message: (error as Error).message };
  }
  throw new Error('did not throw');
};

// The environment of a user who set none of the thread variables, plus `extra`.
const envWith = (extra: NodeJS.ProcessEnv) => {
  const env = { ...process.env, ...extra };
  for (const name of ['OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'OPENBLAS_NUM_THREADS']) if (!(name in extra)) delete env[name];
  return env;
};

describe('thread defaults', () => {
  test('every CPU the process may use, unless MKL_NUM_THREADS or OMP_NUM_THREADS says otherwise (MKL first, as LibTorch)', () => {
    expect(defaultThreads({})).toBe(availableParallelism());
    expect(defaultThreads({ OMP_NUM_THREADS: '' })).toBe(availableParallelism());
    expect(defaultThreads({ OMP_NUM_THREADS: '3' })).toBe(3);
    expect(defaultThreads({ OMP_NUM_THREADS: '3', MKL_NUM_THREADS: ' 5 ' })).toBe(5);
  });

  test.each(['0', '-1', '2.5', 'two', '1e2', '4,2', '100000'])('OMP_NUM_THREADS=%s is a RangeError naming it', (value) => {
    expect(() => defaultThreads({ OMP_NUM_THREADS: value })).toThrow(RangeError);
    expect(() => defaultThreads({ OMP_NUM_THREADS: value })).toThrow(`easyinv: OMP_NUM_THREADS must be a whole number of threads from 1 to 1024, not '${value}'`);
  });

  test('the library sets them when it loads the addon, and capabilities() reports them', async () => {
    const report = 'console.log(JSON.stringify((await easyinv.capabilities()).threads));';
    const plain = await runIsolated(report, 60_000, envWith({}));
    expect(plain.stderr).toBe('');
    expect(JSON.parse(plain.stdout)).toBe(availableParallelism());
    const one = await runIsolated(report, 60_000, envWith({ OMP_NUM_THREADS: '1' }));
    expect(JSON.parse(one.stdout)).toBe(1);
    const three = await runIsolated(report, 60_000, envWith({ OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '3' }));
    expect(JSON.parse(three.stdout)).toBe(3);
  });

  test('a bad variable fails the first native call with its name, and nothing crashes', async () => {
    const run = await runIsolated('await easyinv.capabilities();', 60_000, envWith({ OMP_NUM_THREADS: 'all' }));
    expect(run.code).toBe(3);
    expect(run.stderr).toContain("RangeError: easyinv: OMP_NUM_THREADS must be a whole number of threads from 1 to 1024, not 'all'");
  });

  test('the addon loads with a short OpenMP spin and one OpenBLAS thread, each unless the user chose', () => {
    const seen = (env: NodeJS.ProcessEnv) => {
      const during = loadWithThreadSettings(() => ({ ...env }), env);
      return { during, after: env };
    };
    expect(seen({ HOME: 'h' })).toEqual({ during: { HOME: 'h', GOMP_SPINCOUNT: '30000', OPENBLAS_NUM_THREADS: '1' }, after: { HOME: 'h' } });
    expect(seen({ OMP_WAIT_POLICY: 'ACTIVE', OPENBLAS_NUM_THREADS: '2' }).during).toEqual({ OMP_WAIT_POLICY: 'ACTIVE', OPENBLAS_NUM_THREADS: '2' });
    expect(seen({ GOMP_SPINCOUNT: '1000' }).during).toEqual({ GOMP_SPINCOUNT: '1000', OPENBLAS_NUM_THREADS: '1' });
    const failing = { HOME: 'h' };
    expect(() => loadWithThreadSettings(() => { throw new Error('no addon'); }, failing)).toThrow('no addon');
    expect(failing).toEqual({ HOME: 'h' });
  });

  // libgomp prints the settings it read when OMP_DISPLAY_ENV is set.
  test('OpenMP loads with the short spin unless the user chose, and the environment is left as it was', async () => {
    const report = 'await easyinv.capabilities(); console.log(JSON.stringify(process.env.GOMP_SPINCOUNT ?? null));';
    const plain = await runIsolated(report, 60_000, envWith({ OMP_DISPLAY_ENV: 'VERBOSE' }));
    expect(plain.stderr).toMatch(/GOMP_SPINCOUNT = '30000'/);
    expect(JSON.parse(plain.stdout)).toBeNull();
    const chosen = await runIsolated(report, 60_000, envWith({ OMP_DISPLAY_ENV: 'VERBOSE', GOMP_SPINCOUNT: '1000' }));
    expect(chosen.stderr).toMatch(/GOMP_SPINCOUNT = '1000'/);
    expect(JSON.parse(chosen.stdout)).toBe('1000');
  });

  test('setThreads changes them for the work queued after it', async () => {
    const before = (await capabilities()).threads;
    try {
      setThreads(1);
      expect((await capabilities()).threads).toBe(1);
      setThreads(3);
      expect((await capabilities()).threads).toBe(3);
    } finally {
      setThreads(before);
    }
    expect((await capabilities()).threads).toBe(before);
  });

  test.each([[0], [-2], [1.5], [2000], [Number.NaN]])('setThreads(%s) is a RangeError naming threads', (value) => {
    expect(thrown(() => setThreads(value))).toEqual({ name: 'RangeError', message: `easyinv: threads must be an integer from 1 to 1024, not ${value}` });
  });

  test('setThreads of a non-number is a TypeError', () => {
    expect(thrown(() => setThreads('2' as unknown as number))).toEqual({ name: 'TypeError', message: 'easyinv: threads must be a number' });
  });
});
