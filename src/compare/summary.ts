// From results.jsonl lines to the paper's two tables (and our figures beside the paper's).
import { digits, fixed, meanStd, mebibytes } from '../format';
import { stat } from '../statistics';
import type { MethodRow, PaperRow, ResultLine, Summary } from './types';

/** SPEC section 7: SD-V1-4, 2,298 COCO images, fp16, one RTX 3090; and EasyInv in fp32 against fp16. */
const paperTable1: PaperRow[] = [
  { method: 'ddim', dtype: 'float16', lpips: 0.328, ssim: 0.621, psnr: 29.717, seconds: 5 },
  { method: 'renoise', dtype: 'float16', lpips: 0.316, ssim: 0.641, psnr: 31.025, seconds: 16 },
  { method: 'fixed-point', dtype: 'float16', lpips: 0.373, ssim: 0.563, psnr: 29.107, seconds: 14 },
  { method: 'easyinv', dtype: 'float16', lpips: 0.321, ssim: 0.646, psnr: 30.189, seconds: 5 },
];
const paperTable2: PaperRow[] = [
  { method: 'easyinv', dtype: 'float32', lpips: 0.321, ssim: 0.646, psnr: 30.184, seconds: 9 },
  { method: 'easyinv', dtype: 'float16', lpips: 0.321, ssim: 0.646, psnr: 30.189, seconds: 5 },
];

export function isSd14(name: string): boolean {
  return /stable-diffusion-v1-4/i.test(name);
}

function row(method: string, dtype: string, lines: ResultLine[]): MethodRow {
  const lpipsValues = lines.map((l) => l.lpips);
  const peaks = lines.map((l) => l.peakMemoryBytes).filter((p): p is number => p !== null);
  return {
    method,
    dtype,
    steps: lines[0].steps,
    lpips: lpipsValues.every((v): v is number => v !== null) ? stat(lpipsValues) : null,
    ssim: stat(lines.map((l) => l.ssim)),
    psnr: stat(lines.map((l) => l.psnr)),
    seconds: stat(lines.map((l) => l.invertSeconds)),
    unetCalls: stat(lines.map((l) => l.unetCalls)).mean,
    peakMemoryBytes: peaks.length > 0 ? Math.max(...peaks) : null,
  };
}

/** Rows per method and dtype, in the order methods and dtypes first appear (or as given). */
export function summarize(
  lines: ResultLine[],
  skipped: Summary['skipped'],
  model: Summary['model'],
  lpipsNetwork: string | null,
  order: { methods: string[]; dtypes: string[] },
): Summary {
  const table2: MethodRow[] = [];
  for (const method of order.methods) {
    for (const dtype of order.dtypes) {
      const matching = lines.filter((l) => l.method === method && l.dtype === dtype);
      if (matching.length > 0) table2.push(row(method, dtype, matching));
    }
  }
  const table1 = table2.filter((r) => r.dtype === order.dtypes[0]);
  return {
    model,
    images: new Set(lines.map((l) => l.image)).size,
    skipped,
    lpipsNetwork,
    table1,
    table2,
    paper: isSd14(model.name) ? { table1: paperTable1, table2: paperTable2 } : null,
  };
}


function markdownTable(rows: MethodRow[], paper: PaperRow[]): string[] {
  const lines = [
    '| method | dtype | steps | LPIPS | SSIM | PSNR (dB) | inversion (s) | UNet calls | peak memory (MiB) | images |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.method} | ${r.dtype} | ${r.steps} | ${meanStd(r.lpips, digits.lpips)} | ${meanStd(r.ssim, digits.ssim)} | ` +
      `${meanStd(r.psnr, digits.psnr)} | ${meanStd(r.seconds, digits.seconds)} | ${r.unetCalls} | ${mebibytes(r.peakMemoryBytes)} | ${r.ssim.count} |`),
  ];
  for (const p of paper) {
    lines.push(`| ${p.method} (paper) | ${p.dtype} | | ${fixed(p.lpips, digits.lpips)} | ${fixed(p.ssim, digits.ssim)} | ${fixed(p.psnr, digits.psnr)} | ${p.seconds} | | | 2298 |`);
  }
  return lines;
}

export function summaryMarkdown(summary: Summary): string {
  const { model, paper } = summary;
  return [
    `# easyinv compare: ${model.name}`,
    '',
    `${model.family} on ${model.device}; ${summary.images} images; ${summary.skipped.length} files skipped.`,
    summary.lpipsNetwork ? `LPIPS network: ${summary.lpipsNetwork}.` : 'LPIPS: n/a (no LPIPS network given: make one with tools/export_lpips.py and pass --lpips).',
    '',
    '## Table 1: inversion and reconstruction per method',
    '',
    ...markdownTable(summary.table1, paper?.table1 ?? []),
    '',
    '## Table 2: per method and dtype',
    '',
    ...markdownTable(summary.table2, paper?.table2 ?? []),
    ...(summary.skipped.length > 0 ? ['', '## Skipped files', '', ...summary.skipped.map((s) => `- ${s.file}: ${s.reason}`)] : []),
    '',
  ].join('\n');
}
