// The typed native addon, loaded once; the rest of the library imports it from here.
import { loadAddon } from '../binding';

export type {
  Capabilities,
  Device,
  DeviceCapabilities,
  Dtype,
  ModuleOutput,
  Placement,
  RegularizeOptions,
  Tensor,
  TypedData,
} from '../binding';

export const addon = loadAddon();

export function isTensor(value: unknown): value is import('../binding').Tensor {
  return value instanceof (addon.Tensor as unknown as abstract new () => unknown);
}

type Owned = import('../binding').ModuleOutput | undefined | Owned[] | { [key: string]: Owned };

/** Frees every tensor in a value (a module's output, a list or record of tensors), however nested; skips the rest. */
export function disposeAll(value: Owned): void {
  if (isTensor(value)) value.dispose();
  else if (Array.isArray(value)) value.forEach(disposeAll);
  else if (value !== null && typeof value === 'object') Object.values(value).forEach(disposeAll);
}
