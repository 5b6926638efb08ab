import { execFile } from 'child_process';
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
