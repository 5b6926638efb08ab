// The native addon's surface, written by hand and checked against the running addon by test/binding.test.ts.

export type Dtype = 'float32' | 'float16' | 'bfloat16' | 'float64' | 'int64' | 'int32' | 'uint8' | 'bool';
/** 'cpu', 'cuda' (device 0) or 'cuda:<index>'. */
export type Device = string;
export type TypedData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

export interface Placement {
  device?: Device;
  dtype?: Dtype;
}

/** A tensor that lives on its device. Reading or computing its data is asynchronous and runs off the JS thread. */
export interface Tensor {
  readonly shape: number[];
  readonly dtype: Dtype;
  readonly device: Device;
  readonly disposed: boolean;
  /** Frees the tensor now (idempotent); work already queued on it still completes. */
  dispose(): void;
  /** The same as dispose(), for `using t = ...`. */
  [Symbol.dispose](): void;
  /**
   * A copy of the data: Float32Array for float32, float16 and bfloat16; Float64Array, Int32Array, BigInt64Array and
   * Uint8Array (also for bool) for the others. The type parameter names the array for non-float32 dtypes.
   */
  toArray<T extends TypedData = Float32Array>(): Promise<[T][T extends unknown ? 0 : never]>; // NoInfer<T>, for TypeScript before 5.4
  to(placement: Placement): Promise<Tensor>;
  /** this + weight * (end - this) */
  lerp(end: Tensor, weight: number): Promise<Tensor>;
  /** this * scale + shift */
  affine(scale: number, shift: number): Promise<Tensor>;
  /** Each element limited to [min, max]. */
  clamp(min: number, max: number): Promise<Tensor>;
  /** Views along the batch axis (dim 0). */
  split(sizes: number[]): Promise<Tensor[]>;
  mean(): Promise<number>;
  /** Sample standard deviation (n - 1), as torch.std. */
  std(): Promise<number>;
  /** Euclidean norm of all elements. */
  norm(): Promise<number>;
}

export interface TensorClass {
  readonly prototype: Tensor;
  /** `value instanceof Tensor`. */
  [Symbol.hasInstance](value: unknown): value is Tensor;
  /** Copies data into a new tensor; the dtype defaults to the typed array's own, float32 for a plain array. */
  fromArray(data: TypedData | number[], shape: number[], placement?: Placement): Tensor;
  /** Standard normal noise drawn on the CPU from `seed`, so a seed means the same noise on every device. */
  randn(shape: number[], options: Placement & { seed: number }): Promise<Tensor>;
  /** sum_i weights[i] * tensors[i], in one call, in the promoted dtype of the inputs. */
  weightedSum(tensors: Tensor[], weights: number[]): Promise<Tensor>;
  /** Concatenation along `dim` (default 0, the batch axis; negative counts from the end). */
  cat(tensors: Tensor[], dim?: number): Promise<Tensor>;
}

export interface ModuleOptions extends Placement {
  /** Keep the 4-D weights, and put 4-D inputs, in NHWC (channels_last) order, the layout oneDNN and cuDNN convolve
   * fastest; the values are unchanged. */
  channelsLast?: boolean;
  /** CUDA only: `denoise` captures the forward as a CUDA graph per input shape (after warm-up forwards) and replays
   * it, launching the whole forward at once; `forward` stays eager. */
  cudaGraphs?: boolean;
}

export type ModuleOutput = Tensor | number | boolean | string | null | ModuleOutput[] | { [key: string]: ModuleOutput };

export interface NativeModule {
  readonly path: string;
  readonly device: Device;
  readonly dtype: Dtype;
  /** Whether its 4-D weights and image inputs are in NHWC order (loadModule's channelsLast). */
  readonly channelsLast: boolean;
  /** Whether `denoise` replays CUDA graphs (loadModule's cudaGraphs). */
  readonly cudaGraphs: boolean;
  readonly disposed: boolean;
  forward(...inputs: Tensor[]): Promise<ModuleOutput>;
  /**
   * A UNet's use in one diffusion step, as one job: forward(latents, timesteps, ...conditioning) on the doubled batch
   * [latents; latents] when guidance != 1 (timesteps and conditioning then have 2B rows, [uncond; cond]), then
   * eps = eps_u + guidance (eps_c - eps_u); with weights [a, b] it returns a latents + b eps instead of eps.
   */
  denoise(latents: Tensor, timesteps: Tensor, conditioning: Tensor[], guidance: number, weights?: [number, number]): Promise<Tensor>;
  dispose(): void;
}

export interface DeviceCapabilities {
  device: Device;
  name: string;
  memoryBytes?: number;
  /** The dtypes a convolution actually ran in on this device. */
  dtypes: Dtype[];
}

export interface Capabilities {
  libtorch: string;
  cuda: boolean;
  cudnn: boolean;
  cudaBuild: boolean;
  /** The intra-op threads LibTorch computes with on the device threads (setThreads). */
  threads: number;
  /** Whether this build loads compiled .pt2 bundles (AOTInductor packages: LibTorch >= 2.6). */
  compiledBundles: boolean;
  /** The NVRTC builtins library the addon loaded by path for LibTorch's runtime compiler (CUDA builds); else null. */
  nvrtcBuiltins: string | null;
  devices: DeviceCapabilities[];
}

/** LibTorch's process-wide CUDA switches, as PyTorch's torch.backends flags of the same meaning. */
export interface CudaSettings {
  /** TF32 tensor cores for float32 matrix multiplications (torch.backends.cuda.matmul.allow_tf32). */
  matmulTf32: boolean;
  /** TF32 for float32 cuDNN convolutions (torch.backends.cudnn.allow_tf32). */
  convolutionTf32: boolean;
  /** cuDNN tries its algorithms once per input shape and keeps the fastest (torch.backends.cudnn.benchmark). */
  cudnnBenchmark: boolean;
}

export interface Addon {
  /** The file the addon was loaded from. */
  readonly path: string;
  Tensor: TensorClass;
  Module: { readonly prototype: NativeModule };
  loadModule(path: string, options?: ModuleOptions): Promise<NativeModule>;
  capabilities(): Promise<Capabilities>;
  /** Resolves when all work queued on the device before this call has finished. */
  synchronize(device?: Device): Promise<void>;
  /** Returns cached, unused CUDA memory to the driver (nothing to do on the CPU). */
  emptyCache(): void;
  /** Sets the given CUDA switches for the whole process and returns them all. */
  cudaSettings(update?: Partial<CudaSettings>): CudaSettings;
  /**
   * From now on the process keeps freed memory for reuse (glibc: one arena, no mmap'd blocks, no trimming) instead of handing
   * it back to the kernel and faulting it in again on the next forward: 1.3-1.5x faster CPU forwards of a full-size
   * UNet, and the process keeps its peak memory. Process-wide and one-way; false where not glibc.
   */
  retainFreedMemory(): boolean;
  /**
   * The intra-op threads LibTorch computes with on every device thread, from each one's next job on (process-wide;
   * a RangeError unless an integer from 1 to 1024). Without a call, LibTorch's own default.
   */
  setThreads(threads: number): void;
  /** Tensor handles of this JS environment that are not disposed yet (a leak check). */
  liveTensors(): number;
  /** Peak bytes allocated on a CUDA device since the last resetPeakMemory; null on the CPU. */
  peakMemory(device: Device): number | null;
  resetPeakMemory(device: Device): void;
  /**
   * ReNoise's noise regularisation of eps [B, C, H, W] toward target: `steps` rounds of a patch-KL gradient step
   * (weight lambdaKl) and `rolls` auto-correlation gradient steps (weight lambdaAc / rolls), shifts drawn from `seed`.
   */
  regularizeNoise(eps: Tensor, target: Tensor, options: RegularizeOptions): Promise<Tensor>;
  /**
   * Compiles a small CUDA kernel with the NVRTC that LibTorch loads, in this process (no GPU needed): what
   * TorchScript's CUDA fuser does from a module's second forward on. Rejects with NVRTC's message, or on a CPU build.
   */
  nvrtcCheck(): Promise<{ library: string; builtins: string }>;
  /** PSNR per image of [B, C, H, W] images in [0, 1]: 10 log10(1 / MSE), in float64. */
  psnr(a: Tensor, b: Tensor): Promise<number[]>;
  /** SSIM per image (Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, data range 1, valid region), in float64. */
  ssim(a: Tensor, b: Tensor): Promise<number[]>;
}

export interface RegularizeOptions {
  lambdaAc: number;
  lambdaKl: number;
  steps: number;
  rolls: number;
  seed: number;
}

export function loadAddon(): Addon;
export function explain(error: unknown): Error;
