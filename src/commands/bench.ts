import { bench, benchTable } from '../bench';
import { addon } from '../native';
import { methodNames, type MethodName } from '../inversion';
import { dtypes, list, loadingOptions, models, number, report, UsageError, type Flags } from './common';

/** `easyinv bench`: seconds per inversion, UNet calls, peak memory, images per second, against the bare UNet and Python. */
export async function benchCommand(flags: Flags, signal?: AbortSignal): Promise<void> {
  const batches = flags.batches === undefined ? [1, 4, 16] : flags.batches.split(',').map(Number);
  if (batches.some((b) => !Number.isInteger(b) || b < 1)) throw new UsageError('--batches takes positive integers, e.g. 1,4,16');
  const { rows, python, pythonError } = await bench({
    models: models(flags),
    dtypes: dtypes(flags),
    methods: list<MethodName>(flags, 'methods', methodNames, ['ddim', 'easyinv', 'renoise', 'fixed-point']),
    device: flags.device,
    steps: number(flags, 'steps'),
    repeats: number(flags, 'repeats'),
    guidance: number(flags, 'guidance'),
    modelOptions: loadingOptions(flags),
    batches,
    signal,
  }, flags.json || !process.stderr.isTTY ? undefined : (row) => process.stderr.write(`${row.method} ${row.dtype}: ${row.seconds.toFixed(4)} s\n`));
  const pythonLine = pythonError ? `failed: ${pythonError}` : python ?? 'skipped (no python3 with torch)';
  const { threads } = await addon.capabilities();
  report(flags, { threads, rows, python, pythonError }, `${benchTable(rows, batches)}\n\nCPU threads: ${threads}\nPython loop: ${pythonLine}`);
}
