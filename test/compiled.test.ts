// Compiled bundles (.pt2: torch.export + AOTInductor). test/python/make_pt2_bundles.py compiles the twins of the small
// test bundles into EASYINV_PT2_BUNDLES (CI does, with the PyTorch 2.13 build); they must invert, reconstruct, encode
// and decode as their TorchScript twins do. A build without AOTInductor refuses them with what to do.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { capabilities, invert, loadLatents, loadModel, loadModule, readManifest, reconstruct, Tensor, type Model } from '../src';
import { relativeError, rewriteZip } from './helpers';

const { compareWithDiffusers } = require('../bench/diffusers.js');
const { compareWithMasaCtrl } = require('../bench/masactrl.js');

const compiled = process.env.EASYINV_PT2_BUNDLES;
const weights = path.join(__dirname, '..', 'weights');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-compiled-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

test('a .pt2 file is refused with what to do by a build without AOTInductor, and loaded as a package by one with it', async () => {
  const { compiledBundles, libtorch } = await capabilities();
  const file = path.join(scratch, 'garbage.pt2');
  fs.writeFileSync(file, 'not a zip archive');
  const expected = compiledBundles
    ? /^easyinv: cannot load '.*garbage\.pt2': '.*garbage\.pt2' is not a \.pt2 package, or it is truncated or corrupt/
    : new RegExp(`this easyinv links LibTorch ${libtorch.replace(/\./g, '\\.')}, which cannot load compiled \\.pt2 packages .*LibTorch 2\\.6`);
  await expect(loadModule(file)).rejects.toThrow(expected);
  const [major, minor] = libtorch.split('.').map(Number);
  expect(compiledBundles).toBe(major > 2 || (major === 2 && minor >= 6));
});

test('a package compiled for another device, processor kind or instruction set is refused naming it, before any of its code runs', async () => {
  if (!(await capabilities()).compiledBundles) return; // the test above covers builds without AOTInductor
  const foreign = path.join(scratch, 'foreign.pt2');
  const cases: [string, string, RegExp][] = [
    ['AOTI_CPU_ISA', 'AVX512 SVE256', /foreign\.pt2 was compiled for CPUs with sve256 instructions, which this CPU lacks: compile the bundle on this machine, or for a level it has \(tools\/export_sd\.py --format pt2 --cpu-isa avx2\)/],
    ['AOTI_MACHINE', 'riscv64', /foreign\.pt2 was compiled for riscv64 processors, and this is \w+: compile the bundle on this machine/],
    ['AOTI_DEVICE_KEY', 'cuda', /foreign\.pt2 was compiled for cuda, not cpu: load it on that device, or compile the bundle for this one/],
  ];
  for (const [key, value, expected] of cases) {
    fs.copyFileSync(path.join(weights, 'diffusers-sd1-pt2', 'unet.pt2'), foreign);
    rewriteZip(foreign, (name, data) => (name.endsWith('_metadata.json')
      ? Buffer.from(JSON.stringify({ ...JSON.parse(data.toString()), [key]: value })) : data));
    await expect(loadModule(foreign)).rejects.toThrow(expected);
  }
});

(compiled ? describe : describe.skip)('a compiled bundle against its TorchScript twin', () => {
  const bundle = path.join(compiled ?? '', 'test-sd1');
  let twin: Model;
  let model: Model;
  beforeAll(async () => {
    twin = await loadModel(path.join(weights, 'test-sd1'));
    model = await loadModel(bundle);
  });
  afterAll(() => {
    twin?.dispose();
    model?.dispose();
  });

  test('DDIM and EasyInv inversions and their reconstructions agree within 1e-5 (float32), guided or not', async () => {
    const { channels, size } = model.manifest.latent;
    const z0 = await Tensor.randn([2, channels, size, size], { seed: 4 });
    for (const method of ['ddim', 'easyinv'] as const) {
      for (const guidance of [1, 3]) {
        const options = { method, steps: 10, prompt: 'a photo of a cat', guidance };
        const [ours, theirs] = [await invert(model, z0, options), await invert(twin, z0, options)];
        expect(await relativeError(ours.latent, theirs.latent)).toBeLessThan(1e-5);
        const back = await reconstruct(model, ours.latent, { steps: 10, prompt: 'a photo of a cat', guidance });
        const twinBack = await reconstruct(twin, theirs.latent, { steps: 10, prompt: 'a photo of a cat', guidance });
        expect(await relativeError(back, twinBack)).toBeLessThan(1e-5);
        [ours, theirs].forEach((r) => r.dispose());
        [back, twinBack].forEach((t) => t.dispose());
      }
    }
    z0.dispose();
  }, 120_000);

  test('the VAE encodes a photo and decodes it as the twin does', async () => {
    const photo = path.join(weights, 'photos', 'astronaut.png');
    const [latent, twinLatent] = [await model.encodeImage(photo), await twin.encodeImage(photo)];
    expect(await relativeError(latent, twinLatent)).toBeLessThan(1e-5);
    const [image, twinImage] = [await model.decode(latent), await twin.decode(twinLatent)];
    expect(await relativeError(image, twinImage)).toBeLessThan(1e-5);
    [latent, twinLatent, image, twinImage].forEach((t) => t.dispose());
  });

  test('a batch beyond what the package was compiled for is refused before it runs', async () => {
    const [, maxBatch] = (model.manifest.export as { batch: [number, number] }).batch;
    const { channels, size } = model.manifest.latent;
    const z0 = await Tensor.randn([maxBatch / 2 + 1, channels, size, size], { seed: 1 });
    await expect(invert(model, z0, { method: 'ddim', steps: 2, guidance: 3 }))
      .rejects.toThrow(`takes batches of 1 to ${maxBatch}, not ${maxBatch + 2} (guidance doubles the batch)`);
    z0.dispose();
  });

  test('channelsLast, which converts TorchScript weights, is refused for a package', async () => {
    await expect(loadModel(bundle, { channelsLast: true })).rejects.toThrow(/a \.pt2 package runs the memory format it was compiled for/);
  });

  test('a package whose SHA-256 differs from its manifest, or truncated, is refused naming the file', async () => {
    const copy = path.join(scratch, 'copied');
    fs.cpSync(bundle, copy, { recursive: true });
    const manifestFile = path.join(copy, 'manifest.json');
    const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
    (await loadModel(copy)).dispose(); // a copied folder loads
    const recorded = manifest.sha256['unet.pt2'];
    manifest.sha256['unet.pt2'] = recorded.replace(/^./, (c: string) => (c === '0' ? '1' : '0'));
    fs.writeFileSync(manifestFile, JSON.stringify(manifest));
    await expect(loadModel(copy)).rejects.toThrow(/has a file unet\.pt2 \(\d+ bytes\) whose SHA-256 is not the one its manifest records/);
    manifest.sha256['unet.pt2'] = recorded;
    fs.writeFileSync(manifestFile, JSON.stringify(manifest));
    const unet = path.join(copy, 'unet.pt2');
    fs.truncateSync(unet, Math.floor(fs.statSync(unet).size / 2));
    await expect(loadModel(copy)).rejects.toThrow(/has a file unet\.pt2 \(\d+ bytes\) whose SHA-256 is not the one its manifest records: it is truncated/);
    await expect(loadModel(copy, { verifyFiles: false })).rejects.toThrow(/unet\.pt2/); // LibTorch's error, no crash
  }, 60_000);
});

// weights/diffusers-sd1-pt2: the diffusers bundle with its UNet compiled by tools/export_sd.py --format pt2
// (test/python/make_diffusers_bundles.py --compiled-twins sd1). A package runs only in the LibTorch version that
// compiled it.
const diffusersTwin = path.join(weights, 'diffusers-sd1-pt2');
(fs.existsSync(diffusersTwin) ? describe : describe.skip)('the compiled twin of a bundle exported from diffusers', () => {
  const bundle = diffusersTwin;
  const sameVersion = async () => {
    const { compiledBundles, libtorch } = await capabilities();
    const writer = (readManifest(bundle).export as { torch: string }).torch;
    return compiledBundles && writer.split('.').slice(0, 2).join() === libtorch.split('.').slice(0, 2).join();
  };

  test('inverts and reconstructs as its TorchScript twin (z_T within 1e-5) and as diffusers does', async () => {
    if (!(await sameVersion())) return;
    const model = await loadModel(bundle);
    const twin = await loadModel(path.join(weights, 'diffusers-sd1'));
    const { tensors } = loadLatents(path.join(weights, 'test', 'diffusers-reference.safetensors'));
    try {
      for (const method of ['ddim', 'easyinv'] as const) {
        for (const guidance of [1, 5]) {
          const options = { steps: 10, prompt: 'a photograph of an astronaut riding a horse', guidance };
          const [ours, theirs] = [await invert(model, tensors.latent, { method, ...options }), await invert(twin, tensors.latent, { method, ...options })];
          expect(await relativeError(ours.latent, theirs.latent)).toBeLessThan(1e-5);
          const [back, twinBack] = [await reconstruct(model, ours.latent, options), await reconstruct(twin, theirs.latent, options)];
          // diffusers against itself, 1 vs 2 threads, differs by up to 4.4e-5 on these reconstructions
          expect(await relativeError(back, twinBack)).toBeLessThan(1e-4);
          [ours, theirs, back, twinBack].forEach((each) => each.dispose());
        }
      }
    } finally {
      [model, twin, ...Object.values(tensors)].forEach((each) => each.dispose());
    }
    const rows: { zT: number; z0: number }[] = await compareWithDiffusers(['sd1'], () => bundle);
    expect(rows).toHaveLength(2 * 2 * 2 * 2); // methods, guidances, prompts, steps
    for (const row of rows) {
      expect(row.zT).toBeLessThan(2e-5);
      expect(row.z0).toBeLessThan(1e-4);
    }
  }, 300_000);

  test('edits as MasaCtrl does: the compiled UNet takes attention_sources too', async () => {
    if (!(await sameVersion())) return;
    const keep = (key: string) => /^sd1\/(fixed|inverted)\/N10\/masactrl-4-10(\/pinned)?$/.test(key);
    const rows: { key: string; target: number; floor: number }[] = await compareWithMasaCtrl({ keep, bundle: () => bundle });
    expect(rows).toHaveLength(3);
    for (const row of rows) expect({ key: row.key, within: row.target < Math.min(1e-4, 3 * row.floor) }).toEqual({ key: row.key, within: true });
  }, 300_000);
});
