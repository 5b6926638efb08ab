#!/usr/bin/env node
// Interrupt-and-resume stress of `easyinv compare`: runs interrupted at seeded random moments and resumed, again and
// again; the run that finally completes each episode must hold exactly one line per item, every grid, and the summary
// of an uninterrupted run. Three kinds of interruption:
//   kill    SIGKILL at a random time, or a random time after a random number of result lines
//   fault   the Nth write operation (src/files.ts, through scripts/write-faults.js) fails with ENOSPC, EACCES, EROFS
//           or EMFILE, N drawn over the operations of a whole run
//   signal  SIGINT or SIGTERM at such a moment, a quarter of the time followed by a second one
// A run stopped by a fault or a signal must have exited with its code (1; 130 or 143) and its line on stderr (the file
// and the cause; the exact --resume command), released its lock, and left no temporary file, no file written in part
// and no line cut short; one ended at once by a second signal may leave its lock, which the next run takes over. A
// line once written whole must be in the final results unchanged: counted as lost if not.
//
//   node scripts/stress-resume.js [--kills 20] [--faults 0] [--signals 0] [--seed 1] [--model weights/test-sdxl]
//   node scripts/stress-resume.js --minutes 5   (the three kinds in turn, for about that long)
// It prints one JSON line of counts; the exit code is 1 if any problem was found.
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { parseArgs } = require('util');

const root = path.join(__dirname, '..');
const { values: flags } = parseArgs({
  options: {
    kills: { type: 'string', default: '20' },
    faults: { type: 'string', default: '0' },
    signals: { type: 'string', default: '0' },
    minutes: { type: 'string' },
    seed: { type: 'string', default: '1' },
    model: { type: 'string', default: path.join(root, 'weights', 'test-sdxl') },
  },
});

function generator(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = generator(Number(flags.seed));
const pick = (items) => items[Math.floor(random() * items.length)];

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-stress-'));
const images = path.join(scratch, 'images');
fs.mkdirSync(images);
const photos = ['astronaut.png', 'chelsea.png', 'coffee.png'];
for (const photo of photos) fs.copyFileSync(path.join(root, 'weights', 'photos', photo), path.join(images, photo));
const methods = ['ddim', 'easyinv', 'fixed-point'];
const args = ['compare', '--model', flags.model, '--images', images, '--steps', '4', '--methods', methods.join(','), '--json'];
const causes = { ENOSPC: 'the disk is full', EACCES: 'permission denied', EROFS: 'the file system is read-only', EMFILE: 'too many open files' };
const exitCodes = { SIGINT: 130, SIGTERM: 143 };
const faultReport = path.join(scratch, 'fault.json');

/**
 * Runs compare on `out` (resuming when it exists) under the fault preload and delivers `stop` (an interruption
 * with a kind and a moment: `afterMs` after the start, or `delayMs` after the results reach `atLines` lines).
 */
function start(out, stop) {
  const resume = fs.existsSync(out);
  fs.rmSync(faultReport, { force: true });
  const fault = stop?.kind === 'fault' ? { at: stop.at, code: stop.code } : {};
  const child = spawn(process.execPath, ['--require', path.join(__dirname, 'write-faults.js'), path.join(root, 'dist', 'cli.js'),
    ...args, '--out', out, ...(resume ? ['--resume'] : [])],
  { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, EASYINV_WRITE_FAULT: JSON.stringify({ ...fault, report: faultReport }) } });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const timers = [];
  const deliver = () => {
    if (stop.kind === 'kill') return child.kill('SIGKILL');
    child.kill(stop.signal);
    if (stop.second) timers.push(setTimeout(() => child.kill(stop.second), stop.secondDelayMs));
  };
  if (stop?.afterMs !== undefined) timers.push(setTimeout(deliver, stop.afterMs));
  if (stop?.atLines !== undefined) {
    const poll = setInterval(() => {
      if (lines(out).whole.length >= stop.atLines) {
        clearInterval(poll);
        timers.push(setTimeout(deliver, stop.delayMs));
      }
    }, 5);
    timers.push(poll);
  }
  return new Promise((resolve) => child.on('exit', (code, signal) => {
    timers.forEach((timer) => clearTimeout(timer));
    const operations = fs.existsSync(faultReport) ? JSON.parse(fs.readFileSync(faultReport, 'utf8')) : null;
    resolve({ code, signal, stderr, resume, operations });
  }));
}

/** The whole lines of results.jsonl, and whether the last one is cut short (a SIGKILL mid-append). */
function lines(out) {
  const file = path.join(out, 'results.jsonl');
  if (!fs.existsSync(file)) return { whole: [], cut: false };
  const text = fs.readFileSync(file, 'utf8');
  const parsed = text.split('\n').filter(Boolean).flatMap((line) => {
    try {
      return [{ key: ((l) => `${l.image}|${l.method}|${l.dtype}`)(JSON.parse(line)), text: line }];
    } catch {
      return [];
    }
  });
  return { whole: parsed, cut: text !== '' && !text.endsWith('\n') };
}

/** What is wrong in `out`: temporary files, files cut short under their final names, a lock, a cut line. */
function leftovers(out, { temporaries = true, lock = true, cutLine = true } = {}) {
  const found = [];
  if (!fs.existsSync(out)) return found; // stopped before its first folder
  for (const name of fs.readdirSync(out, { recursive: true })) {
    const file = path.join(out, name);
    const base = path.basename(name);
    if (fs.statSync(file).isDirectory()) continue;
    if (/^\..*\.tmp$/.test(base)) {
      if (temporaries) found.push(`temporary file ${name}`);
      continue;
    }
    const bytes = fs.readFileSync(file);
    const whole = base.endsWith('.png') ? bytes.subarray(-8, -4).toString() === 'IEND'
      : base.endsWith('.json') ? ((text) => { try { return JSON.parse(text) !== undefined; } catch { return false; } })(bytes.toString())
        : base.endsWith('.html') ? bytes.toString().trimEnd().endsWith('</html>') : true;
    if (!whole) found.push(`${name} written in part`);
  }
  if (lock && fs.existsSync(path.join(out, 'lock'))) found.push('the lock left behind');
  if (cutLine && lines(out).cut) found.push('a result line cut short');
  return found;
}

const quality = (out) => {
  const s = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  return JSON.stringify({ images: s.images, rows: s.table2.map(({ method, dtype, steps, lpips, ssim, psnr, unetCalls }) => ({ method, dtype, steps, lpips, ssim, psnr, unetCalls })) });
};

async function main() {
  const reference = path.join(scratch, 'reference');
  const began = Date.now();
  const whole = await start(reference);
  if (whole.code !== 0) throw new Error(`the uninterrupted run failed: ${whole.stderr}`);
  const runMs = Date.now() - began;
  const operations = whole.operations.operations;
  const expected = photos.length * methods.length;

  const quota = { kill: Number(flags.kills), fault: Number(flags.faults), signal: Number(flags.signals) };
  const deadline = flags.minutes === undefined ? undefined : began + Number(flags.minutes) * 60_000;
  const tally = {
    episodes: 0, runs: 0, resumes: 0, kills: 0, killsByLines: 0, faults: 0, signals: 0, finishedFirst: 0,
    writesFailed: { ENOSPC: 0, EACCES: 0, EROFS: 0, EMFILE: 0 }, failedOperations: {},
    signalsSent: { SIGINT: 0, SIGTERM: 0, twice: 0, endedBySignal: 0 }, linesLost: 0, linesDoubled: 0, problems: [],
  };
  const done = { kill: () => tally.kills, fault: () => tally.faults, signal: () => tally.signals };
  const left = () => {
    if (!deadline) return Object.keys(quota).filter((kind) => done[kind]() < quota[kind]);
    // --minutes: the kinds that interrupted fewest runs so far, so that each gets its share
    const fewest = Math.min(...Object.values(done).map((count) => count()));
    return Object.keys(done).filter((kind) => done[kind]() === fewest);
  };
  // A signal by lines comes after the first line: before the CLI has set its handlers (its first second) the default
  // action ends it, which the moments by time still hit.
  const moment = (fewestLines) => (random() < 0.5 ? { afterMs: Math.floor(random() * runMs) }
    : { atLines: fewestLines + Math.floor(random() * (expected + 1 - fewestLines)), delayMs: Math.floor(random() * 40) });

  // Episodes: a fresh run interrupted 1-3 times and resumed until one run completes.
  while (deadline ? Date.now() < deadline : left().length > 0) {
    const where = `episode ${tally.episodes}`;
    const out = path.join(scratch, `episode-${tally.episodes++}`);
    const seen = new Map();
    let budget = 1 + Math.floor(random() * 3);
    for (;;) {
      const kinds = budget > 0 ? left() : [];
      const kind = kinds.length > 0 ? pick(kinds) : undefined;
      let stop;
      if (kind === 'kill') stop = { kind, ...moment(0) };
      if (kind === 'fault') stop = { kind, at: 1 + Math.floor(random() * operations), code: pick(Object.keys(causes)) };
      if (kind === 'signal') {
        stop = { kind, signal: pick(['SIGINT', 'SIGTERM']), ...moment(1) };
        if (random() < 0.25) Object.assign(stop, { second: pick(['SIGINT', 'SIGTERM']), secondDelayMs: Math.floor(random() * 300) });
      }
      const run = await start(out, stop);
      tally.runs++;
      if (run.resume) tally.resumes++;
      const now = lines(out).whole;
      for (const { key, text } of now) {
        if (seen.has(key) && seen.get(key) !== text) tally.problems.push(`${where}: the line of ${key} changed`);
        seen.set(key, text);
      }
      if (run.code === 0) {
        if (stop) tally.finishedFirst++;
        break;
      }
      const problem = (what) => tally.problems.push(`${where}, ${stop ? stop.kind : 'resume'}: ${what}`);
      if (!stop) {
        problem(`a resume failed (code ${run.code}, ${run.signal}): ${run.stderr}`);
        break;
      }
      budget--;
      if (kind === 'kill') {
        if (run.signal !== 'SIGKILL') problem(`the run failed (code ${run.code}): ${run.stderr}`);
        tally.kills++;
        if (stop.atLines !== undefined) tally.killsByLines++;
        leftovers(out, { temporaries: false, lock: false, cutLine: false }).forEach(problem);
        continue;
      }
      if (kind === 'fault') {
        const failed = run.operations?.failed;
        const named = failed && new RegExp(`^easyinv: cannot (write|create the folder) ${failed.file}: ${causes[stop.code]}`, 'm').test(run.stderr);
        if (run.code !== 1 || !named) problem(`expected exit 1 naming ${failed?.file} and ${causes[stop.code]}, got ${run.code}: ${run.stderr}`);
        tally.faults++;
        tally.writesFailed[stop.code]++;
        if (failed) tally.failedOperations[failed.operation] = (tally.failedOperations[failed.operation] ?? 0) + 1;
      }
      if (kind === 'signal') {
        tally.signals++;
        tally.signalsSent[stop.signal]++;
        if (stop.second) tally.signalsSent.twice++;
        const sent = [stop.signal, stop.second].filter(Boolean);
        const command = `easyinv ${args.join(' ')} --out ${out} --resume`;
        const last = run.stderr.trimEnd().split('\n').pop();
        if (sent.includes(run.signal) && run.code === null) {
          // a second signal, or one that came while the CLI was starting (before any write) or ending: ended by it
          tally.signalsSent.endedBySignal++;
          leftovers(out, { lock: false }).forEach(problem);
          continue;
        }
        if (!sent.some((s) => exitCodes[s] === run.code) || !last?.endsWith(`; continue the run with: ${command}`)) {
          problem(`expected exit ${sent.map((s) => exitCodes[s]).join(' or ')} and the resume command, got ${run.code} (${run.signal}): ${run.stderr}`);
        }
      }
      leftovers(out).forEach(problem);
    }
    const final = lines(out).whole;
    const finalText = new Map(final.map((l) => [l.key, l.text]));
    // lost: a line written whole and later changed, or an item without a line at the end
    tally.linesLost += [...seen].filter(([key, text]) => finalText.has(key) && finalText.get(key) !== text).length + expected - finalText.size;
    tally.linesDoubled += final.length - finalText.size;
    if (final.length !== expected || finalText.size !== expected) tally.problems.push(`${where}: ${final.length} lines for ${expected} items`);
    const grids = fs.existsSync(path.join(out, 'grids')) ? fs.readdirSync(path.join(out, 'grids')) : [];
    if (grids.length !== photos.length) tally.problems.push(`${where}: grids ${grids.join(', ')}`);
    if (!fs.existsSync(path.join(out, 'report.html'))) tally.problems.push(`${where}: no report.html`);
    else if (quality(out) !== quality(reference)) tally.problems.push(`${where}: summary ${quality(out)} differs from ${quality(reference)}`);
    leftovers(out).forEach((what) => tally.problems.push(`${where}, at the end: ${what}`));
    fs.rmSync(out, { recursive: true, force: true });
  }
  fs.rmSync(scratch, { recursive: true, force: true });
  console.log(JSON.stringify({ seed: Number(flags.seed), runMs, operations, minutes: Number(((Date.now() - began) / 60_000).toFixed(1)), ...tally }));
  process.exitCode = tally.problems.length ? 1 : 0;
}

main().catch((error) => {
  console.error(error.message);
  console.error(`kept for inspection: ${scratch}`);
  process.exitCode = 1;
});
