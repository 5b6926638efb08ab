import * as path from 'path';

export const weights = (name: string) => path.join(__dirname, '..', 'weights', 'test', name);

type Numbers = ArrayLike<number>;

export function maxAbsDifference(a: Numbers, b: Numbers): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}
