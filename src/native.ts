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
