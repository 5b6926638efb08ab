// The typed native addon; the rest of the library imports it from here.
import { loadAddon, type Addon, type TensorClass } from '../binding';
import { optionError } from './errors';
import { defaultThreads, loadWithThreadSettings } from './threads';

export type {
  Capabilities,
  CudaSettings,
  Device,
  DeviceCapabilities,
  Dtype,
  ModuleOptions,
  ModuleOutput,
  Placement,
  RegularizeOptions,
  Tensor,
  TypedData,
} from '../binding';

let loaded: Addon | undefined;

function load(): Addon {
  if (loaded === undefined) {
    const threads = defaultThreads(); // before loading, so that a bad variable leaves the addon unloaded
    loaded = loadWithThreadSettings(loadAddon);
    loaded.setThreads(threads);
  }
  return loaded;
}

/**
 * The addon, loaded on first use rather than at require time: the parts that need no LibTorch (schedules,
 * manifests, latent files' headers) work even where the build failed, and the first native call says why it did.
 */
export const addon: Addon = new Proxy({} as Addon, { get: (_, key) => Reflect.get(load(), key) });

/** The Tensor class, resolved on first use like the addon (static calls, `instanceof`, `prototype` all pass through). */
export const tensorClass: TensorClass = new Proxy(function Tensor() {} as unknown as TensorClass, {
  get: (_, key) => Reflect.get(load().Tensor, key),
  construct: (_, args) => Reflect.construct(load().Tensor as unknown as new (...a: unknown[]) => object, args),
});

export function isTensor(value: unknown): value is import('../binding').Tensor {
  return value instanceof (load().Tensor as unknown as abstract new () => unknown);
}

type Owned = import('../binding').ModuleOutput | undefined | Owned[] | { [key: string]: Owned };

/** Frees every tensor in a value (a module's output, a list or record of tensors), however nested; skips the rest. */
export function disposeAll(value: Owned): void {
  if (isTensor(value)) value.dispose();
  else if (Array.isArray(value)) value.forEach(disposeAll);
  else if (value !== null && typeof value === 'object') Object.values(value).forEach(disposeAll);
}

/**
 * The threads LibTorch computes with, on each device thread, for the work queued after the call (capabilities()
 * reports it). The default: MKL_NUM_THREADS or OMP_NUM_THREADS when set, else every CPU the process may run on.
 */
export function setThreads(threads: number): void {
  if (typeof threads !== 'number') optionError('threads', 'must be a number', TypeError);
  if (!Number.isInteger(threads) || threads < 1 || threads > 1024) optionError('threads', `must be an integer from 1 to 1024, not ${threads}`);
  addon.setThreads(threads);
}
