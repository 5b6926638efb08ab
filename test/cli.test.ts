import { execFile } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { promisify } from 'util';

import { loadLatents, methodNames, saveLatents, Tensor } from '../src';
import { main } from '../src/cli';

const weights = path.join(__dirname, '..', 'weights');
const photo = path.join(weights, 'photos', 'chelsea.png');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-cli-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

/** The CLI in this process, through its exported main, with what it prints captured. */
async function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const log = jest.spyOn(console, 'log').mockImplementation((...parts) => void stdout.push(parts.join(' ')));
  const error = jest.spyOn(console, 'error').mockImplementation((...parts) => void stderr.push(parts.join(' ')));
  try {
    const code = await main(args);
    return { code, stdout: stdout.join('\n'), stderr: stderr.join('\n') };
  } finally {
    log.mockRestore();
    error.mockRestore();
  }
}

describe('easyinv CLI', () => {
  test('invert writes z_T with its settings, and reconstruct reads it back into a PNG', async () => {
    const noise = path.join(scratch, 'z.safetensors');
    const inverted = await run('invert', '--model', path.join(weights, 'test-sd1'), '--image', photo, '--method', 'easyinv',
      '--steps', '6', '--prompt', 'a cat', '--guidance', '2', '--out', noise, '--json');
    expect(inverted).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(inverted.stdout)).toMatchObject({ method: 'easyinv', steps: 6, guidance: 2, unetCalls: 6, shape: [1, 4, 32, 32] });
    const { tensors, metadata } = loadLatents(noise);
    expect(tensors.latent.shape).toEqual([1, 4, 32, 32]);
    expect(metadata).toMatchObject({ format: 'easyinv-latent/1', family: 'sd1', prompt: 'a cat', guidance: '2', steps: '6' });
    const image = path.join(scratch, 'back.png');
    const back = await run('reconstruct', '--model', path.join(weights, 'test-sd1'), '--latent', noise, '--out', image, '--json');
    expect(back.code).toBe(0);
    expect(JSON.parse(back.stdout)).toEqual({ out: image, steps: 6 });
    expect(await sharp(image).metadata()).toMatchObject({ format: 'png', width: 256, height: 256 });
  });

  test('the direct method\'s offsets travel in the file', async () => {
    const noise = path.join(scratch, 'direct.safetensors');
    expect((await run('invert', '--model', path.join(weights, 'test-sdxl'), '--image', photo, '--method', 'direct',
      '--steps', '4', '--out', noise, '--json')).code).toBe(0);
    const { tensors } = loadLatents(noise);
    expect(Object.keys(tensors).sort()).toEqual(['latent', 'offset.0', 'offset.1', 'offset.2', 'offset.3']);
  });

  test('demo inverts with every method and writes a table and a side-by-side picture', async () => {
    const out = path.join(scratch, 'demo');
    const demo = await run('demo', '--steps', '3', '--out', out, '--json');
    expect(demo.code).toBe(0);
    const result = JSON.parse(demo.stdout);
    expect(result.rows.map((row: { method: string }) => row.method)).toEqual(methodNames);
    for (const row of result.rows) {
      expect(row.psnr).toBeGreaterThan(10);
      expect(row.ssim).toBeGreaterThan(0);
      expect(row.ssim).toBeLessThanOrEqual(1);
    }
    const picture = await sharp(path.join(out, 'demo.png')).metadata();
    expect(picture.width).toBeGreaterThan(256 * (methodNames.length + 1));
  });

  test('the demo\'s text table lists each method', async () => {
    const table = await run('demo', '--steps', '2', '--out', path.join(scratch, 'demo-text'));
    expect(table.code).toBe(0);
    for (const method of methodNames) expect(table.stdout).toMatch(new RegExp(`^\\| ${method} \\| `, 'm'));
  });

  const tiny = path.join(weights, 'tiny-sd1-256');
  const editing = ['--model', tiny, '--image', photo, '--source-prompt', 'a cat', '--prompt', 'a clock', '--steps', '2',
    '--start-step', '0', '--start-layer', '3', '--json'];

  test('edit inverts a photo and edits it toward the prompt', async () => {
    const single = path.join(scratch, 'edit.png');
    const edited = await run('edit', ...editing, '--inversion', 'ddim', '--out', single);
    expect(edited).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(edited.stdout)).toMatchObject({ out: single, inversion: 'ddim', method: 'masactrl', steps: 2, startStep: 0, startLayer: 3,
      guidance: 7.5, targets: ['a clock'], unetCalls: 4 });
    expect(await sharp(single).metadata()).toMatchObject({ format: 'png', width: 256, height: 256 });
    const mistakes: [string[], RegExp][] = [
      [['--image', photo, '--prompt', 'a clock', '--out', single], /--model is required/],
      [['--model', tiny, '--image', photo, '--out', single], /--prompt is required/],
      [[...editing, '--inversions', 'ddim', '--out', path.join(scratch, 'figure.jpg')], /--out names the figure's PNG grid/],
      [[...editing, '--inversion', 'magic', '--out', single], /--inversion must be one of ddim, easyinv/],
      [[...editing, '--start-layer', '5', '--out', single], /--start-layer must be an integer from 0 to 4 \(this UNet has 5 self-attention layers\), not 5/],
    ];
    for (const [args, message] of mistakes) expect(await run('edit', ...args)).toMatchObject({ code: 2, stderr: expect.stringMatching(message) });
    const plain = await run('edit', ...editing, '--model', path.join(weights, 'test-sd1'), '--out', single);
    expect(plain).toMatchObject({ code: 1, stderr: expect.stringMatching(/no mutual attention .* tools\/export_sd.py --mutual-attention/) });
  });

  test('edit --inversions writes the figure: each inversion\'s reconstruction and edit, a PNG grid and a page', async () => {
    const grid = path.join(scratch, 'figure.png');
    const figure = await run('edit', ...editing, '--inversions', 'ddim,direct', '--out', grid);
    expect(figure.code).toBe(0);
    const { rows, page } = JSON.parse(figure.stdout);
    expect(page).toBe(path.join(scratch, 'figure.html'));
    expect(rows.map((row: { inversion: string }) => row.inversion)).toEqual(['ddim', 'direct']);
    expect(rows.map((row: { invertUnetCalls: number }) => row.invertUnetCalls)).toEqual([2, 4]);
    for (const row of rows) expect(row.psnr).toBeGreaterThan(15);
    // the photo and two reconstructions above, a blank and two edits below, each 256 px with a 24 px caption
    expect(await sharp(grid).metadata()).toMatchObject({ width: 3 * 260 - 4, height: 2 * 284 - 4 });
    const html = fs.readFileSync(page, 'utf8');
    expect(html).toMatch(/<tr><td>direct<\/td>/);
    expect(html).toContain(`data:image/png;base64,${fs.readFileSync(grid).toString('base64')}`);
  });

  test('usage errors exit 2 with a message, failures exit 1', async () => {
    expect(await run('frobnicate')).toMatchObject({ code: 2, stderr: expect.stringMatching(/unknown command "frobnicate"/) });
    expect(await run('invert', '--model', 'x', '--image', photo)).toMatchObject({ code: 2, stderr: expect.stringMatching(/--out is required/) });
    expect(await run('demo', '--steps', 'many')).toMatchObject({ code: 2, stderr: expect.stringMatching(/--steps must be a number/) });
    expect(await run('demo', '--bogus')).toMatchObject({ code: 2, stderr: expect.stringMatching(/Unknown option '--bogus'/) });
    const missing = await run('invert', '--model', path.join(weights, 'test-sd1'), '--image', path.join(scratch, 'none.png'), '--out', path.join(scratch, 'z'));
    expect(missing).toMatchObject({ code: 1, stderr: expect.stringMatching(/cannot read image .*none.png: no such file/) });
    const foreign = await run('invert', '--model', path.join(weights, 'test-sd1'), '--image', photo, '--method', 'ddim', '--eta', '0.5', '--out', path.join(scratch, 'z'));
    expect(foreign).toMatchObject({ code: 2, stderr: expect.stringMatching(/^easyinv: --eta is not an option of method ddim/) });
    expect((await run('--help')).stdout).toMatch(/easyinv demo/);
    // Each command has its own help; a value the library refuses is a command-line mistake too (exit 2), and an
    // output folder that does not exist is refused before any work.
    const help = await run('invert', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^easyinv invert --model DIR --image FILE --out/);
    expect(help.stdout).not.toMatch(/easyinv compare/);
    const magic = await run('invert', '--model', path.join(weights, 'test-sd1'), '--image', photo, '--method', 'magic', '--out', path.join(scratch, 'z'));
    expect(magic).toMatchObject({ code: 2, stderr: expect.stringMatching(/^easyinv: --method "magic" is unknown: use one of ddim/) });
    const nowhere = await run('invert', '--model', 'no-such-bundle', '--image', photo, '--out', path.join(scratch, 'none', 'z.safetensors'));
    expect(nowhere).toMatchObject({ code: 2, stderr: expect.stringMatching(/the folder .*none does not exist/) });
  });

  test('a value the library refuses is named by the flag that gave it; one the command line did not give, by its API name', async () => {
    const model = path.join(weights, 'test-sd1');
    const invertWith = (...flags: string[]) => run('invert', '--model', model, '--image', photo, '--out', path.join(scratch, 'z'), ...flags);
    const refused = async (flags: string[], message: string) =>
      expect(await invertWith(...flags)).toEqual({ code: 2, stdout: '', stderr: `easyinv: ${message}` });
    await refused(['--steps', '0'], '--steps must be an integer >= 1, not 0');
    await refused(['--guidance=-1'], '--guidance must be a number >= 0, not -1');
    await refused(['--steps-offset=-1'], '--steps-offset must be an integer >= 0, not -1');
    await refused(['--timesteps', 'plms'], '--timesteps must be \'ddim\' or \'pndm\', not "plms"');
    await refused(['--size-condition', '512'], '--size-condition is for SDXL bundles only; this one is sd1');
    await refused(['--eta', '2'], '--eta must be a number in [0, 1], not 2');
    await refused(['--window', '0.5,0.2'], '--window must be [start, end], fractions of the steps with 0 <= start <= end <= 1, not [0.5,0.2]');
    await refused(['--variant', 'colab'], '--variant must be \'paper\' or \'notebook\', not "colab"');
    await refused(['--method', 'fixed-point', '--refinements=-1'], '--refinements must be an integer >= 0, not -1');
    await refused(['--method', 'renoise', '--iterations', '1.5'], '--iterations must be an integer >= 0, not 1.5');
    await refused(['--method', 'renoise', '--seed=-1'], '--seed must be an integer from 0 to 9007199254740991, not -1');
    await refused(['--fit', 'stretch'], '--fit must be \'fill\' or \'cover\', not stretch');
    // reconstruct takes the steps offset from the latent file unless --steps-offset is given
    const latent = await Tensor.randn([1, 4, 32, 32], { seed: 0 });
    const noise = path.join(scratch, 'offset.safetensors');
    await saveLatents(noise, { latent }, { steps: '2', stepsOffset: '-1' });
    const back = (...flags: string[]) => run('reconstruct', '--model', model, '--latent', noise, '--out', path.join(scratch, 'back.png'), ...flags);
    expect(await back()).toEqual({ code: 2, stdout: '', stderr: 'easyinv: stepsOffset must be an integer >= 0, not -1' });
    expect(await back('--steps-offset=-2')).toEqual({ code: 2, stdout: '', stderr: 'easyinv: --steps-offset must be an integer >= 0, not -2' });
    const unnamed = path.join(scratch, 'unnamed.safetensors');
    await saveLatents(unnamed, { noise: latent }, {});
    latent.dispose();
    expect(await run('reconstruct', '--model', model, '--latent', unnamed, '--out', path.join(scratch, 'back.png')))
      .toMatchObject({ code: 2, stderr: expect.stringMatching(/^easyinv: --latent .*unnamed\.safetensors holds no tensor named latent\n/) });
  }, 120_000);

  test('the built CLI runs as a process: its shebang, its exit codes', async () => {
    const cli = path.join(__dirname, '..', 'dist', 'cli.js');
    const { stdout } = await promisify(execFile)(cli, ['--version']);
    expect(stdout.trim()).toBe(JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')).version);
    await expect(promisify(execFile)(cli, ['frobnicate'])).rejects.toMatchObject({ code: 2 });
    // an option the addon refuses is named by its flag too (in a process: under Jest the addon's RangeError is another realm's)
    await expect(promisify(execFile)(cli, ['invert', '--model', path.join(weights, 'test-sd1'), '--image', photo, '--out', path.join(scratch, 'z'),
      '--cuda-graphs'])).rejects.toMatchObject({ code: 2, stderr: 'easyinv: --cuda-graphs needs a CUDA device, not cpu\n' });
  });
});
