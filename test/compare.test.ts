import { spawn, execFile } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { promisify } from 'util';

import { capabilities } from '../src';
import { listImages } from '../src/compare/compare';
import { defaultThreads } from '../src/threads';
import type { ResultLine, Summary } from '../src/compare/types';
import { withPage } from './helpers';

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const weights = path.join(__dirname, '..', 'weights');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-compare-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

// Three photos, a file that is not an image and a PNG cut short: two to report and skip.
const images = path.join(scratch, 'images');
fs.mkdirSync(images);
for (const photo of ['astronaut.png', 'chelsea.png', 'coffee.png']) fs.copyFileSync(path.join(weights, 'photos', photo), path.join(images, photo));
fs.writeFileSync(path.join(images, 'notes.txt'), 'not an image\n');
fs.writeFileSync(path.join(images, 'broken.png'), fs.readFileSync(path.join(weights, 'photos', 'coffee.png')).subarray(0, 5000));

const methods = ['ddim', 'easyinv', 'fixed-point'];
const common = ['--model', path.join(weights, 'test-sdxl'), '--images', images, '--steps', '4', '--methods', methods.join(','), '--json'];
const run = async (...args: string[]) => promisify(execFile)(process.execPath, [cli, 'compare', ...args]);
const results = (out: string): ResultLine[] => fs.readFileSync(path.join(out, 'results.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const summary = (out: string): Summary => JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
/** The summary without the timings, which differ from run to run. */
const quality = (s: Summary) => ({
  images: s.images,
  skipped: s.skipped.map((k) => k.file).sort(),
  rows: s.table2.map(({ method, dtype, steps, lpips, ssim, psnr, unetCalls }) => ({ method, dtype, steps, lpips, ssim, psnr, unetCalls })),
});

let whole: Summary;

describe('easyinv compare', () => {
  test('writes results, summaries, grids and a report, and reports the files it skipped', async () => {
    const out = path.join(scratch, 'whole');
    const started = performance.now();
    await run(...common, '--out', out);
    const wallSeconds = (performance.now() - started) / 1000;
    const lines = results(out);
    expect(lines).toHaveLength(3 * methods.length);
    for (const line of lines) {
      expect(line).toMatchObject({ dtype: 'float32', lpips: null, peakMemoryBytes: null });
      expect(line.invertSeconds).toBeGreaterThan(0);
      expect(line.reconstructSeconds).toBeGreaterThan(0);
      expect(line.unetCalls).toBe(line.method === 'fixed-point' ? 24 : 4);
    }
    // The timings are of work done inside the run, one item after another: together they fit in its wall time.
    expect(lines.reduce((sum, l) => sum + l.invertSeconds + l.reconstructSeconds, 0)).toBeLessThan(wallSeconds);
    whole = summary(out);
    expect(whole.images).toBe(3);
    expect(whole.skipped.map((s) => s.file).sort()).toEqual(['broken.png', 'notes.txt']);
    expect(whole.table1.map((r) => [r.method, r.ssim.count])).toEqual(methods.map((m) => [m, 3]));
    expect(whole.paper).toBeNull();
    const markdown = fs.readFileSync(path.join(out, 'summary.md'), 'utf8');
    expect(markdown).toMatch(/## Table 1[\s\S]*\| ddim \| float32 \| 4 \| n\/a \| \d\.\d{3} ± \d\.\d{3} \|/);
    expect(markdown).toMatch(/LPIPS: n\/a/);
    expect(markdown).toMatch(/notes.txt: easyinv: cannot read image/);
    const grids = fs.readdirSync(path.join(out, 'grids')).sort();
    expect(grids).toEqual(['astronaut-float32.png', 'chelsea-float32.png', 'coffee-float32.png']);
    expect((await sharp(path.join(out, 'grids', grids[0])).metadata()).width).toBeGreaterThan(4 * 128);

    await withPage(path.join(out, 'report.html'), async (page, url) => {
      await page.goto(url, { waitUntil: 'load' });
      const loaded = await page.$$eval('img', (all) => all.map((img) => img.complete && img.naturalWidth > 0));
      expect(loaded).toEqual([true, true, true]);
      const { channels } = await sharp(await page.screenshot({ fullPage: true })).stats();
      expect(Math.max(...channels.slice(0, 3).map((c) => c.stdev))).toBeGreaterThan(10);
    });
  }, 120_000);

  test('a run killed with SIGKILL and resumed ends with exactly one line per item and the same summary', async () => {
    const out = path.join(scratch, 'killed');
    const child = spawn(process.execPath, [cli, 'compare', ...common, '--out', out]);
    const file = path.join(out, 'results.jsonl');
    while (!fs.existsSync(file) || fs.readFileSync(file, 'utf8').split('\n').length < 3) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('exit', resolve));
    const before = results(out).length;
    expect(before).toBeLessThan(3 * methods.length);
    await expect(run(...common, '--out', out)).rejects.toThrow(/already holds results: pass --resume/);
    await run(...common, '--out', out, '--resume');
    const keys = results(out).map((l) => `${l.image}|${l.method}|${l.dtype}`);
    expect(keys).toHaveLength(3 * methods.length);
    expect(new Set(keys).size).toBe(keys.length);
    expect(quality(summary(out))).toEqual(quality(whole));
  }, 120_000);

  test('kill-and-resume stress: seeded SIGKILLs at random moments and result counts, each episode resumed to the uninterrupted summary', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(__dirname, '..', 'scripts', 'stress-resume.js'), '--kills', '4', '--seed', '11'],
      { timeout: 170_000, killSignal: 'SIGKILL' });
    const report = JSON.parse(stdout);
    expect(report.kills).toBe(4);
    expect(report.problems).toEqual([]);
  }, 180_000);

  const copyRun = (name: string) => {
    const out = path.join(scratch, name);
    fs.cpSync(path.join(scratch, 'whole'), out, { recursive: true });
    return out;
  };
  const keysOf = (out: string) => results(out).map((l) => `${l.image}|${l.method}|${l.dtype}`);

  test('a second run on the same folder is refused while the first holds it, and a dead run\'s lock is taken over', async () => {
    const out = path.join(scratch, 'locked');
    const child = spawn(process.execPath, [cli, 'compare', ...common, '--out', out]);
    while (!fs.existsSync(path.join(out, 'lock'))) await new Promise((resolve) => setTimeout(resolve, 20));
    await expect(run(...common, '--out', out, '--resume')).rejects.toThrow(
      new RegExp(`is in use by another compare run \\(process ${child.pid}, started`));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('exit', resolve));
    expect(fs.existsSync(path.join(out, 'lock'))).toBe(true); // SIGKILL leaves it behind
    await run(...common, '--out', out, '--resume');
    expect(keysOf(out)).toHaveLength(3 * methods.length);
    expect(new Set(keysOf(out)).size).toBe(3 * methods.length);
    expect(fs.existsSync(path.join(out, 'lock'))).toBe(false);
  }, 120_000);

  test("--notebook-settings runs the authors' notebooks' settings for the bundle's family, under the flags given", async () => {
    const settings = async (bundle: string) => {
      const out = path.join(scratch, `notebook-${bundle}`);
      await run('--model', path.join(weights, bundle), '--images', images, '--limit', '1', '--methods', 'easyinv', '--steps', '4',
        '--notebook-settings', '--out', out);
      return { run: JSON.parse(fs.readFileSync(path.join(out, 'run.json'), 'utf8')).settings, calls: results(out)[0].unetCalls };
    };
    // SD-1.4's PNDM timesteps repeat one: N + 1 UNet calls
    expect(await settings('test-sd1')).toMatchObject({
      calls: 5, run: { guidance: 7.5, timesteps: 'pndm', stepsOffset: null, methodOptions: { variant: 'notebook' } },
    });
    expect(await settings('test-sdxl')).toMatchObject({
      calls: 4, run: { guidance: 5, timesteps: 'ddim', stepsOffset: 0, sizeCondition: 512, methodOptions: { variant: 'notebook' } },
    });
  }, 120_000);

  test('a resume with other settings is refused, naming each difference', async () => {
    const out = copyRun('other-settings');
    const steps2 = common.map((arg, i) => (common[i - 1] === '--steps' ? '2' : arg));
    await expect(run(...steps2, '--out', out, '--resume', '--guidance', '2')).rejects.toThrow(
      /--resume with other settings than the run in .* would mix two runs' results:\n  - steps: \{"ddim":4,"easyinv":4,"fixed-point":4\} in the run, \{"ddim":2,"easyinv":2,"fixed-point":2\} now\n  - guidance: 1 in the run, 2 now/);
    expect(results(out)).toHaveLength(3 * methods.length);
  });

  test('a resume completes a grid that a kill left unwritten, and recovers from a corrupt line losing only it', async () => {
    const out = copyRun('repair');
    fs.unlinkSync(path.join(out, 'grids', 'chelsea-float32.png'));
    const lines = fs.readFileSync(path.join(out, 'results.jsonl'), 'utf8').split('\n');
    const lost = JSON.parse(lines[1]);
    lines[1] = '\0'.repeat(lines[1].length);
    fs.writeFileSync(path.join(out, 'results.jsonl'), lines.join('\n'));
    const { stderr } = await run(...common, '--out', out, '--resume');
    expect(stderr).toMatch(/results.jsonl line 2 is corrupt \(not JSON\); dropped it from the file, so its item runs again/);
    const keys = keysOf(out);
    expect(keys).toHaveLength(3 * methods.length);
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys[keys.length - 1]).toBe(`${lost.image}|${lost.method}|${lost.dtype}`);
    expect(fs.readdirSync(path.join(out, 'grids')).sort()).toEqual(['astronaut-float32.png', 'chelsea-float32.png', 'coffee-float32.png']);
    // the re-run line comes last, so the means add in another order: equal to 12 digits
    const rounded = (value: unknown) => JSON.parse(JSON.stringify(value, (_, v) => (typeof v === 'number' ? Number(v.toPrecision(12)) : v)));
    expect(rounded(quality(summary(out)))).toEqual(rounded(quality(whole)));
  }, 120_000);

  test('shards split the images, and merge joins them into the same summary', async () => {
    const shards = ['0/2', '1/2'].map((shard, i) => ({ shard, out: path.join(scratch, `shard${i}`) }));
    await Promise.all(shards.map(({ shard, out }) => run(...common, '--out', out, '--shard', shard)));
    const counts = shards.map(({ out }) => new Set(results(out).map((l) => l.image)).size);
    expect(counts[0] + counts[1]).toBe(3);
    const merged = path.join(scratch, 'merged');
    await promisify(execFile)(process.execPath, [cli, 'merge', '--out', merged, ...shards.map((s) => s.out), '--json']);
    expect(quality(summary(merged))).toEqual(quality(whole));
    expect(fs.readdirSync(path.join(merged, 'grids'))).toHaveLength(3);
  }, 120_000);

  test('with an LPIPS network every line and the tables carry LPIPS', async () => {
    const out = path.join(scratch, 'lpips');
    await run(...common, '--out', out, '--limit', '1', '--lpips', path.join(weights, 'test-lpips', 'lpips.pt'));
    for (const line of results(out)) expect(line.lpips).toBeGreaterThan(0);
    const { lpipsNetwork, table1 } = summary(out);
    expect(lpipsNetwork).toBe('lpips.pt');
    for (const row of table1) expect(row.lpips?.count).toBe(1);
  }, 60_000);

  test('bad runs are clear errors', async () => {
    const half = path.join(scratch, 'half');
    if ((await capabilities()).devices[0].dtypes.includes('float16')) {
      await run(...common, '--out', half, '--dtype', 'float16', '--limit', '1', '--methods', 'ddim');
      expect(results(half).map((line) => [line.dtype, Number.isFinite(line.psnr)])).toEqual([['float16', true]]);
    } else {
      await expect(run(...common, '--out', half, '--dtype', 'float16')).rejects.toThrow(/float16 needs CUDA here: LibTorch .* has no float16 convolution on the CPU/);
    }
    await expect(run(...common, '--out', path.join(scratch, 'x'), '--shard', '2/2')).rejects.toThrow(/--shard must be K\/N with 0 <= K < N/);
    await expect(run(...common, '--out', path.join(scratch, 'x'), '--limit=-1')).rejects.toMatchObject({ code: 2, stderr: 'easyinv: --limit must be an integer >= 1, not -1\n' });
    expect(() => listImages(images, 0)).toThrow(new RangeError('easyinv: limit must be an integer >= 1, not 0')); // the API's name
    await expect(run(...common, '--out', path.join(scratch, 'x'), '--limit', '1.5')).rejects.toMatchObject({ code: 2, stderr: 'easyinv: --limit must be an integer >= 1, not 1.5\n' });
    const empty = path.join(scratch, 'empty');
    fs.mkdirSync(empty);
    const onEmpty = ['--model', path.join(weights, 'test-sdxl'), '--steps', '2', '--methods', 'ddim', '--out', path.join(scratch, 'e')];
    await expect(run(...onEmpty, '--images', empty)).rejects.toThrow(/--images .*empty holds no files/);
    fs.writeFileSync(path.join(empty, 'notes.txt'), 'not an image\n');
    await expect(run(...onEmpty, '--images', empty)).rejects.toThrow(/no image of .*empty could be used \(1 skipped; the reasons are in .*skipped.jsonl\)/);
    await expect(run(...common, '--out', path.join(scratch, 'y'), '--methods', 'ddim,magic')).rejects.toThrow(/--methods takes a comma-separated list of/);
    await expect(run('--model', path.join(weights, 'test-sdxl'), '--images', path.join(scratch, 'none'), '--out', path.join(scratch, 'z')))
      .rejects.toThrow(/--images .* is not a folder/);
  });
});

describe('easyinv bench', () => {
  test('times each method and the bare UNet, per batch size, beside the Python loop', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [cli, 'bench', '--model', path.join(weights, 'test-sdxl'),
      '--steps', '3', '--repeats', '1', '--batches', '1,2', '--methods', 'ddim,easyinv,fixed-point', '--json']);
    const { rows, python, threads } = JSON.parse(stdout);
    expect(threads).toBe(defaultThreads());
    expect(rows.map((r: { method: string }) => r.method)).toEqual(['ddim', 'easyinv', 'fixed-point', 'unet-forward']);
    for (const row of rows.slice(0, 3)) {
      expect(row.seconds).toBeGreaterThan(0);
      expect(Object.keys(row.imagesPerSecond)).toEqual(['1', '2']);
      expect(row.peakMemoryBytes).toBeNull(); // the CPU keeps no account of peak memory
    }
    expect(rows[2].unetCalls).toBe(3 * 6);
    for (const row of rows) {
      // the median lies within the rounds' spread, and per-call time is the median over the calls
      expect(row.spread[0]).toBeLessThanOrEqual(row.seconds);
      expect(row.seconds).toBeLessThanOrEqual(row.spread[1]);
      expect(row.microsecondsPerCall).toBeCloseTo((row.seconds / row.unetCalls) * 1e6, 3);
    }
    if (python) {
      expect(rows[0].pythonSeconds).toBeGreaterThan(0);
      expect(rows[0].pythonSpread[0]).toBeLessThanOrEqual(rows[0].pythonSeconds);
    }
  }, 120_000);

  test('with guidance, bench times guided inversions: our loop, the bare UNet loop and Python\'s', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [cli, 'bench', '--model', path.join(weights, 'test-sdxl'),
      '--steps', '2', '--repeats', '2', '--batches', '1', '--methods', 'ddim', '--guidance', '7.5', '--threads', '1', '--json']);
    const { rows, python, threads } = JSON.parse(stdout);
    expect(threads).toBe(1); // --threads, where the default is every CPU (the first test)
    expect(rows.map((r: { method: string; unetCalls: number }) => [r.method, r.unetCalls])).toEqual([['ddim', 2], ['unet-forward', 2]]);
    if (python) expect(rows[0].pythonSeconds).toBeGreaterThan(0);
  }, 120_000);

  test('a UNet-only SDXL bundle (bench:gpu\'s full-size ones): both loops condition on zeros, Python\'s too', async () => {
    const bundle = path.join(scratch, 'sdxl-unet-only');
    fs.mkdirSync(bundle);
    fs.copyFileSync(path.join(weights, 'test-sdxl', 'unet.pt'), path.join(bundle, 'unet.pt'));
    const manifest = JSON.parse(fs.readFileSync(path.join(weights, 'test-sdxl', 'manifest.json'), 'utf8'));
    // without text encoders, the pooled embedding's width comes from the manifest (test-sdxl's encoder projects to 12)
    fs.writeFileSync(path.join(bundle, 'manifest.json'), JSON.stringify({ ...manifest, files: { unet: 'unet.pt' }, pooled_dim: 12 }));
    const { stdout } = await promisify(execFile)(process.execPath, [cli, 'bench', '--model', bundle,
      '--steps', '2', '--repeats', '1', '--batches', '1', '--methods', 'ddim', '--guidance', '3', '--json']);
    const { rows, python, pythonError } = JSON.parse(stdout);
    expect(pythonError).toBeUndefined();
    expect(rows.map((r: { method: string }) => r.method)).toEqual(['ddim', 'unet-forward']);
    if (python) expect(rows[0].pythonSeconds).toBeGreaterThan(0);
  }, 120_000);

  test('--repeats 0 and --threads 0 are clear errors before anything runs', async () => {
    await expect(promisify(execFile)(process.execPath, [cli, 'bench', '--model', path.join(weights, 'test-sdxl'), '--repeats', '0']))
      .rejects.toMatchObject({ code: 2, stderr: 'easyinv: --repeats must be an integer >= 1, not 0\n' });
    await expect(promisify(execFile)(process.execPath, [cli, 'bench', '--model', path.join(weights, 'test-sdxl'), '--threads', '0']))
      .rejects.toMatchObject({ code: 2, stderr: 'easyinv: --threads must be an integer from 1 to 1024, not 0\n' });
  });
});
