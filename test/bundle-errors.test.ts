import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';

import { capabilities, invert, liveTensors, loadModel, readImage, Tensor } from '../src';
import { warmUp } from '../src/evaluation';
import { settledLiveTensors } from './helpers';

const weights = path.join(__dirname, '..', 'weights');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-bad-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

/** A copy of a bundle whose manifest `edit` may change. */
function bundleCopy(name: string, edit: (manifest: any) => void = () => {}): string {
  const dir = fs.mkdtempSync(path.join(scratch, `${name}-`));
  const source = path.join(weights, name);
  for (const file of fs.readdirSync(source)) fs.copyFileSync(path.join(source, file), path.join(dir, file));
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  edit(manifest);
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
  return dir;
}

function file(name: string, content: Buffer | string): string {
  const target = path.join(scratch, name);
  fs.writeFileSync(target, content);
  return target;
}

describe('bad bundles', () => {
  test('a folder without manifest.json', async () => {
    await expect(loadModel(scratch)).rejects.toThrow(/has no manifest.json \(make bundles with tools\/export_sd.py\)/);
  });

  test('a manifest that is not JSON', async () => {
    const dir = bundleCopy('test-sd1');
    fs.writeFileSync(path.join(dir, 'manifest.json'), '{ "format": ');
    await expect(loadModel(dir)).rejects.toThrow(/has a manifest.json that is not valid JSON/);
    fs.writeFileSync(path.join(dir, 'manifest.json'), '[1, 2]');
    await expect(loadModel(dir)).rejects.toThrow(/has a manifest.json that easyinv cannot use:\n  - is not a JSON object/);
  });

  test('a manifest of another format or family', async () => {
    await expect(loadModel(bundleCopy('test-sd1', (m) => (m.format = 'other/2')))).rejects.toThrow(/"format" is "other\/2"; expected "easyinv-bundle\/1"/);
    await expect(loadModel(bundleCopy('test-sd1', (m) => (m.family = 'sd3')))).rejects.toThrow(/"family" is "sd3"; expected sd1, sdxl or test/);
    await expect(loadModel(bundleCopy('test-sd1', (m) => delete m.files.unet))).rejects.toThrow(/"files.unet" is missing; expected the UNet's file name/);
  });

  test.each([
    ['no latent', (m: any) => delete m.latent, /"latent.channels" is missing[^]*"latent.size" is missing[^]*"latent.scaling_factor" is missing/],
    ['no scheduler', (m: any) => delete m.scheduler, /"scheduler.num_train_timesteps" is missing; expected a positive integer/],
    ['a latent size given as a string', (m: any) => (m.latent.size = '8'), /"latent.size" is "8"; expected a positive integer/],
    ['a negative latent size', (m: any) => (m.latent.size = -8), /"latent.size" is -8; expected a positive integer/],
    ['a negative resolution', (m: any) => (m.resolution = -64), /"resolution" is -64; expected a positive integer/],
    ['a cosine schedule', (m: any) => (m.scheduler.beta_schedule = 'cosine'), /"scheduler.beta_schedule" is "cosine"; expected "scaled_linear" or "linear"/],
    ['a negative steps_offset', (m: any) => (m.scheduler.steps_offset = -20), /"scheduler.steps_offset" is -20; expected a non-negative integer/],
    ['a fractional steps_offset', (m: any) => (m.scheduler.steps_offset = 0.5), /"scheduler.steps_offset" is 0.5/],
    ['a steps_offset past the schedule', (m: any) => (m.scheduler.steps_offset = 5000), /"scheduler.steps_offset" is 5000; expected less than num_train_timesteps \(1000\)/],
    ['an unknown spacing', (m: any) => (m.scheduler.timestep_spacing = 'bogus'), /"scheduler.timestep_spacing" is "bogus"/],
    ['no training timesteps', (m: any) => (m.scheduler.num_train_timesteps = 0), /"scheduler.num_train_timesteps" is 0; expected a positive integer/],
    ['a file name that is a number', (m: any) => (m.files.vae_encoder = 5), /"files.vae_encoder" is 5; expected a file name/],
  ])('a manifest with %s names the field and its form', async (_, edit, message) => {
    const dir = bundleCopy('test-sd1', (m) => edit(m));
    await expect(loadModel(dir)).rejects.toThrow(message);
  });

  test('a missing module file', async () => {
    const dir = bundleCopy('test-sd1');
    fs.unlinkSync(path.join(dir, 'vae_decoder.pt'));
    await expect(loadModel(dir)).rejects.toThrow(/lacks its vae_decoder file vae_decoder.pt/);
  });

  test('a module that fails to load names the newer PyTorch that wrote it', async () => {
    const { libtorch } = await capabilities();
    const written = (torch: string) => {
      const dir = bundleCopy('test-sd1', (m) => (m.export = { torch }));
      fs.writeFileSync(path.join(dir, 'unet.pt'), fs.readFileSync(path.join(dir, 'unet.pt')).subarray(0, 1000));
      return dir;
    };
    await expect(loadModel(written('99.1.0+cpu'))).rejects.toThrow(
      new RegExp(`was written by PyTorch 99\\.1\\.0\\+cpu, newer than this build's LibTorch ${libtorch.replace(/\./g, '\\.')}[^]*Re-export it with PyTorch \\d+\\.\\d+ or older[^]*LibTorch said: .*not a TorchScript archive`));
    await expect(loadModel(written(libtorch))).rejects.toThrow(/^easyinv: cannot load '.*unet\.pt': .* is not a TorchScript archive/);
  });

  test.each([
    ['tuple_unet.pt', /returned a tuple of 2 values; a noise prediction is one tensor of the latents' shape \[1, 4, 32, 32\]/],
    ['one_channel_unet.pt', /returned a tensor of shape \[1, 1, 32, 32\]; a noise prediction is one tensor of the latents' shape \[1, 4, 32, 32\]/],
  ])('a UNet whose output is not one noise tensor (%s) is a clear error, and nothing leaks', async (unet, message) => {
    const dir = bundleCopy('test-sd1', (m) => (m.files.unet = unet));
    fs.copyFileSync(path.join(weights, 'test', unet), path.join(dir, unet));
    const model = await loadModel(dir);
    const z0 = await Tensor.randn([1, 4, 32, 32], { seed: 0 });
    const before = await settledLiveTensors();
    await expect(invert(model, z0, { method: 'ddim', steps: 2 })).rejects.toThrow(message);
    expect(liveTensors()).toBe(before); // counted before any collection: the output was disposed
    // the warm-up of demo, compare and bench, which makes its own latent for the inversion
    await expect(warmUp(model)).rejects.toThrow(message);
    expect(liveTensors()).toBe(before);
    z0.dispose();
    model.dispose();
  });

  test('a manifest path that leads outside the bundle, by .., an absolute path or a link, is refused naming its field', async () => {
    const elsewhere = path.join(weights, 'test-sd1', 'unet.pt');
    const up = bundleCopy('test-sd1', (m) => (m.files.unet = '../test-sd1/unet.pt'));
    await expect(loadModel(up)).rejects.toThrow(/has "files\.unet": "\.\.\/test-sd1\/unet\.pt", a path that leads outside the bundle's folder/);
    const absolute = bundleCopy('test-sd1', (m) => (m.files.unet = elsewhere));
    await expect(loadModel(absolute)).rejects.toThrow(/has "files\.unet": ".*unet\.pt", a path that leads outside the bundle's folder/);
    const linked = bundleCopy('test-sd1');
    fs.rmSync(path.join(linked, 'unet.pt'));
    fs.symlinkSync(elsewhere, path.join(linked, 'unet.pt'));
    await expect(loadModel(linked)).rejects.toThrow(/has "files\.unet": "unet\.pt", a link that leads outside the bundle's folder/);
    const malformed = bundleCopy('test-sd1', (m) => (m.sha256 = { 'unet.pt': 'not a digest' }));
    await expect(loadModel(malformed)).rejects.toThrow(/"sha256" is \{"unet\.pt":"not a digest"\}; expected an object of 64-digit hex SHA-256 digests/);
    const hashed = bundleCopy('test-sd1', (m) => (m.sha256 = { '../x.pt': 'a'.repeat(64) }));
    await expect(loadModel(hashed)).rejects.toThrow(/has "sha256": "\.\.\/x\.pt", a path that leads outside/);
  });

  test('a bundle traced for cuda, asked for on the cpu', async () => {
    const dir = bundleCopy('test-sd1', (m) => (m.device = 'cuda'));
    await expect(loadModel(dir, { device: 'cpu' })).rejects.toThrow(/was traced on cuda and cannot run on cpu: export a cpu bundle/);
  });

  test('a bundle traced in float32, asked for in float16', async () => {
    const dir = bundleCopy('test-sd1', (m) => delete m.dtypes);
    await expect(loadModel(dir, { dtype: 'float16' })).rejects.toThrow(/was traced in float32, not float16/);
  });

  test('a prompt on a bundle without a text encoder', async () => {
    const model = await loadModel(path.join(weights, 'analytic-gaussian'));
    await expect(model.encodePrompt('a cat')).rejects.toThrow(/has no text encoder, so it takes no prompt/);
    const z0 = Tensor.fromArray(new Float32Array(256), [1, 4, 8, 8]);
    await expect(invert(model, z0, { prompt: 'a cat' })).rejects.toThrow(/has no text encoder/);
    await expect(model.encodeImage(path.join(weights, 'photos', 'coffee.png'))).rejects.toThrow(/has no VAE encoder, so it takes latents, not images/);
  });
});

describe('bad images', () => {
  const photo = path.join(weights, 'photos', 'chelsea.png');

  test('a missing file', async () => {
    await expect(readImage(path.join(scratch, 'nope.png'))).rejects.toThrow(/cannot read image .*nope.png: no such file/);
  });

  test('an empty file', async () => {
    await expect(readImage(file('empty.png', ''))).rejects.toThrow(/cannot read image .*empty.png: the file is empty/);
  });

  test('a file that is not an image', async () => {
    await expect(readImage(file('notes.png', 'just some text, not pixels\n'))).rejects.toThrow(/cannot read image .*notes.png: .*is it a complete PNG, JPEG or WebP file/);
  });

  test('a truncated PNG', async () => {
    const whole = fs.readFileSync(photo);
    await expect(readImage(file('cut.png', whole.subarray(0, whole.length / 2)), { size: 64 })).rejects.toThrow(/cannot read image .*cut.png/);
  });

  test('an image of 1x1 pixels', async () => {
    const dot = file('dot.png', await sharp({ create: { width: 1, height: 1, channels: 3, background: '#f00' } }).png().toBuffer());
    await expect(readImage(dot)).rejects.toThrow(/cannot read image .*dot.png: it is 1x1 pixels; easyinv needs at least 16/);
  });

  test('a fit that does not exist', async () => {
    await expect(readImage(photo, { fit: 'stretch' as never })).rejects.toThrow("fit must be 'fill' or 'cover'");
  });
});
