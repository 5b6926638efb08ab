import { execFile, execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { promisify } from 'util';

// The build script's LibTorch discovery fails early, and lists every way to give LibTorch, when none can be found.
const script = path.join(__dirname, '..', 'scripts', 'build-addon.js');
const build = (env: Record<string, string>) =>
  promisify(execFile)(process.execPath, [script], { env: { ...process.env, ...env } }).then(
    () => '',
    (error: { stderr: string }) => error.stderr,
  );

describe('LibTorch discovery', () => {
  test('a LIBTORCH folder without LibTorch in it', async () => {
    const message = await build({ LIBTORCH: '/nonexistent/libtorch' });
    expect(message).toMatch(/LIBTORCH=\/nonexistent\/libtorch has no share\/cmake\/Torch\/TorchConfig.cmake/);
    expect(message).toMatch(/LIBTORCH=\/path\/to\/libtorch npm install[\s\S]*LIBTORCH_USE_PYTORCH=1 npm install[\s\S]*apt-get install libtorch-dev/);
  });

  test('LIBTORCH_USE_PYTORCH=1 with a python3 that has no torch', async () => {
    const message = await build({ LIBTORCH_USE_PYTORCH: '1', PYTHON: '/nonexistent/python3' });
    expect(message).toMatch(/LIBTORCH_USE_PYTORCH=1 but `\/nonexistent\/python3 -c "import torch"` failed/);
    expect(message).toMatch(/LibTorch can be given in three ways/);
  });
});

describe('the built addon', () => {
  const build = path.join(__dirname, '..', 'build');
  const chosen = JSON.parse(fs.readFileSync(path.join(build, 'easyinv-libtorch.json'), 'utf8'));

  test('runs the LibTorch the build script chose: its lib first in RUNPATH, its libraries the ones loaded', async () => {
    const { capabilities } = await import('../src');
    const { libtorch } = await capabilities();
    expect(chosen.version).toMatch(new RegExp(`^${libtorch.replace(/\./g, '\\.')}`));
    const dynamic = execFileSync('readelf', ['-d', path.join(build, 'Release', 'easyinv.node')], { encoding: 'utf8' });
    const runpath = /\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.*)\]/.exec(dynamic)![1].split(':');
    expect(runpath[0]).toBe(chosen.libDir);
    const loaded = fs.readFileSync('/proc/self/maps', 'utf8').split('\n').map((line) => line.split(/\s+/)[5])
      .filter((file) => file && /\/libtorch_cpu\.so/.test(file));
    expect(loaded.length).toBeGreaterThan(0);
    for (const file of loaded) expect(path.dirname(fs.realpathSync(file))).toBe(fs.realpathSync(chosen.libDir));
  });
});
