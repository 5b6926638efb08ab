import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import type { Addon, NativeModule, Tensor, TensorClass } from '../binding';
import { explain, loadAddon } from '../binding';
import { runIsolated } from './isolated';

// Each list must name every member its interface declares (the compiler checks that), and the running addon must
// have exactly these: so the handwritten declarations and the native code cannot drift apart.
const tensorMembers: Record<Exclude<keyof Tensor, symbol>, true> = {
  shape: true, dtype: true, device: true, disposed: true, dispose: true, toArray: true, to: true, lerp: true,
  affine: true, clamp: true,
  split: true, mean: true, std: true, norm: true,
};
const tensorStatics: Record<Exclude<keyof TensorClass, 'prototype' | symbol>, true> = {
  fromArray: true, randn: true, weightedSum: true, cat: true,
};
const moduleMembers: Record<keyof NativeModule, true> = {
  path: true, device: true, dtype: true, channelsLast: true, cudaGraphs: true, disposed: true, forward: true,
  denoise: true, dispose: true,
};
const addonExports: Record<keyof Addon, true> = {
  path: true, Tensor: true, Module: true, loadModule: true, capabilities: true, synchronize: true, emptyCache: true,
  cudaSettings: true, retainFreedMemory: true, liveTensors: true, regularizeNoise: true, psnr: true, ssim: true, peakMemory: true, resetPeakMemory: true,
  nvrtcCheck: true, setThreads: true,
};

const ownNames = (object: object) => Object.getOwnPropertyNames(object).filter((name) => name !== 'constructor');

describe('the native binding', () => {
  const addon = loadAddon();

  test('exports exactly what binding/index.d.ts declares', () => {
    expect(Object.keys(addon).sort()).toEqual(Object.keys(addonExports).sort());
    expect(ownNames(addon.Tensor.prototype).sort()).toEqual(Object.keys(tensorMembers).sort());
    expect(typeof addon.Tensor.prototype[Symbol.dispose]).toBe('function');
    const statics = ownNames(addon.Tensor).filter((name) => typeof (addon.Tensor as any)[name] === 'function');
    expect(statics.sort()).toEqual(Object.keys(tensorStatics).sort());
    expect(ownNames(addon.Module.prototype).sort()).toEqual(Object.keys(moduleMembers).sort());
  });

  test('capabilities report LibTorch, the CPU and the dtypes a convolution really ran in', async () => {
    const caps = await addon.capabilities();
    expect(caps.libtorch).toMatch(/^\d+\.\d+\.\d+/);
    expect(caps.devices[0]).toMatchObject({ device: 'cpu', name: 'CPU' });
    expect(caps.devices[0].dtypes).toContain('float32');
    expect(caps.devices.length).toBe(1 + (caps.cuda ? caps.devices.filter((d) => d.device.startsWith('cuda')).length : 0));
    for (const device of caps.devices.slice(1)) expect(device.dtypes).toEqual(expect.arrayContaining(['float32', 'float16']));
  });

  // TorchScript's CUDA fuser compiles with NVRTC from a module's second forward on; pip's libnvrtc finds its builtins
  // only if the addon loaded them first (no GPU is needed to compile, so a CUDA build proves it here).
  test('a CUDA build compiles a kernel with LibTorch\'s NVRTC from inside Node; a CPU build says it cannot', async () => {
    const { cudaBuild, libtorch, nvrtcBuiltins } = await addon.capabilities();
    if (cudaBuild) {
      expect(nvrtcBuiltins).toMatch(/libnvrtc-builtins\.so\.\d/);
      await expect(addon.nvrtcCheck()).resolves.toEqual({ library: expect.stringMatching(/libnvrtc\.so\.\d/), builtins: nvrtcBuiltins });
    } else {
      expect(nvrtcBuiltins).toBeNull();
      await expect(addon.nvrtcCheck()).rejects.toThrow(`easyinv: checking NVRTC failed: nvrtcCheck needs a CUDA build of easyinv; this one links LibTorch ${libtorch} for the CPU`);
    }
  });

  test('without a built addon the library still loads, its pure-JS parts work, and the first native call explains', async () => {
    // The package as installed with its build missing: dist/, binding/ and package.json, no build/.
    const root = path.join(__dirname, '..');
    const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-unbuilt-'));
    for (const part of ['dist', 'binding', 'package.json']) fs.cpSync(path.join(root, part), path.join(copy, part), { recursive: true });
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(copy, 'node_modules'));
    const { code, stdout, stderr } = await runIsolated(`
      const lib = require(${JSON.stringify(path.join(copy, 'dist'))});
      console.log(lib.makeSchedule(lib.readManifest(${JSON.stringify(path.join(root, 'weights', 'test-sd1'))}).scheduler, 10).timesteps.join(','));
      try { lib.Tensor.fromArray([1], [1]); } catch (error) { console.log(error.message.split('\\n')[0]); }`);
    fs.rmSync(copy, { recursive: true, force: true });
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    expect(stdout.split('\n')).toEqual(['901,801,701,601,501,401,301,201,101,1', 'easyinv: the native addon could not be loaded.', '']);
  });

  test('a load failure names the LibTorch the addon was built against when that one is gone', () => {
    const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-moved-'));
    fs.cpSync(path.join(__dirname, '..', 'binding'), path.join(copy, 'binding'), { recursive: true });
    fs.mkdirSync(path.join(copy, 'build'));
    fs.writeFileSync(path.join(copy, 'build', 'easyinv-libtorch.json'), JSON.stringify({ version: '9.9.9', libDir: path.join(copy, 'gone') }));
    const moved = require(path.join(copy, 'binding')).explain(new Error('libtorch_cpu.so: cannot open shared object file'));
    fs.rmSync(copy, { recursive: true, force: true });
    expect(moved.message).toMatch(/built against LibTorch 9\.9\.9 in .*gone, which is no longer there[\s\S]*Fix: reinstall/);
  });

  test('a LibTorch this process may not read is refused before the addon loads, naming it and the fixes', () => {
    // Loading anyway would let the dynamic linker take another LibTorch on the system's path (a distribution's) and
    // kill the process at its first call. As root, the check runs as nobody: root reads through any permission.
    const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-locked-'));
    fs.chmodSync(copy, 0o755);
    fs.cpSync(path.join(__dirname, '..', 'binding'), path.join(copy, 'binding'), { recursive: true });
    fs.mkdirSync(path.join(copy, 'build'));
    const locked = path.join(copy, 'locked');
    fs.mkdirSync(locked);
    fs.writeFileSync(path.join(locked, 'libtorch.so'), '');
    fs.writeFileSync(path.join(copy, 'build', 'easyinv-libtorch.json'), JSON.stringify({ version: '9.9.9', libDir: locked }));
    const asRoot = process.getuid?.() === 0;
    fs.chmodSync(locked, asRoot ? 0o700 : 0o000);
    const user = asRoot ? { uid: 65534, gid: 65534 } : {};
    const load = `try { require(${JSON.stringify(path.join(copy, 'binding'))}).loadAddon(); console.log('loaded'); } catch (error) { console.log(error.message); }`;
    const { status, stdout } = spawnSync(process.execPath, ['-e', load], { ...user, cwd: os.tmpdir(), encoding: 'utf8' });
    fs.chmodSync(locked, 0o700);
    fs.rmSync(path.join(locked, 'libtorch.so'));
    const gone = spawnSync(process.execPath, ['-e', load], { cwd: os.tmpdir(), encoding: 'utf8' });
    fs.rmSync(copy, { recursive: true, force: true });
    expect(status).toBe(0);
    expect(stdout).toMatch(new RegExp(`^easyinv: the native addon could not be loaded\\.\nthe LibTorch it was built against cannot be read\n` +
      `Likely causes and fixes:\n  - The addon was built against LibTorch 9\\.9\\.9 in ${locked}, which this process may not read \\(EACCES; user id \\d+\\)\\.\n` +
      '    Fix: run as a user who may read it'));
    expect(gone.stdout).toMatch(/built against LibTorch 9\.9\.9 in .*locked, which is no longer there\.\n    Fix: reinstall that LibTorch/);
  });

  test('a load failure lists the likely causes and their fixes', () => {
    const missing = explain(new Error('Could not locate the bindings file. Tried: build/Release/easyinv.node'));
    expect(missing.message).toMatch(/could not be loaded[\s\S]*never built[\s\S]*Fix: npm rebuild easyinv/);
    const moved = explain(new Error('libtorch_cpu.so: cannot open shared object file: No such file or directory'));
    expect(moved.message).toMatch(/LibTorch library .* is gone[\s\S]*Fix:/);
    const abi = explain(new Error('easyinv.node: undefined symbol: _ZN3c106detail14torchCheckFail'));
    expect(abi.message).toMatch(/another LibTorch, another C\+\+ ABI[\s\S]*Fix: npm rebuild easyinv/);
  });
});
