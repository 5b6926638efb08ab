// Numbers as the summary (markdown), the report (HTML), the demo and bench print them: one set of digits per
// metric, so that the same figure reads the same everywhere.
import type { Stat } from './statistics';

/** Digits per metric, shared by our rows and the paper's (whose PSNR has three) so the two line up. */
export const digits = { lpips: 3, ssim: 3, psnr: 3, seconds: 3 } as const;

/** toFixed would print "Infinity" (PSNR of a perfect reconstruction) or "NaN"; say so plainly instead. */
export const fixed = (value: number, places: number): string =>
  Number.isFinite(value) ? value.toFixed(places) : Number.isNaN(value) ? 'n/a' : value > 0 ? '∞' : '−∞';

export const meanStd = (stat: Stat | null, places: number): string =>
  stat === null ? 'n/a' : `${fixed(stat.mean, places)} ± ${fixed(stat.std, places)}`;

export const mebibytes = (bytes: number | null): string => (bytes === null ? 'n/a' : fixed(bytes / 2 ** 20, 0));
