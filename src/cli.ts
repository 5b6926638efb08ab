#!/usr/bin/env node
// easyinv's command line: the usage and the dispatch to each command (src/commands/). Exit codes: 0 done; 2 a
// mistake in the command line or in a value it gave (nothing ran); 1 a failure while running (a file, a bundle);
// 130 and 143 stopped by SIGINT (Ctrl-C) and SIGTERM.
import * as fs from 'fs';
import * as path from 'path';
import { parseArgs } from 'util';

import { benchCommand } from './commands/bench';
import { flagSpec, messageOf, UsageError, type Flags } from './commands/common';
import { compareCommand, mergeCommand } from './commands/compare';
import { demoCommand } from './commands/demo';
import { editCommand } from './commands/edit';
import { invertCommand } from './commands/invert';
import { reconstructCommand } from './commands/reconstruct';
import { methodNames } from './inversion';

const root = path.join(__dirname, '..');

const commonOptions = `Options: --device cpu|cuda[:i]  --dtype float32|float16  --threads N (CPU threads; default: every CPU)  --steps N  --prompt TEXT  --negative-prompt TEXT
         --guidance W  --steps-offset K (instead of the bundle's)  --timesteps ddim|pndm (invert over PNDM's, as
         SD-1.4's checkpoint)  --size-condition PX (SDXL's size conditioning)  --fit fill|cover  --channels-last (UNet and VAE in NHWC order)
         --cuda-graphs (UNet steps replay CUDA graphs)  --tf32 (TF32 float32 math on CUDA)  --cudnn-benchmark
         --skip-file-check (load without checking the files' SHA-256s)  --json (machine-readable output)`;
const methodOptions = `Method options: --method ${methodNames.join('|')}  --eta E  --window START,END  --variant paper|notebook (easyinv)
                --refinements K (fixed-point)  --iterations K  --seed S (renoise)`;

const commands: Record<string, { usage: string; run: (flags: Flags, signal: AbortSignal, positionals: string[]) => Promise<void> }> = {
  demo: {
    usage: `easyinv demo [--model DIR] [--image FILE] [--steps 50] [--out DIR]
    every method on the bundled small model and photo: a table of PSNR, SSIM and time, and a side-by-side PNG`,
    run: (flags, signal) => demoCommand(flags, signal),
  },
  invert: {
    usage: `easyinv invert --model DIR --image FILE --out NOISE.safetensors [--method easyinv] [method options]
    an image to its noise z_T, saved with its settings`,
    run: (flags, signal) => invertCommand(flags, signal),
  },
  reconstruct: {
    usage: `easyinv reconstruct --model DIR --latent NOISE.safetensors --out IMAGE.png|.jpg|.webp
    DDIM sampling from saved noise back to an image, with the settings saved beside it`,
    run: (flags, signal) => reconstructCommand(flags, signal),
  },
  edit: {
    usage: `easyinv edit --model DIR --image FILE --prompt TEXT --out EDIT.png [--source-prompt TEXT] [--inversion easyinv]
             [--method masactrl|prompt] [--start-step N] [--start-layer N] [--inversions ddim,easyinv,...]
    the photo inverted, then edited toward the prompt with MasaCtrl's mutual self-attention (from step N, layer N;
    defaults per family) at --guidance (default 7.5); --inversions: each method's reconstruction and edit side by
    side in EDIT.png, with their times in EDIT.html`,
    run: (flags, signal) => editCommand(flags, signal),
  },
  compare: {
    usage: `easyinv compare --model DIR[,DIR] --images DIR --out DIR [--methods ddim,easyinv,renoise,fixed-point]
                [--dtype float16,float32] [--limit N] [--resume] [--shard K/N] [--lpips NET.pt] [--notebook-settings]
    every method on every image: results.jsonl, summary.md/json (the paper's Tables 1 and 2), grids/, report.html;
    --notebook-settings: the authors' notebooks' settings for the bundle's family (docs/paper-code.md)`,
    run: (flags, signal) => compareCommand(flags, signal),
  },
  merge: {
    usage: `easyinv merge --out DIR RUN_DIR...
    joins the results of several runs (shards) into one summary`,
    run: (flags, _, positionals) => mergeCommand(flags, positionals),
  },
  bench: {
    usage: `easyinv bench --model DIR[,DIR] [--dtype float32] [--methods ...] [--steps 50] [--repeats 5] [--batches 1,4,16]
              [--guidance W]
    seconds per inversion (median and spread of interleaved rounds), per UNet call, UNet calls, peak memory, images
    per second, against the bare UNet and the same loop in Python PyTorch`,
    run: (flags, signal) => benchCommand(flags, signal),
  },
};

const usage = ['easyinv: invert real images into diffusion noise', '',
  ...Object.values(commands).map((c) => `  ${c.usage.replace(/\n/g, '\n  ')}`), '', commonOptions, methodOptions].join('\n');
const commandUsage = (name: string) => [`${commands[name].usage}`, '', commonOptions, methodOptions].join('\n');

const signalCodes = { SIGINT: 130, SIGTERM: 143 };
type StopSignal = keyof typeof signalCodes;

/** The command line as a shell reads it back. */
const commandLine = (args: string[]) =>
  ['easyinv', ...args].map((arg) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`)).join(' ');

/** What a stopped command leaves to do: compare continues its run, the others write nothing until they finish. */
function stoppedLine(name: string, argv: string[], signal: StopSignal): string {
  const again = name === 'compare'
    ? `continue the run with: ${commandLine(argv.includes('--resume') ? argv : [...argv, '--resume'])}`
    : `nothing was written; run it again: ${commandLine(argv)}`;
  // a progress bar may be half drawn on the line
  return `${process.stderr.isTTY ? '\r\x1b[K' : ''}easyinv: stopped by ${signal}; ${again}`;
}

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
  const [name, ...rest] = positionals;
  if (name === undefined) {
    console[flags.help ? 'log' : 'error'](usage);
    return flags.help ? 0 : 2;
  }
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (!command) {
    console.error(`easyinv: unknown command ${JSON.stringify(name)}\n\n${usage}`);
    return 2;
  }
  if (flags.help) {
    console.log(commandUsage(name));
    return 0;
  }
  // The first SIGINT or SIGTERM stops the command at its next step through the library's AbortSignal: everything is
  // freed, compare's lock released, and no file is left written in part (files are written whole, between steps).
  // A second one ends the process at once by the signal itself: exit() would run LibTorch's destructors under a
  // forward still running on a device thread (a crash). A handler runs between writes, so the files stay whole;
  // compare's lock stays behind, and the next run takes it over as its process is gone.
  const controller = new AbortController();
  let stoppedBy: StopSignal | undefined;
  const stop = (signal: StopSignal) => {
    if (stoppedBy) {
      console.error(stoppedLine(name, argv, signal));
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      process.kill(process.pid, signal);
      return;
    }
    stoppedBy = signal;
    controller.abort(signal);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    await command.run(flags, controller.signal, rest);
    return 0;
  } catch (error) {
    if (stoppedBy && (error as Error).name === 'AbortError') {
      console.error(stoppedLine(name, argv, stoppedBy));
      return signalCodes[stoppedBy];
    }
    console.error(messageOf(error as Error, flags));
    // The library's TypeErrors and RangeErrors name an option or value the command line gave.
    const mistake = error instanceof UsageError || error instanceof TypeError || error instanceof RangeError;
    if (error instanceof UsageError) console.error(`\n${commandUsage(name)}`);
    return mistake ? 2 : 1;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
