// What every inversion method and the reconstruction share: the noise model with its call count, the one DDIM
// step, the progress report, the abort check, and the bookkeeping that frees every intermediate tensor.
import { abortError } from '../errors';
import type { Condition, Model } from '../model';
import { addon, type RegularizeOptions, type Tensor } from '../native';
import { ddimWeights, type Transition } from '../schedule';

export interface Progress {
  method: string;
  phase: 'invert' | 'reconstruct' | 'edit';
  /** Steps done so far (1..steps). */
  step: number;
  /** The steps of this phase: N, or N + 1 over PNDM's timesteps. */
  steps: number;
  timestep: number;
  unetCalls: number;
  seconds: number;
  /** The latent after this step, borrowed: valid until the callback (or the promise it returns) ends. */
  latent: Tensor;
}

/** Called after every step; the run waits for a returned promise before it goes on. */
export type ProgressCallback = (progress: Progress) => void | Promise<void>;

/** What a run of each phase is called in messages. */
export const phaseNames = { invert: 'inversion', reconstruct: 'reconstruction', edit: 'edit' } as const;

export class Run {
  unetCalls = 0;
  private readonly started = performance.now();
  private readonly owned = new Set<Tensor>();
  private readonly timestepTensors = new Map<string, Tensor>();
  private kept?: Tensor[];

  constructor(
    private readonly model: Model,
    private readonly condition: Condition,
    readonly method: string,
    readonly phase: Progress['phase'],
    /** The N asked for (what window fractions are of). */
    readonly steps: number,
    /** The transitions the run takes: N, or N + 1 over PNDM's timesteps. */
    private readonly transitions: number,
    private readonly onProgress?: ProgressCallback,
    private readonly signal?: AbortSignal,
  ) {}

  /** eps(z, t): one UNet call (both guidance halves in one batch). */
  async eps(z: Tensor, timestep: number): Promise<Tensor> {
    return this.denoise(z, timestep);
  }

  /** The DDIM step from the transition's `from` level to its `to` level with noise eps. */
  async ddim(z: Tensor, eps: Tensor, transition: Transition): Promise<Tensor> {
    return this.combine([z, eps], ddimWeights(transition.from, transition.to));
  }

  /**
   * a z + b eps(z, t) for weights [a, b], the UNet call and the combination in one native job (one step); an edit
   * gives the step's own condition (its attention sources).
   */
  async step(z: Tensor, timestep: number, weights: [number, number], condition = this.condition): Promise<Tensor> {
    return this.denoise(z, timestep, weights, condition);
  }

  private async denoise(z: Tensor, timestep: number, weights?: [number, number], condition = this.condition): Promise<Tensor> {
    this.unetCalls++;
    return this.own(await this.model.denoise(z, this.timesteps(timestep, z.shape[0]), condition, weights));
  }

  // Each timestep goes to the device once per run, not once per UNet call.
  private timesteps(timestep: number, batch: number): Tensor {
    const key = `${timestep}/${batch}`;
    let tensor = this.timestepTensors.get(key);
    if (tensor === undefined) {
      tensor = this.own(this.model.timesteps(timestep, batch, this.condition));
      this.timestepTensors.set(key, tensor);
    }
    return tensor;
  }

  /** sum_i weights[i] tensors[i] on the device. */
  async combine(tensors: Tensor[], weights: number[]): Promise<Tensor> {
    return this.own(await addon.Tensor.weightedSum(tensors, weights));
  }

  /** Standard normal noise of the latent's shape from `seed`, the same for every sample of its batch. */
  async noiseLike(latent: Tensor, seed: number): Promise<Tensor> {
    const one = await addon.Tensor.randn([1, ...latent.shape.slice(1)], { seed, device: latent.device, dtype: latent.dtype });
    try {
      return this.own(await addon.Tensor.cat(Array(latent.shape[0]).fill(one)));
    } finally {
      one.dispose();
    }
  }

  /** ReNoise's noise regularisation of eps toward target's statistics (native code: it needs autograd). */
  async regularize(eps: Tensor, target: Tensor, settings: RegularizeOptions): Promise<Tensor> {
    return this.own(await addon.regularizeNoise(eps, target, settings));
  }

  /** Takes charge of a tensor: it is freed with the run unless it is part of the result. */
  own<T extends Tensor>(tensor: T): T {
    this.owned.add(tensor);
    return tensor;
  }

  /** Frees intermediates now, to keep memory flat over long runs; the latents kept as steps' results stay. */
  free(...tensors: Tensor[]): void {
    for (const tensor of tensors) {
      if (!this.kept?.includes(tensor) && this.owned.delete(tensor)) tensor.dispose();
    }
  }

  /** From now on every step's latent is kept (not freed by the method); the list fills as the steps finish. */
  keepLatents(): Tensor[] {
    this.kept = [];
    return this.kept;
  }

  /** Reports a finished step and stops the run here if it was aborted. */
  async stepDone(transition: Transition, latent: Tensor): Promise<void> {
    this.kept?.push(latent);
    await this.onProgress?.({
      method: this.method,
      phase: this.phase,
      step: transition.index + 1,
      steps: this.transitions,
      timestep: transition.timestep,
      unetCalls: this.unetCalls,
      seconds: this.seconds(),
      latent,
    });
    this.throwIfAborted(transition.index + 1);
  }

  throwIfAborted(done: number): void {
    if (this.signal?.aborted) {
      throw abortError(`${this.method} ${phaseNames[this.phase]} aborted after ` +
        `${done} of ${this.transitions} steps`, this.signal.reason);
    }
  }

  seconds(): number {
    return (performance.now() - this.started) / 1000;
  }

  /** Frees everything the run made except `keep`. */
  finish(keep: Tensor[]): void {
    for (const tensor of keep) this.owned.delete(tensor);
    this.kept = undefined;
    this.free(...this.owned);
  }
}
