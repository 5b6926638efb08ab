// The HTML report of `easyinv compare`: one self-contained page (inline CSS, inline SVG, pictures as data: URIs),
// so it can be mailed or archived as a single file and opened offline, with no script and no network request.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { digits, fixed, meanStd, mebibytes } from '../format';
import type { Grid, MethodRow, PaperRow, Summary } from './types';

export const escapeHtml = (text: string): string =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

const HEADERS = ['Method', 'dtype', 'Steps', 'LPIPS ↓', 'SSIM ↑', 'PSNR (dB) ↑', 'Inversion (s) ↓', 'Images',
  'UNet calls', 'Peak memory (MiB)'];

function ourRow(row: MethodRow, lpipsAvailable: boolean): string[] {
  // Without an LPIPS network nothing was measured: never print a value, even one a caller left in the row.
  const lpips = lpipsAvailable && row.lpips ? meanStd(row.lpips, digits.lpips) : 'n/a';
  return [row.method, row.dtype, String(row.steps), lpips, meanStd(row.ssim, digits.ssim), meanStd(row.psnr, digits.psnr),
    meanStd(row.seconds, digits.seconds), String(row.psnr.count), String(row.unetCalls), mebibytes(row.peakMemoryBytes)];
}

const paperRow = (p: PaperRow): string[] => [`${p.method} (paper)`, p.dtype, '', fixed(p.lpips, digits.lpips),
  fixed(p.ssim, digits.ssim), fixed(p.psnr, digits.psnr), fixed(p.seconds, digits.seconds), '', '', ''];

/** Our rows, each followed by the paper's matching row; paper rows with no counterpart of ours come last. */
function table(rows: MethodRow[], paper: PaperRow[], matchDtype: boolean, lpipsAvailable: boolean): string {
  const matches = (p: PaperRow, r: MethodRow) => p.method === r.method && (!matchDtype || p.dtype === r.dtype);
  const used = new Set<PaperRow>();
  const body: { cells: string[]; paper: boolean }[] = [];
  for (const row of rows) {
    body.push({ cells: ourRow(row, lpipsAvailable), paper: false });
    for (const p of paper.filter((q) => matches(q, row) && !used.has(q))) {
      used.add(p);
      body.push({ cells: paperRow(p), paper: true });
    }
  }
  for (const p of paper.filter((q) => !used.has(q))) body.push({ cells: paperRow(p), paper: true });
  const tr = (cells: string[], tag: string, cls = '') =>
    `<tr${cls}>${cells.map((c) => `<${tag}>${escapeHtml(c)}</${tag}>`).join('')}</tr>`;
  return `<table><thead>${tr(HEADERS, 'th')}</thead><tbody>\n${body
    .map((r) => tr(r.cells, 'td', r.paper ? ' class="paper"' : ''))
    .join('\n')}\n</tbody></table>`;
}

/** About five round tick values (1, 2 or 5 × 10^k apart) covering [lo, hi]. */
function ticks(lo: number, hi: number): number[] {
  const raw = (hi - lo) / 5;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

// Widens a range that is empty (one method, or equal values) so the scale does not divide by zero.
function span(values: number[], fromZero: boolean): [number, number] {
  let lo = fromZero ? 0 : Math.min(...values);
  let hi = Math.max(...values);
  if (hi - lo < 1e-9) [lo, hi] = fromZero ? [0, hi > 0 ? hi : 1] : [lo - 1, hi + 1];
  const pad = (hi - lo) * 0.08;
  return [fromZero ? lo : lo - pad, hi + pad];
}

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

/**
 * A scatter of mean inversion seconds (x) against mean PSNR (y), one filled dot per method with a ±std whisker on
 * both axes, and the paper's figures as hollow diamonds in the method's colour: up and left is better.
 */
function chart(rows: MethodRow[], paper: PaperRow[]): string {
  type Point = { label: string; x: number; y: number; dx: number; dy: number; colour: string; paper: boolean };
  const methods = [...new Set([...rows.map((r) => r.method), ...paper.map((p) => p.method)])];
  const colour = (method: string) => COLOURS[methods.indexOf(method) % COLOURS.length];
  const points: Point[] = [
    ...rows.map((r) => ({ label: r.method, x: r.seconds.mean, y: r.psnr.mean, dx: r.seconds.std, dy: r.psnr.std,
      colour: colour(r.method), paper: false })),
    ...paper.map((p) => ({ label: `${p.method} (paper)`, x: p.seconds, y: p.psnr, dx: 0, dy: 0,
      colour: colour(p.method), paper: true })),
  ].filter((p) => [p.x, p.y, p.dx, p.dy].every(Number.isFinite));
  if (points.length === 0) return '<p class="note">No finite time and PSNR values to chart.</p>';

  const [W, H, left, right, top, bottom] = [720, 400, 64, 150, 20, 50];
  const [x0, x1] = span(points.flatMap((p) => [p.x - p.dx, p.x + p.dx]).concat(0), true);
  const [y0, y1] = span(points.flatMap((p) => [p.y - p.dy, p.y + p.dy]), false);
  const sx = (x: number) => left + ((x - x0) / (x1 - x0)) * (W - left - right);
  const sy = (y: number) => H - bottom - ((y - y0) / (y1 - y0)) * (H - top - bottom);
  const f = (v: number) => v.toFixed(1);

  const xTicks = ticks(x0, x1).filter((t) => t >= x0 && t <= x1);
  const yTicks = ticks(y0, y1).filter((t) => t >= y0 && t <= y1);
  const grid = [
    ...xTicks.map((t) => `<line class="grid" x1="${f(sx(t))}" x2="${f(sx(t))}" y1="${top}" y2="${H - bottom}"/>` +
      `<text x="${f(sx(t))}" y="${H - bottom + 16}" text-anchor="middle">${t}</text>`),
    ...yTicks.map((t) => `<line class="grid" x1="${left}" x2="${W - right}" y1="${f(sy(t))}" y2="${f(sy(t))}"/>` +
      `<text x="${left - 6}" y="${f(sy(t) + 4)}" text-anchor="end">${t}</text>`),
  ];
  const marks = points.map((p) => {
    const [cx, cy] = [sx(p.x), sy(p.y)];
    const whiskers = p.paper ? '' :
      `<line x1="${f(sx(p.x - p.dx))}" x2="${f(sx(p.x + p.dx))}" y1="${f(cy)}" y2="${f(cy)}" stroke="${p.colour}"/>` +
      `<line x1="${f(cx)}" x2="${f(cx)}" y1="${f(sy(p.y - p.dy))}" y2="${f(sy(p.y + p.dy))}" stroke="${p.colour}"/>`;
    const mark = p.paper
      ? `<path d="M${f(cx)} ${f(cy - 6)}l6 6l-6 6l-6 -6z" fill="white" stroke="${p.colour}" stroke-width="2"/>`
      : `<circle class="point" cx="${f(cx)}" cy="${f(cy)}" r="5" fill="${p.colour}"/>`;
    return `<g><title>${escapeHtml(`${p.label}: ${fixed(p.x, 2)} s, ${fixed(p.y, 2)} dB`)}</title>${whiskers}${mark}` +
      // The paper's points go unlabelled (the legend gives their colour) so they cannot overprint ours.
      (p.paper ? '' : `<text x="${f(cx + 9)}" y="${f(cy - 7)}">${escapeHtml(p.label)}</text>`) + '</g>';
  });
  const legend = methods.map((m, i) => `<circle cx="${W - right + 24}" cy="${top + 10 + 18 * i}" r="5" ` +
    `fill="${colour(m)}"/><text x="${W - right + 36}" y="${top + 14 + 18 * i}">${escapeHtml(m)}</text>`);
  if (paper.length > 0) {
    const y = top + 10 + 18 * methods.length;
    legend.push(`<path d="M${W - right + 24} ${y - 6}l6 6l-6 6l-6 -6z" fill="white" stroke="#333" stroke-width="2"/>` +
      `<text x="${W - right + 36}" y="${y + 4}">paper</text>`);
  }
  return `<svg id="chart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" ` +
    `aria-label="Inversion time against PSNR per method">
<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>
${grid.join('\n')}
<line class="axis" x1="${left}" x2="${W - right}" y1="${H - bottom}" y2="${H - bottom}"/>
<line class="axis" x1="${left}" x2="${left}" y1="${top}" y2="${H - bottom}"/>
<text x="${(left + W - right) / 2}" y="${H - 10}" text-anchor="middle">mean inversion time per image (s)</text>
<text transform="translate(16 ${(top + H - bottom) / 2}) rotate(-90)" text-anchor="middle">mean PSNR (dB)</text>
${marks.join('\n')}
${legend.join('\n')}
</svg>`;
}

const MIME: Record<string, string> = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.webp': 'image/webp' };

function figure(grid: Grid, outDir: string): string {
  const caption = `<figcaption>${escapeHtml(grid.image)} <span class="dtype">${escapeHtml(grid.dtype)}</span></figcaption>`;
  let data: Buffer;
  try {
    data = fs.readFileSync(path.join(outDir, grid.file));
  } catch {
    // A lost picture should not cost the whole report at the end of a long run; say which one is missing.
    return `<figure>${caption}<p class="note">Picture missing: ${escapeHtml(grid.file)}</p></figure>`;
  }
  const mime = MIME[path.extname(grid.file).toLowerCase()] ?? 'image/png';
  return `<figure>${caption}<img src="data:${mime};base64,${data.toString('base64')}" ` +
    `alt="${escapeHtml(`${grid.image} (${grid.dtype}): original and reconstructions`)}"></figure>`;
}

const CSS = `
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 2em auto; max-width: 1200px; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #555; margin-top: 0; }
/* A narrow window scrolls a wide table instead of squeezing its numbers onto two lines. */
.wide { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: .5em 0; }
th, td { padding: .3em .5em; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
thead th { background: #f3f3f3; }
tr.paper td { color: #666; font-style: italic; background: #fafafa; }
.note { background: #fff6e0; border-left: 4px solid #e0a800; padding: .4em .8em; }
svg text { font: 12px system-ui, sans-serif; fill: #333; }
svg .grid { stroke: #eee; } svg .axis { stroke: #333; }
figure { margin: 1.2em 0; } figcaption { font-weight: 600; margin-bottom: .3em; word-break: break-all; }
figcaption .dtype { font-weight: normal; color: #666; margin-left: .5em; }
img { max-width: 100%; height: auto; image-rendering: pixelated; border: 1px solid #ddd; }
ul.skipped li code { word-break: break-all; }
`;

/** The whole report as one HTML document; the grid pictures are read from `outDir` and embedded. */
export function renderReport(summary: Summary, grids: Grid[], outDir: string): string {
  const { model, images, skipped, lpipsNetwork, table1, table2, paper } = summary;
  const lpipsAvailable = lpipsNetwork !== null;
  const title = `easyinv compare: ${model.name}`;
  const lpipsNote = lpipsAvailable
    ? `<p class="meta">LPIPS network: ${escapeHtml(lpipsNetwork)}</p>`
    : '<p class="note">LPIPS unavailable: the run had no LPIPS network, so no LPIPS was measured.</p>';
  const paperNote = paper
    ? '<p class="meta">Rows in <i>italics</i> are the paper\'s figures (SD-V1-4, 2,298 COCO images, one RTX 3090).</p>'
    : '';
  const skippedList = skipped.length === 0 ? '<p>None.</p>' : `<ul class="skipped">${skipped
    .map((s) => `<li><code>${escapeHtml(s.file)}</code>: ${escapeHtml(s.reason)}</li>`).join('\n')}</ul>`;
  return htmlPage(title, `<p class="meta">Family ${escapeHtml(model.family)} · device ${escapeHtml(model.device)} · ${images} image${images === 1 ? '' : 's'}` +
    ` · values are mean ± std over images</p>
${lpipsNote}
${paperNote}
<h2>Table 1: methods</h2>
<div class="wide">${table(table1, paper?.table1 ?? [], false, lpipsAvailable)}</div>
<h2>Table 2: methods and dtypes</h2>
<div class="wide">${table(table2, paper?.table2 ?? [], true, lpipsAvailable)}</div>
<h2>Time and quality</h2>
${chart(table1, paper?.table1 ?? [])}
<h2>Skipped files (${skipped.length})</h2>
${skippedList}
<h2>Pictures</h2>
<p class="meta">Each picture: the original, then each method's reconstruction.</p>
${grids.length === 0 ? '<p>No pictures.</p>' : grids.map((g) => figure(g, outDir)).join('\n')}`);
}

/** A self-contained page in the report's look: `body` (HTML) under the title, no script, no request. */
export function htmlPage(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}
