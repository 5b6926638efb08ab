import * as path from 'path';
import { Worker } from 'worker_threads';

import { invert, liveTensors, loadModel, loadModule, Module, synchronize, Tensor } from '../src';
import { maxAbsDifference, settledLiveTensors, weights } from './helpers';

async function timedForward(chain: Module, rows: number) {
  const x = await Tensor.randn([rows, 256], { seed: 5 });
  const started = Date.now();
  await chain.forward(x);
  return Date.now() - started;
}

describe('work runs off the JS thread', () => {
  // Counted in event-loop turns, not milliseconds: a blocked JS thread turns the loop 0 or 1 times during the
  // forward, whatever the machine's load; a free one turns it many times however slowly it is scheduled.
  test('the event loop keeps turning while a long forward runs', async () => {
    const chain = await loadModule(weights('slow_chain.pt'));
    let rows = 512;
    while ((await timedForward(chain, rows)) < 200 && rows < 65536) rows *= 2;
    const x = await Tensor.randn([rows, 256], { seed: 6 });
    let turns = 0;
    let running = true;
    const turn = () => {
      turns++;
      if (running) setImmediate(turn);
    };
    const forward = chain.forward(x);
    setImmediate(turn);
    await forward;
    running = false;
    expect(turns).toBeGreaterThanOrEqual(20);
  });

  test('8 concurrent forwards give the same results as 8 sequential ones', async () => {
    const unet = await loadModule(weights('conv_unet.pt'));
    const inputs = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => [
        await Tensor.randn([1, 4, 16, 16], { seed: 100 + i }),
        Tensor.fromArray([i * 100], [1], { dtype: 'int64' }),
        await Tensor.randn([1, 77, 32], { seed: 200 + i }),
      ]),
    );
    const sequential: Float32Array[] = [];
    for (const args of inputs) sequential.push((await ((await unet.forward(...args)) as Tensor).toArray()) as Float32Array);
    const concurrent = await Promise.all(inputs.map(async (args) => ((await unet.forward(...args)) as Tensor).toArray()));
    concurrent.forEach((result, i) => expect(maxAbsDifference(result as Float32Array, sequential[i])).toBe(0));
    expect(maxAbsDifference(sequential[0], sequential[1])).toBeGreaterThan(0);
  });

  test('calls on one device settle in the order they were made', async () => {
    const order: number[] = [];
    const x = await Tensor.randn([64, 64], { seed: 1 });
    await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? x.norm() : x.mean()).then(() => order.push(i))));
    expect(order).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });

  test('disposing inputs and the module while a forward is in flight is safe and loses nothing', async () => {
    const unet = await loadModule(weights('conv_unet.pt'));
    const args = [
      await Tensor.randn([2, 4, 16, 16], { seed: 9 }),
      Tensor.fromArray([3, 4], [2], { dtype: 'int64' }),
      await Tensor.randn([2, 77, 32], { seed: 10 }),
    ];
    const expected = await ((await unet.forward(...args)) as Tensor).toArray();
    const inFlight = unet.forward(...args);
    args.forEach((t) => t.dispose());
    unet.dispose();
    const eps = (await inFlight) as Tensor;
    expect(maxAbsDifference(await eps.toArray(), expected)).toBe(0);
    await expect(unet.forward(eps)).rejects.toThrow('has been disposed');
    const reading = eps.toArray();
    eps.dispose();
    expect(maxAbsDifference(await reading, expected)).toBe(0);
  });

  test('a model disposed while encodeImage, decode or invert runs rejects them with a clear error and leaves no tensor behind', async () => {
    const bundle = path.join(__dirname, '..', 'weights', 'test-sd1');
    const photo = path.join(__dirname, '..', 'weights', 'photos', 'coffee.png');
    const z0 = await Tensor.randn([1, 4, 32, 32], { seed: 0 });
    const before = await settledLiveTensors();
    // The dispose lands before the first forward of encodeImage and decode (tensors of their own already made), and
    // between invert's two prompt encodings (guidance): each must free what it made before it rejects.
    const calls: [string, (model: Awaited<ReturnType<typeof loadModel>>) => Promise<unknown>][] = [
      ['vae_encoder', (model) => model.encodeImage(photo)],
      ['vae_decoder', (model) => model.decode(z0)],
      ['text_encoder', (model) => invert(model, z0, { method: 'ddim', steps: 2, prompt: 'a cup', guidance: 2 })],
    ];
    for (const [module, call] of calls) {
      const model = await loadModel(bundle);
      const running = call(model);
      model.dispose();
      await expect(running).rejects.toThrow(new RegExp(`^easyinv: module '.*${module}\\.pt' has been disposed$`));
      // counted at once, before a collection could free a leaked handle; a late collection of older garbage only lowers it
      expect(liveTensors()).toBeLessThanOrEqual(before);
    }
    z0.dispose();
  });

  test('synchronize resolves after the work queued before it', async () => {
    const chain = await loadModule(weights('slow_chain.pt'));
    let forwardDone = false;
    const forward = chain.forward(await Tensor.randn([512, 256], { seed: 2 })).then(() => (forwardDone = true));
    await synchronize('cpu');
    expect(forwardDone).toBe(true);
    await forward;
  });
});

describe('worker threads', () => {
  const script = path.join(__dirname, 'fixtures', 'forward-worker.js');
  const run = (seed: number, onStarted?: (worker: Worker) => void) =>
    new Promise<number[]>((resolve, reject) => {
      const worker = new Worker(script, { workerData: { module: weights('conv_unet.pt'), seed, timestep: 250 } });
      worker.on('message', (message) => {
        if (message.started) onStarted?.(worker);
        else if (message.error) reject(new Error(message.error));
        else resolve(message.eps);
        if (!message.started) void worker.terminate();
      });
      worker.on('error', reject);
      worker.on('exit', () => reject(new Error('worker exited before it answered')));
    });

  async function mainThreadForward(seed: number) {
    const unet = await loadModule(weights('conv_unet.pt'));
    const eps = await unet.forward(
      await Tensor.randn([1, 4, 16, 16], { seed }),
      Tensor.fromArray([250], [1], { dtype: 'int64' }),
      await Tensor.randn([1, 77, 32], { seed: seed + 1 }),
    );
    return Array.from(await (eps as Tensor).toArray());
  }

  test('two workers load the addon at once and each runs a forward', async () => {
    const [first, second] = await Promise.all([run(21), run(31)]);
    expect(maxAbsDifference(first, await mainThreadForward(21))).toBe(0);
    expect(maxAbsDifference(second, await mainThreadForward(31))).toBe(0);
  });

  test('workers terminated at any moment (loading the addon, loading a module, mid-forward) never crash the process', async () => {
    for (let i = 0; i < 24; i++) {
      await new Promise((resolve) => {
        const worker = new Worker(script, { workerData: { module: weights('conv_unet.pt'), seed: i, timestep: 5 } });
        worker.on('message', (message) => message.started && setTimeout(() => void worker.terminate(), i % 4));
        worker.on('exit', resolve);
        worker.on('error', resolve);
        setTimeout(() => void worker.terminate(), (i * 7) % 40);
      });
    }
    expect(await mainThreadForward(3)).toHaveLength(4 * 16 * 16);
  });

  test('terminating a worker while its forward is in flight leaves the process healthy', async () => {
    const outcome = run(41, (worker) => void worker.terminate()).catch((error: Error) => error.message);
    expect(await outcome).toMatch(/exited before it answered/);
    expect(await mainThreadForward(41)).toHaveLength(4 * 16 * 16);
  });
});
