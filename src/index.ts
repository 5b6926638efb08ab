import { addon } from './native';

export type { Capabilities, Device, DeviceCapabilities, Dtype, ModuleOutput, Placement, TypedData } from './native';
export { Module, loadModule } from './module';

/** A LibTorch tensor on a device; see Tensor.fromArray, Tensor.randn, Tensor.weightedSum, Tensor.cat. */
export const Tensor = addon.Tensor;
export type Tensor = import('./native').Tensor;

/** LibTorch's version, CUDA availability, the devices and the dtypes that really run on each. */
export const capabilities = () => addon.capabilities();
/** Resolves once all work queued on `device` before the call has finished (CUDA kernels included). */
export const synchronize = (device: string = 'cpu') => addon.synchronize(device);
/** Returns cached, unused CUDA memory to the driver. */
export const emptyCache = () => addon.emptyCache();
