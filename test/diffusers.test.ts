// Bundles exported by tools/export_sd.py from small random-weight diffusers pipelines (real UNet, VAE and
// transformers CLIP code, CLIP's int64 position_ids), against diffusers' own DDIM inversion and sampling.
import * as path from 'path';

import { capabilities, loadLatents, loadModel, loadModule, readManifest, Tensor } from '../src';
import { compareVersions, writerVersion } from '../src/manifest';

const { compareWithDiffusers } = require('../bench/diffusers.js');

const weights = path.join(__dirname, '..', 'weights');
const bundle = (family: string) => path.join(weights, `diffusers-${family}`);
const writer = writerVersion(readManifest(bundle('sd1')))!;
const settings = require(path.join(weights, 'test', 'diffusers-reference.json'));

describe('bundles exported from diffusers', () => {
  let libtorch = '';
  beforeAll(async () => {
    libtorch = (await capabilities()).libtorch;
  });

  test('a LibTorch older than the writer refuses them with both versions and what to do', async () => {
    if (compareVersions(writer, libtorch) <= 0) return expect(loadModel(bundle('sd1'))).resolves.toBeDefined();
    await expect(loadModel(bundle('sd1'))).rejects.toThrow(
      new RegExp(`was written by PyTorch ${writer.replace(/[.+]/g, '\\$&')}, newer than this build's LibTorch [^]*Re-export it`));
  });

  const newEnough = () => compareVersions(writer, libtorch) <= 0;

  test('DDIM and EasyInv inversion and reconstruction equal diffusers to float32 precision', async () => {
    if (!newEnough()) return;
    const rows: { family: string; method: string; guidance: number; prompt: string; steps: number; zT: number; z0: number }[] =
      await compareWithDiffusers();
    expect(rows).toHaveLength(2 * 2 * 2 * 2 * 2); // families, methods, guidances, prompts, steps
    // Each case within three times diffusers' own floor there (1 vs 2 threads: up to 2.4e-5 on z_T and 2.4e-4 on the
    // reconstruction, SDXL at guidance 5, N 50), and where that floor is 0 (batch 1), within the float64 schedule's
    // 1e-6 (docs/diffusers.md) with room to spare.
    for (const row of rows) {
      const key = `${row.family}/${row.method}/g${row.guidance}/${row.prompt}/N${row.steps}`;
      const floor = (what: string) => settings.floor_threads_1_vs_2[`${key}/${what}`];
      expect({ key, zT: row.zT < Math.max(2e-5, 3 * floor('zT')), z0: row.z0 < Math.max(1e-4, 3 * floor('z0')) })
        .toEqual({ key, zT: true, z0: true });
    }
  }, 600_000); // SDXL's real layout (70 transformer blocks) takes minutes at N = 50 on two cores

  test('the references tell the methods apart by far more than the tolerance', async () => {
    const { tensors } = loadLatents(path.join(weights, 'test', 'diffusers-reference.safetensors'));
    const [ddim, easyinv] = await Promise.all(['ddim', 'easyinv'].map((m) => tensors[`sd1/${m}/g1/empty/N50/zT`].toArray()));
    const difference = Math.hypot(...ddim.map((v, i) => v - easyinv[i])) / Math.hypot(...ddim);
    expect(difference).toBeGreaterThan(1e-2);
    Object.values(tensors).forEach((t) => t.dispose());
  });

  test('the real-layout CLIP text encoder keeps its int64 position_ids in float16 and float32', async () => {
    if (!newEnough()) return;
    const { devices } = await capabilities();
    const file = path.join(bundle('sd1'), 'text_encoder.pt');
    const ids = Tensor.fromArray([49406, 320, 1125, 539, 320, 2368, ...Array(71).fill(49407)], [1, 77], { dtype: 'int64' });
    const full = await (await loadModule(file, { dtype: 'float32' })).forward(ids) as Tensor;
    expect(full.shape).toEqual([1, 77, 8]);
    if (!devices[0].dtypes.includes('float16')) return;
    const half = await (await loadModule(file, { dtype: 'float16' })).forward(ids) as Tensor;
    expect(half.dtype).toBe('float16');
    const [a, b] = await Promise.all([full.toArray(), half.toArray()]);
    const scale = Math.max(...Array.from(a, Math.abs));
    expect(Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i])))).toBeLessThan(1e-2 * scale);
  });
});
