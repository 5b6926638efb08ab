// The compare report: a self-contained page that escapes what comes from data, is honest about a missing LPIPS
// network, and really renders (pictures decoded, chart drawn) in a headless Chromium.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { renderReport } from '../src/compare/report';
import type { Grid, MethodRow, Stat, Summary } from '../src/compare/types';
import { withPage } from './helpers';

const NASTY = 'cat <b>&"quoted".png';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-report-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

const stat = (mean: number, std: number, count = 4): Stat => ({ mean, std, count });

function row(method: string, dtype: string, k: number, withLpips: boolean): MethodRow {
  return {
    method, dtype, steps: 50,
    lpips: withLpips ? stat(0.3 - 0.05 * k, 0.041) : null,
    ssim: stat(0.55 + 0.06 * k, 0.087),
    psnr: stat(19.5 + 1.5 * k, 1.234),
    seconds: stat(2.5 + 4 * k + (dtype === 'float32' ? 3 : 0), 0.318),
    unetCalls: 50 * (k + 1),
    peakMemoryBytes: dtype === 'float16' ? 3.5 * 2 ** 30 : 5.25 * 2 ** 30,
  };
}

function summary(withLpips: boolean, withPaper: boolean): Summary {
  const methods = ['ddim', 'easyinv', 'renoise'];
  const table2 = ['float16', 'float32'].flatMap((dtype) => methods.map((m, k) => row(m, dtype, k, withLpips)));
  return {
    model: { name: 'stable-diffusion-v1-4', family: 'sd1', device: 'cuda:0' },
    images: 4,
    skipped: [{ file: NASTY, reason: 'not an image: <unsupported> & "broken"' }, { file: 'notes.txt', reason: 'not an image' }],
    lpipsNetwork: withLpips ? 'lpips-vgg.pt' : null,
    table1: table2.filter((r) => r.dtype === 'float16'),
    table2,
    paper: withPaper ? {
      table1: [
        { method: 'ddim', dtype: 'float16', lpips: 0.328, ssim: 0.621, psnr: 18.63, seconds: 5 },
        { method: 'easyinv', dtype: 'float16', lpips: 0.321, ssim: 0.646, psnr: 18.87, seconds: 5 },
        { method: 'renoise', dtype: 'float16', lpips: 0.316, ssim: 0.641, psnr: 19.13, seconds: 31 },
      ],
      table2: [
        { method: 'easyinv', dtype: 'float16', lpips: 0.321, ssim: 0.646, psnr: 18.87, seconds: 5 },
        { method: 'easyinv', dtype: 'float32', lpips: 0.320, ssim: 0.647, psnr: 18.88, seconds: 9 },
      ],
    } : null,
  };
}

/** Writes one small PNG per image and dtype under outDir/grids, as `easyinv compare` does. */
async function writeGrids(outDir: string): Promise<Grid[]> {
  fs.mkdirSync(path.join(outDir, 'grids'), { recursive: true });
  const grids: Grid[] = [];
  const colours = ['#c03030', '#3060c0', '#30a050', '#d0a020'];
  let i = 0;
  for (const image of [NASTY, 'street/bus.jpg']) {
    for (const dtype of ['float16', 'float32']) {
      const file = `grids/${i}-${dtype}.png`;
      await sharp({ create: { width: 96, height: 32, channels: 3, background: colours[i % colours.length] } })
        .png().toFile(path.join(outDir, file));
      grids.push({ image, dtype, file });
      i++;
    }
  }
  return grids;
}

async function writeReport(name: string, s: Summary): Promise<{ html: string; file: string }> {
  const outDir = fs.mkdtempSync(path.join(scratch, `${name}-`));
  const html = renderReport(s, await writeGrids(outDir), outDir);
  const file = path.join(outDir, 'report.html');
  fs.writeFileSync(file, html);
  return { html, file };
}

describe('renderReport: the HTML', () => {
  test('is self-contained, escapes data, and shows mean ± std with the paper beside ours', async () => {
    const { html } = await writeReport('full', summary(true, true));
    expect(html).not.toMatch(/\b(?:src|href|xlink:href|action)\s*=\s*["']?\s*(?:https?:)?\/\//i);
    expect(html).not.toMatch(/url\(\s*["']?\s*(?:https?:)?\/\//i);
    expect(html).not.toMatch(/<script|<link\b/i);
    expect(html).toMatch(/<img src="data:image\/png;base64,[A-Za-z0-9+/=]+"/);

    expect(html).not.toContain('<b>');
    expect(html).not.toContain(NASTY);
    expect(html).toContain('cat &lt;b&gt;&amp;&quot;quoted&quot;.png');
    expect(html).toContain('not an image: &lt;unsupported&gt; &amp; &quot;broken&quot;');
    expect(html).toContain('Skipped files (2)');

    expect(html).toContain('stable-diffusion-v1-4');
    expect(html).toMatch(/sd1[^<]*cuda:0[^<]*4 images/);
    // ddim float16 (k = 0): LPIPS 3 digits, SSIM 3, PSNR 3, seconds 3 (as the summary); memory in whole MiB.
    expect(html).toContain('<td>0.300 ± 0.041</td><td>0.550 ± 0.087</td><td>19.500 ± 1.234</td><td>2.500 ± 0.318</td>' +
      '<td>4</td><td>50</td><td>3584</td>');
    expect(html).toContain('<td>5376</td>');
    expect(html).not.toContain('LPIPS unavailable');
    expect(html).toContain('<td>easyinv (paper)</td><td>float32</td><td></td><td>0.320</td><td>0.647</td><td>18.880</td>');
    expect(html).toContain('<td>renoise (paper)</td><td>float16</td><td></td><td>0.316</td>');
    expect(html).toMatch(/<svg id="chart"[\s\S]*<\/svg>/);
  });

  test('says LPIPS is unavailable and shows no LPIPS value without an LPIPS network', async () => {
    const s = summary(false, false);
    // Even a stray value left in a row must not appear when the run had no network.
    s.table1[0] = { ...s.table1[0], lpips: stat(0.777, 0.011) };
    const { html } = await writeReport('nolpips', s);
    expect(html).toContain('LPIPS unavailable');
    expect(html).not.toContain('0.777');
    const lpipsCells = [...html.matchAll(/<tr><td>\w+<\/td><td>float(?:16|32)<\/td><td>50<\/td><td>([^<]*)<\/td>/g)];
    expect(lpipsCells).toHaveLength(3 + 6);
    expect(lpipsCells.every((m) => m[1] === 'n/a')).toBe(true);
    expect(html).not.toContain('(paper)');
    expect(html).toContain('<td>19.500 ± 1.234</td>');
  });

  test('a row without LPIPS, a CPU run and a missing picture are stated plainly', () => {
    const s = summary(true, false);
    s.table1 = s.table1.map((r, k) => ({ ...r, lpips: k === 1 ? null : r.lpips, peakMemoryBytes: null }));
    const html = renderReport(s, [{ image: 'gone.png', dtype: 'float16', file: 'grids/gone.png' }], scratch);
    expect(html).toContain('<td>easyinv</td><td>float16</td><td>50</td><td>n/a</td>');
    expect(html).toContain('<td>150</td><td>n/a</td></tr>');
    expect(html).toContain('Picture missing: grids/gone.png');
    expect(html).not.toContain('<img');
  });
});

describe('renderReport: in a headless Chromium', () => {
  test('loads with no network request, decodes every picture, draws the chart, and is not blank', async () => {
    const { file } = await writeReport('browser', summary(true, true));
    await withPage(file, async (page, url) => {
      const requests: string[] = [];
      page.on('request', (r) => requests.push(r.url()));
      await page.goto(url, { waitUntil: 'load' });

      expect(requests.filter((u) => u !== url && !u.startsWith('data:'))).toEqual([]);
      const images = await page.$$eval('img', (imgs) =>
        imgs.map((img) => ({ complete: img.complete, width: img.naturalWidth, height: img.naturalHeight })));
      expect(images).toHaveLength(4);
      for (const image of images) expect(image).toEqual({ complete: true, width: 96, height: 32 });

      const box = await page.locator('svg#chart').boundingBox();
      expect(box).not.toBeNull();
      expect(box!.width).toBeGreaterThan(100);
      expect(box!.height).toBeGreaterThan(100);
      expect(await page.locator('svg#chart circle.point').count()).toBe(3);

      // The escaped name reads back as the original text, and did not become markup.
      expect(await page.locator('figcaption').first().innerText()).toContain(NASTY);
      expect(await page.locator('b').count()).toBe(0);

      const shot = await page.screenshot({ fullPage: true, type: 'png' });
      fs.writeFileSync(path.join(path.dirname(file), 'report.png'), shot);
      const { height } = await sharp(shot).metadata();
      expect(height).toBeGreaterThan(800);
      const { channels } = await sharp(shot).stats();
      expect(Math.max(...channels.slice(0, 3).map((c) => c.stdev))).toBeGreaterThan(10);
    });
  }, 60_000);
});
