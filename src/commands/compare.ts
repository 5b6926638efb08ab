import { compare, mergeRuns } from '../compare/compare';
import { summaryMarkdown } from '../compare/summary';
import { methodNames, type MethodName } from '../inversion';
import { dtypes, etaLine, inversionFlags, list, models, number, report, required, UsageError, type Flags } from './common';

function shard(flags: Flags): { index: number; count: number } | undefined {
  if (flags.shard === undefined) return undefined;
  const match = /^(\d+)\/(\d+)$/.exec(flags.shard);
  const [index, count] = match ? [Number(match[1]), Number(match[2])] : [NaN, NaN];
  if (!(count >= 1 && index >= 0 && index < count)) throw new UsageError(`--shard must be K/N with 0 <= K < N, not ${JSON.stringify(flags.shard)}`);
  return { index, count };
}

/** `easyinv compare`: every method on every image of a folder; results.jsonl, summaries, grids, report. */
export async function compareCommand(flags: Flags, signal?: AbortSignal): Promise<void> {
  const out = required(flags, 'out');
  const summary = await compare({
    models: models(flags),
    images: required(flags, 'images'),
    out,
    methods: list<MethodName>(flags, 'methods', methodNames, ['ddim', 'easyinv', 'renoise', 'fixed-point']),
    dtypes: dtypes(flags),
    device: flags.device,
    steps: number(flags, 'steps'),
    prompt: flags.prompt,
    guidance: number(flags, 'guidance'),
    stepsOffset: number(flags, 'steps-offset'),
    timesteps: inversionFlags(flags).timesteps,
    sizeCondition: number(flags, 'size-condition'),
    notebookSettings: flags['notebook-settings'],
    methodOptions: inversionFlags(flags).methodOptions,
    limit: number(flags, 'limit'),
    shard: shard(flags),
    resume: flags.resume,
    lpipsNetwork: flags.lpips,
    onItem: etaLine(flags),
    signal,
  });
  report(flags, summary, `${summaryMarkdown(summary)}\nwrote ${out}/results.jsonl, summary.md, summary.json, grids/, report.html`);
}

/** `easyinv merge`: joins the results of several runs (shards) into one summary. */
export async function mergeCommand(flags: Flags, runs: string[]): Promise<void> {
  const out = required(flags, 'out');
  const summary = mergeRuns(out, runs);
  report(flags, summary, `${summaryMarkdown(summary)}\nmerged ${runs.length} runs into ${out}`);
}
