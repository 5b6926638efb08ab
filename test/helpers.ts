import * as path from 'path';

export const weights = (name: string) => path.join(__dirname, '..', 'weights', 'test', name);

type Numbers = ArrayLike<number>;

export function maxAbsDifference(a: Numbers, b: Numbers): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** The live tensor count once every unreachable handle has been collected, so earlier tests' garbage cannot skew it. */
export async function settledLiveTensors(): Promise<number> {
  const { liveTensors } = await import('../src');
  const v8 = await import('v8');
  const vm = await import('vm');
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  let count = -1;
  while (count !== liveTensors()) {
    count = liveTensors();
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return count;
}
