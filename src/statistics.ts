// The statistics every table reports: mean ± (population) standard deviation over images, and medians of timings.

/** Mean and (population) standard deviation over `count` values. */
export interface Stat {
  mean: number;
  std: number;
  count: number;
}

export function stat(values: number[]): Stat {
  const count = values.length;
  const mean = values.reduce((sum, v) => sum + v, 0) / count;
  const variance = values.reduce((sum, v) => sum + (v - mean) ** 2, 0) / count;
  return { mean, std: Math.sqrt(variance), count };
}

export const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
