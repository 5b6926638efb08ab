import * as fs from 'fs';

import { failure, typeError } from './errors';
import { addon, type Device, type Dtype, type ModuleOptions, type ModuleOutput, type Tensor } from './native';

type NativeModule = Awaited<ReturnType<typeof addon.loadModule>>;

/** A TorchScript module on one device, in one dtype. `forward` runs off the JS thread, in order per device. */
export class Module {
  constructor(private readonly native: NativeModule) {}

  get path(): string {
    return this.native.path;
  }

  get device(): Device {
    return this.native.device;
  }

  get dtype(): Dtype {
    return this.native.dtype;
  }

  get channelsLast(): boolean {
    return this.native.channelsLast;
  }

  get cudaGraphs(): boolean {
    return this.native.cudaGraphs;
  }

  get disposed(): boolean {
    return this.native.disposed;
  }

  async forward(...inputs: Tensor[]): Promise<ModuleOutput> {
    try {
      return await this.native.forward(...inputs);
    } catch (error) {
      throw explainForwardError(error as Error, this.native);
    }
  }

  /** A UNet's part of one diffusion step in one job: guidance, and the step's combination when given (NativeModule). */
  async denoise(latents: Tensor, timesteps: Tensor, conditioning: Tensor[], guidance: number, weights?: [number, number]): Promise<Tensor> {
    try {
      return await this.native.denoise(latents, timesteps, conditioning, guidance, weights);
    } catch (error) {
      throw explainForwardError(error as Error, this.native);
    }
  }

  /** Frees the module (idempotent); forwards already queued still complete. */
  dispose(): void {
    this.native.dispose();
  }

  /** For `await using module = await loadModule(...)`. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }
}

function explainForwardError(error: Error, module: NativeModule): Error {
  if (module.device === 'cpu' && /not implemented for '(Half|BFloat16)'/.test(error.message)) {
    return failure(
      `float16 needs CUDA: module '${module.path}' runs in ${module.dtype} on the CPU, where LibTorch has no ` +
        `half-precision kernels for what it uses. Load it with { dtype: 'float32' } on 'cpu', or on 'cuda'.\n` +
        `LibTorch said: ${error.message}`,
      { cause: error },
    );
  }
  return error;
}

/**
 * Loads a TorchScript file (torch.jit.save) onto a device and converts its floating parameters to `dtype`, or a
 * compiled .pt2 package (AOTInductor), which runs the device and dtype it was compiled for.
 */
export async function loadModule(path: string, options: ModuleOptions = {}): Promise<Module> {
  if (typeof path !== 'string' || path === '') typeError('loadModule needs the path of a TorchScript file or a .pt2 package');
  const stat = fs.statSync(path, { throwIfNoEntry: false });
  if (stat === undefined) throw failure(`module file not found: ${path}`);
  if (!stat.isFile()) throw failure(`not a file: ${path} (expected a TorchScript .pt file or a .pt2 package)`);
  try {
    return new Module(await addon.loadModule(path, options));
  } catch (error) {
    throw explainLoadError(error as Error, path);
  }
}

function explainLoadError(error: Error, path: string): Error {
  let hint = '';
  if (/PytorchStreamReader|zip archive|central directory/.test(error.message)) {
    hint = path.endsWith('.pt2')
      ? `'${path}' is not a .pt2 package, or it is truncated or corrupt. Make it with tools/export_sd.py --format pt2 ` +
        '(torch._inductor.aoti_compile_and_package), and copy it again if it was cut short.'
      : `'${path}' is not a TorchScript archive, or it is truncated or corrupt. Write it with torch.jit.save ` +
        '(a traced or scripted module), and copy it again if it was cut short.';
  } else if (/version/i.test(error.message) && /maximum supported|newer/i.test(error.message)) {
    hint = `'${path}' was written by a PyTorch newer than this LibTorch; export it with a PyTorch no newer than the ` +
      'LibTorch easyinv was built against (capabilities().libtorch).';
  }
  return hint ? failure(`cannot load '${path}': ${hint}\nLibTorch said: ${error.message}`, { cause: error }) : error;
}
