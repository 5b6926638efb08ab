#!/usr/bin/env node
// easyinv's command line: the usage and the dispatch to each command (src/commands/).
import * as fs from 'fs';
import * as path from 'path';
import { parseArgs } from 'util';

import { benchCommand } from './commands/bench';
import { flagSpec, UsageError, type Flags } from './commands/common';
import { compareCommand, mergeCommand } from './commands/compare';
import { demoCommand } from './commands/demo';
import { invertCommand } from './commands/invert';
import { reconstructCommand } from './commands/reconstruct';
import { methodNames } from './inversion';

const root = path.join(__dirname, '..');

const usage = `easyinv: invert real images into diffusion noise

  easyinv demo        [--model DIR] [--image FILE] [--steps 50] [--out DIR]
      every method on the bundled small model and photo: a table of PSNR, SSIM and time, and a side-by-side PNG
  easyinv invert      --model DIR --image FILE --out NOISE.safetensors [--method easyinv] [method options]
      an image to its noise z_T, saved with its settings
  easyinv reconstruct --model DIR --latent NOISE.safetensors --out IMAGE.png
      DDIM sampling from saved noise back to an image, with the settings saved beside it
  easyinv compare     --model DIR[,DIR] --images DIR --out DIR [--methods ddim,easyinv,renoise,fixed-point]
                      [--dtype float16,float32] [--limit N] [--resume] [--shard K/N] [--lpips NET.pt]
      every method on every image: results.jsonl, summary.md/json (the paper's Tables 1 and 2), grids/, report.html
  easyinv merge       --out DIR RUN_DIR...
      joins the results of several runs (shards) into one summary
  easyinv bench       --model DIR[,DIR] [--dtype float32] [--methods ...] [--steps 50] [--repeats 5] [--batches 1,4,16]
      seconds per inversion, UNet calls, peak memory, images per second, against the bare UNet and a PyTorch loop

Options: --device cpu|cuda[:i]  --steps N  --prompt TEXT  --negative-prompt TEXT  --guidance W  --device cpu|cuda[:i]
         --dtype float32|float16  --fit fill|cover  --json (machine-readable output, no progress bars)
Method options: --method ${methodNames.join('|')}  --eta E  --window START,END (easyinv)
                --refinements K (fixed-point)  --iterations K  --seed S (renoise)`;

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: flagSpec, allowPositionals: true, strict: true });
  } catch (error) {
    console.error(`easyinv: ${(error as Error).message}\n\n${usage}`);
    return 2;
  }
  const { values: flags, positionals } = parsed;
  if (flags.version) {
    console.log(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version);
    return 0;
  }
  const command = positionals[0];
  const commands: Record<string, (flags: Flags) => Promise<void>> = {
    demo: demoCommand,
    invert: invertCommand,
    reconstruct: reconstructCommand,
    compare: compareCommand,
    merge: (values) => mergeCommand(values, positionals.slice(1)),
    bench: benchCommand,
  };
  if (flags.help || command === undefined) {
    console.log(usage);
    return command === undefined && !flags.help ? 2 : 0;
  }
  if (!commands[command]) {
    console.error(`easyinv: unknown command ${JSON.stringify(command)}\n\n${usage}`);
    return 2;
  }
  try {
    await commands[command](flags);
    return 0;
  } catch (error) {
    const message = (error as Error).message;
    console.error(message.startsWith('easyinv') ? message : `easyinv: ${message}`);
    return error instanceof UsageError ? 2 : 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
