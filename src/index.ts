import { addon, tensorClass, type CudaSettings } from './native';

export type { Capabilities, CudaSettings, Device, DeviceCapabilities, Dtype, ModuleOptions, ModuleOutput, Placement, TypedData } from './native';
export { setThreads } from './native';
export { Module, loadModule } from './module';
export { Model, loadModel } from './model';
export type { Condition, ModelOptions, PromptEncoding } from './model';
export { readManifest } from './manifest';
export type { Family, Manifest } from './manifest';
export { invert, reconstruct, methodNames, notebookSettings } from './inversion';
export type { InversionResult, InvertOptions, MethodName, Progress, ProgressCallback, ReconstructOptions } from './inversion';
export { edit, editSettings } from './edit';
export type { EditMethod, EditOptions, EditResult, EditSettings, EditSource } from './edit';
export { loadLpips, lpips, psnr, ssim } from './metrics';
export { imageBytes, readImage, writeImage, writeGrid, quantize } from './image';
export type { Fit, ImageFormat, ImageSource, ReadOptions } from './image';
export { loadLatents, saveLatents } from './latent-file';
export type { LatentFile } from './latent-file';
export { alphaBars, makeSchedule, samplingTimesteps, ddimWeights } from './schedule';
export type { Schedule, SchedulerConfig, Transition } from './schedule';

/** A LibTorch tensor on a device; see Tensor.fromArray, Tensor.randn, Tensor.weightedSum, Tensor.cat. */
export const Tensor = tensorClass;
export type Tensor = import('./native').Tensor;

/** LibTorch's version, CUDA availability, the devices and the dtypes that really run on each. */
export const capabilities = () => addon.capabilities();
/**
 * Compiles a small CUDA kernel with LibTorch's NVRTC in this process (needs a CUDA build, not a GPU): the check that
 * TorchScript's CUDA fuser will be able to compile. Resolves to the NVRTC and builtins libraries used.
 */
export const nvrtcCheck = () => addon.nvrtcCheck();
/** Resolves once all work queued on `device` before the call has finished (CUDA kernels included). */
export const synchronize = (device: string = 'cpu') => addon.synchronize(device);
/** Returns cached, unused CUDA memory to the driver. */
export const emptyCache = () => addon.emptyCache();
/**
 * LibTorch's process-wide CUDA switches (TF32 matmuls and convolutions, cuDNN benchmark mode): sets those given,
 * returns all. They take effect for the work queued after the call.
 */
export const cudaSettings = (update?: Partial<CudaSettings>) => addon.cudaSettings(update);
/**
 * Makes the process keep freed memory for reuse instead of returning it to the kernel (glibc only; false elsewhere):
 * CPU forwards of a full-size SD-V1 UNet fault their activations in afresh every time without it (1.3-1.5x the time).
 * The process then keeps its peak memory. The CLI turns it on; a library leaves the choice to its host.
 */
export const retainFreedMemory = () => addon.retainFreedMemory();
/** Tensor handles not yet disposed in this JS environment: a leak check. */
export const liveTensors = () => addon.liveTensors();
