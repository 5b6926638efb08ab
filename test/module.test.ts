import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { capabilities, cudaSettings, liveTensors, loadModule, Module, Tensor } from '../src';
import { maxAbsDifference, settledLiveTensors, weights } from './helpers';

const reference = require(weights('reference.json'));
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-module-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

async function unetInputs(batch = 2, side = 16) {
  const sample = await Tensor.randn([batch, 4, side, side], { seed: reference.conv_unet.sample_seed });
  const cond = await Tensor.randn([batch, 77, 32], { seed: reference.conv_unet.cond_seed });
  const timestep = Tensor.fromArray(reference.conv_unet.timestep.slice(0, batch), [batch], { dtype: 'int64' });
  return { sample, timestep, cond };
}

describe('TorchScript modules', () => {
  let unet: Module;
  beforeAll(async () => {
    unet = await loadModule(weights('conv_unet.pt'), { device: 'cpu', dtype: 'float32' });
  });

  test('`await using` disposes a module at the end of its block', async () => {
    let kept: Module;
    {
      await using module = await loadModule(weights('conv_unet.pt'));
      kept = module;
      expect(module.disposed).toBe(false);
    }
    expect(kept.disposed).toBe(true);
  });

  test('CUDA graphs are a CUDA option: on the CPU loading with them is a clear error', async () => {
    expect(unet.cudaGraphs).toBe(false);
    await expect(loadModule(weights('conv_unet.pt'), { cudaGraphs: true })).rejects.toThrow(/^easyinv: cudaGraphs needs a CUDA device, not cpu$/);
    await expect(loadModule(weights('conv_unet.pt'), { cudaGraphs: 1 as never })).rejects.toThrow(/cudaGraphs must be true or false/);
  });

  test('cudaSettings sets and reports LibTorch\'s process-wide switches, and refuses what is not a switch', () => {
    const initial = cudaSettings();
    // LibTorch's own defaults, as PyTorch's: TF32 for cuDNN convolutions only, no cuDNN benchmark
    expect(initial).toEqual({ matmulTf32: false, convolutionTf32: true, cudnnBenchmark: false });
    expect(cudaSettings({ matmulTf32: true, cudnnBenchmark: true })).toEqual({ matmulTf32: true, convolutionTf32: true, cudnnBenchmark: true });
    expect(cudaSettings({ convolutionTf32: false })).toEqual({ matmulTf32: true, convolutionTf32: false, cudnnBenchmark: true });
    expect(() => cudaSettings({ matmulTf32: 'on' as never })).toThrow(/matmulTf32 must be true or false/);
    expect(cudaSettings(initial)).toEqual(initial);
  });

  test('a loaded module reports its file, device and dtype', () => {
    expect(unet.path).toBe(weights('conv_unet.pt'));
    expect(unet.device).toBe('cpu');
    expect(unet.dtype).toBe('float32');
    expect(unet.disposed).toBe(false);
  });

  test('forward with the UNet signature matches PyTorch on the same inputs', async () => {
    const { sample, timestep, cond } = await unetInputs();
    const eps = (await unet.forward(sample, timestep, cond)) as Tensor;
    expect(eps.shape).toEqual([2, 4, 16, 16]);
    expect(maxAbsDifference(await eps.toArray(), reference.conv_unet.eps)).toBeLessThan(1e-5);
  });

  test('a batch gives the same noise as its samples one by one', async () => {
    const { sample, timestep, cond } = await unetInputs();
    const batched = await ((await unet.forward(sample, timestep, cond)) as Tensor).toArray();
    const [s0, s1] = await sample.split([1, 1]);
    const [t0, t1] = await Tensor.fromArray(new BigInt64Array(reference.conv_unet.timestep.map(BigInt)), [2]).split([1, 1]);
    const [c0, c1] = await cond.split([1, 1]);
    const one = await ((await unet.forward(s0, t0, c0)) as Tensor).toArray();
    const two = await ((await unet.forward(s1, t1, c1)) as Tensor).toArray();
    expect(maxAbsDifference(batched, [...one, ...two])).toBeLessThan(1e-5);
  });

  test('a tuple output becomes an array of tensors', async () => {
    const pair = await loadModule(weights('pair.pt'));
    const x = Tensor.fromArray([1, 2, 3, 4, 5, 6], [2, 3]);
    const [doubled, sums] = (await pair.forward(x)) as Tensor[];
    expect(Array.from(await doubled.toArray())).toEqual([2, 4, 6, 8, 10, 12]);
    expect(Array.from(await sums.toArray())).toEqual([6, 15]);
  });

  test.each(['float32', 'float16'] as const)('integer buffers keep their dtype in a %s placement (CLIP position_ids)', async (dtype) => {
    const positions = await loadModule(weights('positions.pt'), { device: 'cpu', dtype });
    const ids = [[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]];
    const out = (await positions.forward(Tensor.fromArray(ids.flat(), [2, 5], { dtype: 'int64' }))) as Tensor;
    expect(out.dtype).toBe(dtype);
    expect(out.shape).toEqual([2, 5, 4]);
    const expected = ids.flatMap((row) => row.flatMap((id, j) => Array(4).fill(id + j / 2)));
    expect(Array.from(await out.toArray())).toEqual(expected);
  });

  describe('errors', () => {
    test('a missing file', async () => {
      await expect(loadModule(path.join(scratch, 'missing.pt'))).rejects.toThrow(/module file not found: .*missing\.pt/);
    });

    test('a file that is not TorchScript', async () => {
      const file = path.join(scratch, 'notes.pt');
      fs.writeFileSync(file, 'this is not a TorchScript archive\n');
      await expect(loadModule(file)).rejects.toThrow(/is not a TorchScript archive, or it is truncated/);
    });

    test('a truncated .pt file', async () => {
      const file = path.join(scratch, 'truncated.pt');
      const whole = fs.readFileSync(weights('conv_unet.pt'));
      fs.writeFileSync(file, whole.subarray(0, Math.floor(whole.length / 2)));
      await expect(loadModule(file)).rejects.toThrow(/is not a TorchScript archive, or it is truncated/);
    });

    test('a directory instead of a file', async () => {
      await expect(loadModule(scratch)).rejects.toThrow(/not a file/);
    });

    test('the wrong number of arguments', async () => {
      const { sample, timestep, cond } = await unetInputs();
      await expect(unet.forward(sample, timestep)).rejects.toThrow(/forward of module .*conv_unet\.pt' failed: .*missing value for argument 'encoder_hidden_states'/);
      await expect(unet.forward(sample, timestep, cond, cond)).rejects.toThrow(/received 5 argument\(s\)/);
    });

    test('an input of the wrong shape', async () => {
      const { timestep, cond } = await unetInputs();
      const wrong = await Tensor.randn([2, 3, 16, 16], { seed: 1 });
      await expect(unet.forward(wrong, timestep, cond)).rejects.toThrow(/forward of module .* failed: .*channels/s);
    });

    test('an input of the wrong dtype', async () => {
      const { timestep, cond } = await unetInputs();
      const wrong = await Tensor.randn([2, 4, 16, 16], { seed: 1, dtype: 'float64' });
      await expect(unet.forward(wrong, timestep, cond)).rejects.toThrow(/forward of module .* failed: .*(Double|double)/s);
    });

    test('an argument that is not a Tensor', async () => {
      await expect(unet.forward(1 as never)).rejects.toThrow('forward argument 1 must be a Tensor');
    });

    test('an unknown device', async () => {
      await expect(loadModule(weights('conv_unet.pt'), { device: 'tpu' })).rejects.toThrow("unknown device 'tpu'");
    });

    test('a CUDA device that is not there', async () => {
      const { cuda, cudaBuild, devices } = await capabilities();
      const missing = cuda ? `cuda:${devices.length}` : 'cuda';
      const why = cudaBuild ? /CUDA is not available: this build links a CUDA LibTorch, but no CUDA device or driver is visible/
        : /CUDA is not available: this build links a CPU-only LibTorch/;
      await expect(loadModule(weights('conv_unet.pt'), { device: missing })).rejects.toThrow(cuda ? /does not exist/ : why);
    });

    test('a float16 convolution on the CPU runs where LibTorch has the kernels, else says float16 needs CUDA', async () => {
      const { devices } = await capabilities();
      const half = await loadModule(weights('conv_unet.pt'), { device: 'cpu', dtype: 'float16' });
      expect(half.dtype).toBe('float16');
      const { sample, timestep, cond } = await unetInputs();
      const forward = half.forward(await sample.to({ dtype: 'float16' }), timestep, await cond.to({ dtype: 'float16' }));
      if (devices[0].dtypes.includes('float16')) {
        const eps = await (await forward as Tensor).toArray();
        expect(maxAbsDifference(eps, reference.conv_unet.eps)).toBeLessThan(2e-2 * Math.max(...reference.conv_unet.eps.map(Math.abs)));
      } else {
        await expect(forward).rejects.toThrow(/^easyinv: float16 needs CUDA: module .* Load it with \{ dtype: 'float32' \} on 'cpu', or on 'cuda'/);
      }
    });

    test('a disposed input tensor', async () => {
      const { sample, timestep, cond } = await unetInputs();
      cond.dispose();
      await expect(unet.forward(sample, timestep, cond)).rejects.toThrow('this Tensor has been disposed');
    });

    test('a disposed module', async () => {
      const module = await loadModule(weights('pair.pt'));
      module.dispose();
      module.dispose();
      expect(module.disposed).toBe(true);
      await expect(module.forward(Tensor.fromArray([1], [1]))).rejects.toThrow(/module '.*pair\.pt' has been disposed/);
    });

    test('an output with a value JS cannot take is refused whole: none of its tensors is left alive', async () => {
      const module = await loadModule(weights('device_output.pt'));
      const x = Tensor.fromArray([1, 2], [2]);
      const before = await settledLiveTensors();
      // Counted at once: a handle made for the output would be alive until a collection. (A late collection of earlier
      // tests' garbage can only lower the count.)
      await expect(module.forward(x)).rejects.toThrow(
        /^easyinv: forward of module '.*device_output\.pt' failed: the module returned a value of type Device, which easyinv cannot pass to JS/);
      expect(liveTensors()).toBeLessThanOrEqual(before);
      const keyed = await loadModule(weights('int_key_output.pt'));
      await expect(keyed.forward(x)).rejects.toThrow(/the module returned a dict with keys of type Int, which easyinv cannot pass to JS/);
      expect(liveTensors()).toBeLessThanOrEqual(before);
      x.dispose();
      module.dispose();
      keyed.dispose();
    });

    test('a module dtype that is not floating', async () => {
      await expect(loadModule(weights('pair.pt'), { dtype: 'int64' })).rejects.toThrow(/dtype must be a floating type/);
    });
  });
});
