// Calls that reach LibTorch with hostile input, each in its own process: an abort (SIGABRT), a segfault or a hang
// fails the one case, and every case must end in a JS result or a JS error that names the problem.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { promisify } from 'util';
import { execFile } from 'child_process';

import { runIsolated } from './isolated';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-crash-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));
const truncatedModule = path.join(scratch, 'truncated.pt');
fs.writeFileSync(truncatedModule, fs.readFileSync(path.join(__dirname, '..', 'weights', 'test', 'conv_unet.pt')).subarray(0, 3000));

// [what, an expression (awaited) with `Tensor`, `easyinv`, `weights` and `unet` (a loaded conv_unet.pt) in scope, its outcome]
const cases: [string, string, RegExp][] = [
  ['a shape whose element count overflows int64', 'Tensor.fromArray([], [2 ** 62, 4])', /^error easyinv: shape .* has more elements than a tensor can hold/],
  ['sizes whose product wraps to 0', 'Tensor.fromArray(new Float32Array(0), [2 ** 32, 2 ** 32])', /^error .*has more elements/],
  ['noise of 4 TiB', 'Tensor.randn([2 ** 40], { seed: 0 })', /^error easyinv: Tensor.randn failed: .*(memory|allocat)/i],
  ['a NaN seed', 'Tensor.randn([2], { seed: NaN })', /^error easyinv: seed must be an integer/],
  ['split sizes that do not add up', 'Tensor.fromArray([1, 2], [2]).split([1, 5])', /^error easyinv: Tensor.split failed: /],
  ['split sizes past int64', 'Tensor.fromArray([1, 2], [2]).split([2 ** 62, 2 ** 62])', /^error easyinv: sizes .* has more elements/],
  ['cat of tensors of other ranks', 'Tensor.cat([Tensor.fromArray([1], [1]), Tensor.fromArray([1], [1, 1])])', /^error easyinv: Tensor.cat failed: /],
  ['cat along an axis it lacks', 'Tensor.cat([Tensor.fromArray([1], [1])], 7)', /^error easyinv: Tensor.cat failed: /],
  ['a throwing getter in the options', 'Tensor.fromArray([1], [1], { get device() { throw new Error("getter") } })', /^error getter$/],
  ['a method called on a plain object', 'Tensor.prototype.toArray.call({})', /^error Illegal invocation/],
  ['an accessor read on a plain object', 'Object.getOwnPropertyDescriptor(Tensor.prototype, "shape").get.call({})', /^error /],
  ['a PNG loaded as a module', 'easyinv.loadModule(weights("photos/astronaut.png"))', /^error easyinv: cannot load .* is not a TorchScript archive/],
  ['a module file cut short', `easyinv.loadModule(${JSON.stringify(truncatedModule)})`, /^error easyinv: cannot load .* truncated or corrupt/],
  ['forward with an input missing', 'unet.forward(Tensor.fromArray(new Float32Array(4 * 64), [1, 4, 8, 8]))', /^error easyinv: forward of module .* failed: /],
  ['forward with inputs of the wrong rank', 'unet.forward(Tensor.fromArray([1], [1]), Tensor.fromArray([1], [1]), Tensor.fromArray([1], [1]))', /^error easyinv: forward of module .* failed: /],
  ['a denoising step of a scalar', 'unet.denoise(Tensor.fromArray([1], []), Tensor.fromArray([1], [1]), [], 1)', /^error easyinv: denoise needs latents \[B, \.\.\.\] and timesteps \[B\]/],
  ['a guided denoising step of an empty batch', 'unet.denoise(Tensor.fromArray([], [0, 4, 8, 8]), Tensor.fromArray(new BigInt64Array(0), [0]), [Tensor.fromArray([], [0, 77, 32])], 7.5, [1, 0.5])', /^(ok|error easyinv: noise prediction of module .* failed: )/],
  ['a denoising step with a number for a condition', 'unet.denoise(Tensor.fromArray(new Float32Array(256), [1, 4, 8, 8]), Tensor.fromArray([1], [1]), [1], 1)', /^error easyinv: conditioning\[0\] must be a Tensor/],
  ['forward after dispose', '(unet.dispose(), unet.forward(Tensor.fromArray([1], [1])))', /^error easyinv: module .* has been disposed/],
  ['psnr of an empty batch', 'easyinv.psnr(Tensor.fromArray([], [0, 3, 16, 16]), Tensor.fromArray([], [0, 3, 16, 16]))', /^ok \[\]$/],
  ['ssim of uint8 images', 'easyinv.ssim(Tensor.fromArray(new Uint8Array(768), [1, 3, 16, 16]), Tensor.fromArray(new Uint8Array(768), [1, 3, 16, 16]))', /^ok \[1\]$/],
  ['regularisation of a 2x2 latent', 'addon.regularizeNoise(Tensor.fromArray(new Float32Array(16), [1, 4, 2, 2]), Tensor.fromArray(new Float32Array(16), [1, 4, 2, 2]), { lambdaAc: 1, lambdaKl: 1, steps: 1, rolls: 1, seed: 0 })', /^(ok|error easyinv: regularizeNoise failed: )/],
  ['a tensor disposed while its work is queued', '(() => { const t = Tensor.fromArray([1, 2], [2]); const p = t.affine(2, 1); t.dispose(); return p.then((r) => r.toArray()); })()', /^ok \{"0":3,"1":5\}$/],
];

describe('hostile calls into LibTorch, each in its own process', () => {
  test.each(cases)('%s', async (_, expression, outcome) => {
    const { code, signal, stdout, stderr } = await runIsolated(`
      const { Tensor } = easyinv;
      const { addon } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'native'))});
      const unet = await easyinv.loadModule(weights('test/conv_unet.pt'));
      let line;
      try {
        const value = await (${expression});
        line = 'ok ' + JSON.stringify(value);
      } catch (error) {
        line = 'error ' + error.message;
      }
      console.log(line.split('\\n')[0]);`);
    expect({ signal, code, stderr }).toEqual({ signal: null, code: 0, stderr: '' });
    expect(stdout.trim()).toMatch(outcome);
  });

  test('the CLI given a crafted .safetensors exits 1 with the problem, not a signal', async () => {
    const header = Buffer.from(JSON.stringify({ latent: { dtype: 'F32', shape: [2 ** 62, 4], data_offsets: [0, 0] } }));
    const size = Buffer.alloc(8);
    size.writeBigUInt64LE(BigInt(header.length));
    const crafted = path.join(scratch, 'crafted.safetensors');
    fs.writeFileSync(crafted, Buffer.concat([size, header]));
    const cli = path.join(__dirname, '..', 'dist', 'cli.js');
    const run = promisify(execFile)(process.execPath, [cli, 'reconstruct', '--model', path.join(__dirname, '..', 'weights', 'test-sd1'),
      '--latent', crafted, '--out', path.join(scratch, 'out.png')]);
    await expect(run).rejects.toMatchObject({ code: 1, signal: null, stderr: expect.stringMatching(/has more elements than a tensor can hold/) });
  });
});
