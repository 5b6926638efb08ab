// Ctrl-C and SIGTERM in every long CLI command: the command stops at its next step, releases compare's lock, leaves
// no file written in part, exits 130 or 143 and says on one line how to go on; compare's --resume then completes.
// The CLI runs on a terminal (script(1) makes one) so that its progress shows, and Ctrl-C is typed into it.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.join(__dirname, '..');
const cli = path.join(root, 'dist', 'cli.js');
const weights = path.join(root, 'weights');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-signals-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));
const photo = path.join(weights, 'photos', 'chelsea.png');

const quote = (arg: string) => `'${arg.replaceAll("'", "'\\''")}'`;
/** Runs a line the CLI printed, `easyinv` being this build. */
const runPrinted = (line: string) => spawnSync('sh', ['-c', `easyinv() { ${quote(process.execPath)} ${quote(cli)} "$@"; }; ${line}`], { encoding: 'utf8' });

/** The CLI with its stderr on a terminal, its stdout in a file. */
function onTerminal(args: string[]) {
  const command = `echo pid=$$; exec ${[process.execPath, cli, ...args].map(quote).join(' ')} >${quote(path.join(scratch, 'stdout'))}`;
  const child = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'inherit'] });
  let output = '';
  const waiting: { pattern: RegExp; resolve: () => void }[] = [];
  child.stdout.on('data', (chunk) => {
    output += chunk;
    waiting.filter((w) => w.pattern.test(output)).forEach((w) => w.resolve());
  });
  const exit = new Promise<number | null>((resolve) => child.on('exit', resolve));
  const waitFor = (pattern: RegExp) => new Promise<void>((resolve) => {
    waiting.push({ pattern, resolve });
    if (pattern.test(output)) resolve();
  });
  return {
    waitFor,
    ctrlC: () => child.stdin.write('\x03'),
    kill: async (signal: NodeJS.Signals) => {
      await waitFor(/pid=\d+\r?\n/);
      process.kill(Number(/pid=(\d+)/.exec(output)![1]), signal);
    },
    /** The exit code and the last line the command wrote, without the progress bar it cleared. */
    ended: async () => ({ code: await exit, last: output.trimEnd().split(/\r?\n/).at(-1)!.split('\x1b[K').at(-1)! }),
  };
}

const hasScript = spawnSync('script', ['--version']).status === 0;

(hasScript ? describe : describe.skip)('signals', () => {
  const images = path.join(scratch, 'images');
  fs.mkdirSync(images);
  for (const name of ['astronaut.png', 'chelsea.png', 'coffee.png']) fs.copyFileSync(path.join(weights, 'photos', name), path.join(images, name));
  const compareArgs = (out: string) => ['compare', '--model', path.join(weights, 'test-sdxl'), '--images', images, '--steps', '4',
    '--methods', 'ddim,easyinv,fixed-point', '--out', out];
  const resultKeys = (out: string) => {
    const text = fs.readFileSync(path.join(out, 'results.jsonl'), 'utf8');
    expect(text.endsWith('\n')).toBe(true);
    return text.trim().split('\n').map((line) => ((l) => `${l.image}|${l.method}`)(JSON.parse(line)));
  };
  const temporaries = (folder: string) => fs.readdirSync(folder, { recursive: true }).map(String).filter((name) => name.endsWith('.tmp'));

  test('compare: Ctrl-C stops it after the item in progress, and the --resume command it prints completes the run', async () => {
    const out = path.join(scratch, 'compare');
    const run = onTerminal(compareArgs(out));
    await run.waitFor(/\r[1-8]\/9 /); // the progress line after an item
    run.ctrlC();
    const { code, last } = await run.ended();
    expect(code).toBe(130);
    expect(last).toBe(`easyinv: stopped by SIGINT; continue the run with: easyinv ${compareArgs(out).join(' ')} --resume`);
    expect(fs.existsSync(path.join(out, 'lock'))).toBe(false);
    expect(temporaries(out)).toEqual([]);
    const written = resultKeys(out);
    expect(written.length).toBeLessThan(9);
    expect(new Set(written).size).toBe(written.length);

    const resumed = runPrinted(last.split('continue the run with: ')[1]);
    expect(resumed.status).toBe(0);
    const keys = resultKeys(out);
    expect(keys).toHaveLength(9);
    expect(new Set(keys).size).toBe(9);
    expect(keys.slice(0, written.length)).toEqual(written);
    expect(fs.readdirSync(path.join(out, 'grids'))).toHaveLength(3);
    expect(fs.existsSync(path.join(out, 'lock'))).toBe(false);
  }, 120_000);

  test('compare: a second SIGTERM ends it at once, with no file written in part; --resume takes its lock over', async () => {
    const out = path.join(scratch, 'twice');
    const run = onTerminal(compareArgs(out));
    // both while it loads the model, which it does not interrupt: only the second one can end it this soon
    while (!fs.existsSync(path.join(out, 'lock'))) await new Promise((resolve) => setTimeout(resolve, 10));
    await run.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 100)); // two pending signals would be delivered as one
    await run.kill('SIGTERM');
    const { code, last } = await run.ended();
    expect(code).toBe(143); // script(1) reports the death by SIGTERM as a shell does
    expect(last).toMatch(/^easyinv: stopped by SIGTERM; continue the run with: easyinv compare .* --resume$/);
    expect(fs.existsSync(path.join(out, 'lock'))).toBe(true); // the first one would have released it
    expect(temporaries(out)).toEqual([]);
    expect(runPrinted(last.split('continue the run with: ')[1]).status).toBe(0);
    expect(new Set(resultKeys(out)).size).toBe(9);
    expect(fs.existsSync(path.join(out, 'lock'))).toBe(false);
  }, 120_000);

  test('invert: Ctrl-C mid-inversion writes nothing, and the command it prints to run again does the work', async () => {
    const noise = path.join(scratch, 'z.safetensors');
    const args = ['invert', '--model', path.join(weights, 'test-sd1'), '--image', photo, '--steps', '20', '--out', noise];
    const run = onTerminal(args);
    await run.waitFor(/ [1-9]\/20 /);
    run.ctrlC();
    const { code, last } = await run.ended();
    expect(code).toBe(130);
    expect(last).toBe(`easyinv: stopped by SIGINT; nothing was written; run it again: easyinv ${args.join(' ')}`);
    expect(fs.readdirSync(scratch).filter((name) => name.includes('z.safetensors'))).toEqual([]);
    expect(runPrinted(last.split('run it again: ')[1]).status).toBe(0);
    expect(fs.existsSync(noise)).toBe(true);
  }, 120_000);

  test('reconstruct and demo: SIGTERM mid-run writes nothing and exits 143', async () => {
    fs.mkdirSync(path.join(scratch, 'demo'));
    for (const args of [
      ['reconstruct', '--model', path.join(weights, 'test-sd1'), '--latent', path.join(scratch, 'z.safetensors'), '--steps', '20', '--out', path.join(scratch, 'back.png')],
      ['demo', '--steps', '20', '--out', path.join(scratch, 'demo')],
    ]) {
      const run = onTerminal(args);
      await run.waitFor(/ [1-9]\/20 /);
      await run.kill('SIGTERM');
      expect(await run.ended()).toEqual({ code: 143, last: `easyinv: stopped by SIGTERM; nothing was written; run it again: easyinv ${args.join(' ')}` });
    }
    expect(fs.existsSync(path.join(scratch, 'back.png'))).toBe(false);
    expect(fs.readdirSync(path.join(scratch, 'demo'))).toEqual([]);
  }, 120_000);

  test('edit: Ctrl-C mid-edit writes nothing and exits 130', async () => {
    const out = path.join(scratch, 'edit.png');
    const args = ['edit', '--model', path.join(weights, 'tiny-sd1-256'), '--image', photo, '--prompt', 'a clock', '--start-layer', '3',
      '--steps', '20', '--out', out];
    const run = onTerminal(args);
    await run.waitFor(/edit masactrl +[#.]+ [1-9]\/20 /);
    run.ctrlC();
    const again = args.map((arg) => (arg.includes(' ') ? quote(arg) : arg)).join(' ');
    expect(await run.ended()).toEqual({ code: 130, last: `easyinv: stopped by SIGINT; nothing was written; run it again: easyinv ${again}` });
    expect(fs.existsSync(out)).toBe(false);
  }, 120_000);

  test('bench: Ctrl-C stops it between its timed runs', async () => {
    // bench prints its rows at the end only: the Ctrl-C comes a while after its start
    const args = ['bench', '--model', path.join(weights, 'test-sdxl'), '--steps', '20', '--repeats', '50', '--batches', '1'];
    const run = onTerminal(args);
    await run.waitFor(/pid=\d+\r?\n/);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    run.ctrlC();
    expect(await run.ended()).toEqual({ code: 130, last: `easyinv: stopped by SIGINT; nothing was written; run it again: easyinv ${args.join(' ')}` });
  }, 120_000);
});
