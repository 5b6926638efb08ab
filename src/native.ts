// The typed native addon, loaded once; the rest of the library imports it from here.
import { loadAddon } from '../binding';

export type {
  Capabilities,
  Device,
  DeviceCapabilities,
  Dtype,
  ModuleOutput,
  Placement,
  Tensor,
  TypedData,
} from '../binding';

export const addon = loadAddon();
