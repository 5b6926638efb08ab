#!/usr/bin/env node
// Kill-and-resume stress of `easyinv compare`: SIGKILL at seeded random moments, resume, again and again; the run
// that finally completes must hold exactly one line per item, every grid, and the summary of an uninterrupted run.
//
//   node scripts/stress-resume.js [--kills 20] [--seed 1] [--model weights/test-sdxl]
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { parseArgs } = require('util');

const root = path.join(__dirname, '..');
const { values: flags } = parseArgs({
  options: {
    kills: { type: 'string', default: '20' },
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

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-stress-'));
const images = path.join(scratch, 'images');
fs.mkdirSync(images);
const photos = ['astronaut.png', 'chelsea.png', 'coffee.png'];
for (const photo of photos) fs.copyFileSync(path.join(root, 'weights', 'photos', photo), path.join(images, photo));
const methods = ['ddim', 'easyinv', 'fixed-point'];
const args = ['compare', '--model', flags.model, '--images', images, '--steps', '4', '--methods', methods.join(','), '--json'];

/** Runs compare on `out`, killing it with SIGKILL `kill.afterMs` after its start, or `kill.delayMs` after its
 * results reach `kill.atLines` lines, unless it ends first. */
function start(out, kill) {
  const resume = fs.existsSync(out);
  const child = spawn(process.execPath, [path.join(root, 'dist', 'cli.js'), ...args, '--out', out, ...(resume ? ['--resume'] : [])],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const timers = [];
  if (kill?.afterMs !== undefined) timers.push(setTimeout(() => child.kill('SIGKILL'), kill.afterMs));
  if (kill?.atLines !== undefined) {
    const poll = setInterval(() => {
      if (lines(out).length >= kill.atLines) {
        clearInterval(poll);
        timers.push(setTimeout(() => child.kill('SIGKILL'), kill.delayMs));
      }
    }, 5);
    timers.push(poll);
  }
  return new Promise((resolve) => child.on('exit', (code, signal) => {
    timers.forEach((timer) => clearTimeout(timer));
    resolve({ code, signal, stderr });
  }));
}

const lines = (out) => {
  const file = path.join(out, 'results.jsonl');
  if (!fs.existsSync(file)) return [];
  // A kill during an append may leave a cut last line, which the next resume drops; the others must parse.
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).flatMap((line) => {
    try {
      return [JSON.parse(line)];
    } catch {
      return [];
    }
  });
};
const keys = (out) => lines(out).map((l) => `${l.image}|${l.method}|${l.dtype}`);
const quality = (out) => {
  const s = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  return JSON.stringify({ images: s.images, rows: s.table2.map(({ method, dtype, steps, lpips, ssim, psnr, unetCalls }) => ({ method, dtype, steps, lpips, ssim, psnr, unetCalls })) });
};

async function main() {
  const random = generator(Number(flags.seed));
  const reference = path.join(scratch, 'reference');
  const began = Date.now();
  const whole = await start(reference);
  if (whole.code !== 0) throw new Error(`the uninterrupted run failed: ${whole.stderr}`);
  const runMs = Date.now() - began;
  const expected = photos.length * methods.length;

  // Episodes: a fresh run killed and resumed until one run completes; the kills land at random times and at random
  // points of the results, so that every stage (start, inversions, appends, grids, summary, report) is hit.
  const tally = { episodes: 0, kills: 0, killsByLines: 0, problems: [] };
  while (tally.kills < Number(flags.kills)) {
    const out = path.join(scratch, `episode-${tally.episodes++}`);
    let budget = 1 + Math.floor(random() * 3);  // kills in this episode
    for (;;) {
      const kill = budget === 0 || tally.kills >= Number(flags.kills) ? undefined : random() < 0.5
        ? { afterMs: Math.floor(random() * runMs) }
        : { atLines: Math.floor(random() * (expected + 1)), delayMs: Math.floor(random() * 40) };
      const { code, signal, stderr } = await start(out, kill);
      const seen = keys(out);
      if (new Set(seen).size !== seen.length) throw new Error(`${out}: results.jsonl holds a line twice: ${seen.join(', ')}`);
      if (code === 0) break;
      if (signal !== 'SIGKILL') throw new Error(`${out}: a run failed (code ${code}): ${stderr}`);
      tally.kills++;
      budget--;
      if (kill.atLines !== undefined) tally.killsByLines++;
    }
    const final = keys(out);
    const where = `episode ${tally.episodes - 1}`;
    if (final.length !== expected || new Set(final).size !== expected) tally.problems.push(`${where}: ${final.length} lines for ${expected} items`);
    const grids = fs.existsSync(path.join(out, 'grids')) ? fs.readdirSync(path.join(out, 'grids')) : [];
    if (grids.length !== photos.length) tally.problems.push(`${where}: grids ${grids.join(', ')}`);
    if (!fs.existsSync(path.join(out, 'report.html'))) tally.problems.push(`${where}: no report.html`);
    if (quality(out) !== quality(reference)) tally.problems.push(`${where}: summary ${quality(out)} differs from ${quality(reference)}`);
  }
  fs.rmSync(scratch, { recursive: true, force: true });
  console.log(JSON.stringify({ seed: Number(flags.seed), runMs, ...tally }));
  process.exitCode = tally.problems.length ? 1 : 0;
}

main().catch((error) => {
  console.error(error.message);
  console.error(`kept for inspection: ${scratch}`);
  process.exitCode = 1;
});
