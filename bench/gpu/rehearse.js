#!/usr/bin/env node
// PYTHON=<python with a CPU torch> node bench/gpu/rehearse.js: the GPU machine's run, rehearsed on this machine (CI
// runs it). Makes the kit (bench/gpu/kit.js), adds up what the call would send (tracked and untracked-not-ignored
// files, plus what it carries) against what a call may send, copies exactly that into a new folder, and runs the
// call's command there as docs/gpu.md writes it: HOME empty (no compiler or download caches), npm, npx and node
// shadowed by failing stubs (only the carried Node.js can run), python3 the given PYTHON, on the CPU at the dry run's
// sizes, with the budget scaled to the CPU (EASYINV_REHEARSAL_BUDGET, default 1500 s). Fails when the command fails
// or the report it wrote has a failed check or item.
'use strict';
const { execFileSync, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.join(__dirname, '..', '..');
const sendLimit = 64 * 2 ** 20;
const sendMargin = 62 * 2 ** 20; // the test weights take most of it: 2 MiB for files added to the tree before a call
const budget = process.env.EASYINV_REHEARSAL_BUDGET || '1500';
const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** The device call that docs/gpu.md gives: { command, carry, timeout_s }. */
function deviceCall() {
  const doc = fs.readFileSync(path.join(root, 'docs', 'gpu.md'), 'utf8');
  const block = /```json device-call\n([\s\S]*?)```/.exec(doc);
  if (!block) throw new Error('docs/gpu.md has no ```json device-call block');
  const call = JSON.parse(block[1]);
  if (call.command.length > 2000) throw new Error(`the device command is ${call.command.length} characters; a call takes 2,000 at most`);
  return call;
}

/** Every file under `dir` (relative to root), links as links. */
function filesUnder(dir) {
  return fs.readdirSync(path.join(root, dir), { withFileTypes: true }).flatMap((entry) => {
    const relative = path.join(dir, entry.name);
    return entry.isDirectory() ? filesUnder(relative) : [relative];
  });
}

/** What the call sends: tracked and untracked-not-ignored files, and the carried paths. */
function travelling(carry) {
  const listed = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root })
    .toString().split('\0').filter((file) => file && fs.existsSync(path.join(root, file)));
  const tracked = new Set(execFileSync('git', ['ls-files', '-z'], { cwd: root }).toString().split('\0'));
  const carried = carry.flatMap((entry) => (fs.statSync(path.join(root, entry)).isDirectory() ? filesUnder(entry) : [entry]));
  const size = (files) => files.reduce((sum, file) => sum + fs.lstatSync(path.join(root, file)).size, 0);
  return {
    files: [...new Set([...listed, ...carried])],
    sizes: { tracked: size(listed.filter((f) => tracked.has(f))), untracked: size(listed.filter((f) => !tracked.has(f))), carried: size(carried) },
  };
}

function stubs(dir, python) {
  fs.mkdirSync(dir);
  for (const name of ['npm', 'npx', 'node', 'ccache']) {
    fs.writeFileSync(path.join(dir, name), `#!/bin/sh\necho "${name}: not on the GPU machine (only the carried Node.js is)" >&2\nexit 127\n`, { mode: 0o755 });
  }
  // A script, not a link: a virtual environment's python finds its packages from the path it is started by.
  fs.writeFileSync(path.join(dir, 'python3'), `#!/bin/sh\nexec ${JSON.stringify(python)} "$@"\n`, { mode: 0o755 });
}

function main() {
  const python = process.env.PYTHON;
  if (!python) throw new Error('rehearse.js needs PYTHON: a python with a CPU torch (the GPU machine\'s python3 has a CUDA one)');
  const call = deviceCall();
  execFileSync(process.execPath, [path.join(__dirname, 'kit.js')], { cwd: root, stdio: 'inherit' });

  const { files, sizes } = travelling(call.carry);
  const total = sizes.tracked + sizes.untracked + sizes.carried;
  console.log(`rehearsal: the call sends ${mib(total)} of ${mib(sendLimit)}: tracked ${mib(sizes.tracked)}, ` +
    `untracked ${mib(sizes.untracked)}, carried (${call.carry.join(', ')}) ${mib(sizes.carried)}`);
  if (total > sendMargin) throw new Error(`the call would send ${mib(total)}, over the ${mib(sendMargin)} this rehearsal allows`);

  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-rehearsal-'));
  try {
    const copy = path.join(scratch, 'repository');
    for (const file of files) {
      fs.mkdirSync(path.dirname(path.join(copy, file)), { recursive: true });
      fs.cpSync(path.join(root, file), path.join(copy, file), { verbatimSymlinks: true });
    }
    const out = path.join(scratch, 'out');
    const home = path.join(scratch, 'home');
    fs.mkdirSync(out);
    fs.mkdirSync(home);
    stubs(path.join(scratch, 'stubs'), path.resolve(python));
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) =>
      !/^(npm_|PYTHON$|LIBTORCH|TORCH_|EASYINV_BENCH_|OUT$)/.test(key)));
    Object.assign(env, {
      HOME: home, OUT: out, PATH: `${path.join(scratch, 'stubs')}:${process.env.PATH}`,
      EASYINV_BENCH_DRY_RUN: '1', EASYINV_BENCH_BUDGET: budget,
    });
    console.log(`rehearsal: running in ${copy}, budget ${budget} s:\n  ${call.command}`);
    const begin = Date.now();
    const result = spawnSync('bash', ['-c', call.command], { cwd: copy, env, stdio: 'inherit' });
    const seconds = (Date.now() - begin) / 1000;
    if (result.status !== 0) throw new Error(`the device command failed (exit ${result.status}) after ${seconds.toFixed(0)} s`);
    const report = JSON.parse(fs.readFileSync(path.join(out, 'bench-gpu.json'), 'utf8'));
    const failed = [
      ...report.checks.filter((c) => c.error).map((c) => `check ${c.bundle} ${c.dtype}: ${c.error}`),
      ...report.items.filter((i) => i.error || i.skipped || i.pythonError || i.graphCheckError || i.rows.length === 0)
        .map((i) => `${i.model} ${i.variant}: ${i.error ?? i.skipped ?? i.pythonError ?? i.graphCheckError ?? 'no rows'}`),
    ];
    const returned = fs.readdirSync(out);
    console.log(`rehearsal: the command took ${seconds.toFixed(0)} s (budget ${budget} s); ${report.checks.length} checks, ` +
      `${report.items.length} items; back under $OUT: ${returned.join(', ')}`);
    if (failed.length > 0) throw new Error(`the report has failures:\n  ${failed.join('\n  ')}`);
    for (const file of ['benchmarks.md', 'bench-gpu.json', 'bench-gpu.log']) {
      if (!returned.includes(file)) throw new Error(`the command left no ${file} under $OUT`);
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

try {
  main();
} catch (error) {
  console.error(`rehearsal: ${error.message}`);
  process.exit(1);
}
