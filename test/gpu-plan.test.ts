// bench:gpu's order and budget (bench/gpu/plan.js): what runs, what is skipped and why, on a clock the test drives.
const { gpuPlan, runPlan } = require('../bench/gpu/plan.js');

type Item = { model: { family: string; dtype: string; latent: number; trace: number; load: number; repeats: number }; variant: { name: string }; methods: string[]; batches: number[] };

const model = (family: string, trace: number, load: number) => ({ family, dtype: 'float16', latent: 8, trace, load, repeats: 1 });
const item = (m: Item['model'], name: string): Item => ({ model: m, variant: { name }, methods: ['ddim'], batches: [1] });

describe('bench:gpu plan', () => {
  test('items run in order while their start-up cost fits; a model is traced once; a failure does not stop the rest', async () => {
    let now = 0;
    const small = model('sd1', 30, 10);
    const large = model('sdxl', 100, 50);
    const items = [item(small, 'eager'), item(small, 'graphs'), item(large, 'eager'), item(small, 'batches'), item(small, 'last')];
    const ran: string[] = [];
    const records = await runPlan(items, {
      budgetSeconds: 120, elapsed: () => now,
      run: async (entry: Item, budget: { left: () => number; spent: () => boolean }) => {
        ran.push(`${entry.model.family} ${entry.variant.name} with ${budget.left()} s left`);
        now += entry.variant.name === 'eager' ? 40 : 20; // the first item traces, loads and measures
        if (entry.variant.name === 'graphs') throw new Error('capture failed');
        return { rows: [entry.variant.name], spentAfter: budget.spent() };
      },
    });
    // sd1 eager: 40 needed (trace + load) of 120; sd1 graphs: 10 of 80; sdxl: 150 of 60, skipped; then 10 of 60, 10 of 40.
    expect(ran).toEqual(['sd1 eager with 120 s left', 'sd1 graphs with 80 s left', 'sd1 batches with 60 s left', 'sd1 last with 40 s left']);
    expect(records.map((r: { variant: string; error?: string; skipped?: string; rows?: string[] }) => [r.variant, r.error ?? r.skipped ?? r.rows])).toEqual([
      ['eager', ['eager']],
      ['graphs', 'capture failed'],
      ['eager', 'it needs about 150 s before its first figure; 60 s of the 120 s budget were left'],
      ['batches', ['batches']],
      ['last', ['last']],
    ]);
    expect(records[4].spentAfter).toBe(false);
  });

  test('once the budget is spent, run() is told so and nothing more starts', async () => {
    let now = 0;
    const m = model('sd1', 0, 1);
    const seen: boolean[] = [];
    const records = await runPlan([item(m, 'a'), item(m, 'b'), item(m, 'c')], {
      budgetSeconds: 10, elapsed: () => now,
      run: async (_: Item, budget: { spent: () => boolean }) => {
        now += 8;
        seen.push(budget.spent());
        return { rows: [] };
      },
    });
    expect(seen).toEqual([false, true]);
    expect(records[2].skipped).toMatch(/needs about 1 s .* 0 s of the 10 s budget were left/);
  });

  test('on the GPU, SD-V1-4 float16 eager and graphed come first with Python, then SDXL float16, compiled, float32', () => {
    const { device, items } = gpuPlan(false);
    expect(device).toBe('cuda');
    const head = items.slice(0, 8).map((i: Item & { python: boolean; model: { format?: string } }) =>
      `${i.model.family}${i.model.format ? ` ${i.model.format}` : ''} ${i.model.dtype} ${i.variant.name}${i.python ? ' + Python' : ''}`);
    expect(head).toEqual([
      'sd1 float16 eager + Python', 'sd1 float16 CUDA graphs, cuDNN benchmark + Python',
      'sdxl float16 eager + Python', 'sdxl float16 CUDA graphs, cuDNN benchmark + Python',
      'sd1 pt2 float16 eager + Python', 'sd1 pt2 float16 CUDA graphs, cuDNN benchmark + Python',
      'sd1 float32 eager + Python', 'sd1 float32 CUDA graphs, cuDNN benchmark, TF32 + Python',
    ]);
    expect(gpuPlan(true).device).toBe('cpu');
  });
});
