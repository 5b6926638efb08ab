#!/usr/bin/env node
// Builds the native addon with cmake-js against the first LibTorch found:
//   1. LIBTORCH=/path/to/libtorch            an unpacked LibTorch (CPU or CUDA)
//   2. LIBTORCH_USE_PYTORCH=1                the LibTorch inside python3's torch package (how CUDA builds are made)
//   3. the system's CMake package            Debian/Ubuntu libtorch-dev (CPU); installed here when missing, as root
//                                            with apt, unless EASYINV_NO_APT=1
'use strict';
const { execFileSync, spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const systemConfigDirs = [
  '/usr/lib/x86_64-linux-gnu/cmake/Torch',
  '/usr/lib/aarch64-linux-gnu/cmake/Torch',
  '/usr/lib/cmake/Torch',
  '/usr/local/lib/cmake/Torch',
  '/usr/share/cmake/Torch',
  '/usr/local/share/cmake/Torch',
];

const ways = `LibTorch can be given in three ways:
  1. LIBTORCH=/path/to/libtorch npm install        an unpacked LibTorch from pytorch.org (CPU or CUDA)
  2. LIBTORCH_USE_PYTORCH=1 npm install            the LibTorch inside python3's torch (pip install torch), CUDA included
  3. apt-get install libtorch-dev                  Debian/Ubuntu's CPU LibTorch, found by CMake
Then rebuild with: npm rebuild easyinv (or npm run build:native in a clone).`;

function fail(message) {
  console.error(`\neasyinv: cannot build the native addon: ${message}\n\n${ways}\n`);
  process.exit(1);
}

function fromLibtorchVariable() {
  const dir = path.resolve(process.env.LIBTORCH);
  const config = path.join(dir, 'share', 'cmake', 'Torch');
  if (!fs.existsSync(path.join(config, 'TorchConfig.cmake'))) {
    fail(`LIBTORCH=${process.env.LIBTORCH} has no share/cmake/Torch/TorchConfig.cmake; point it at an unpacked LibTorch`);
  }
  return { how: `LIBTORCH=${dir}`, prefix: dir };
}

function fromPyTorch() {
  const python = process.env.PYTHON || 'python3';
  const probe = 'import torch, json; print(json.dumps({"prefix": torch.utils.cmake_prefix_path, ' +
    '"abi": int(torch._C._GLIBCXX_USE_CXX11_ABI), "version": torch.__version__, "cuda": torch.version.cuda}))';
  let found;
  try {
    found = JSON.parse(execFileSync(python, ['-c', probe], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
  } catch (error) {
    fail(`LIBTORCH_USE_PYTORCH=1 but \`${python} -c "import torch"\` failed (${String(error.stderr || error.message).trim().split('\n').pop()})`);
  }
  const cuda = found.cuda ? `CUDA ${found.cuda}` : 'CPU only';
  return { how: `PyTorch ${found.version} (${cuda}) of ${python}`, prefix: found.prefix, abi: found.abi };
}

function fromSystem() {
  return systemConfigDirs.find((dir) => fs.existsSync(path.join(dir, 'TorchConfig.cmake')));
}

function installSystemPackage() {
  if (process.env.EASYINV_NO_APT === '1') return false;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const hasApt = spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status === 0;
  if (!isRoot || !hasApt) return false;
  console.log('easyinv: no LibTorch found; installing Debian\'s libtorch-dev with apt-get (set EASYINV_NO_APT=1 to stop this)');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (args) => spawnSync('apt-get', args, { stdio: 'inherit', env }).status === 0;
  return run(['install', '-y', '--no-install-recommends', 'libtorch-dev']) ||
    (run(['update']) && run(['install', '-y', '--no-install-recommends', 'libtorch-dev']));
}

function findLibTorch() {
  if (process.env.LIBTORCH) return fromLibtorchVariable();
  if (process.env.LIBTORCH_USE_PYTORCH === '1') return fromPyTorch();
  let config = fromSystem();
  if (!config && installSystemPackage()) config = fromSystem();
  if (!config) {
    fail('no LibTorch was found: LIBTORCH is not set, LIBTORCH_USE_PYTORCH is not 1, and no system TorchConfig.cmake ' +
      `exists (looked in ${systemConfigDirs.join(', ')})`);
  }
  return { how: `system package (${config})`, prefix: path.resolve(config, '..', '..', '..') };
}

const torch = findLibTorch();
console.log(`easyinv: building against LibTorch from ${torch.how}`);
const args = ['compile', `--CDCMAKE_PREFIX_PATH=${torch.prefix}`];
if (torch.abi !== undefined) args.push(`--CDEASYINV_CXX11_ABI=${torch.abi}`);
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const env = { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: process.env.CMAKE_BUILD_PARALLEL_LEVEL || String(require('os').cpus().length) };
const result = spawnSync(process.execPath, [cmakeJs, ...args], { cwd: root, stdio: 'inherit', env });
if (result.status !== 0) fail(`cmake-js failed (exit ${result.status}); the compiler's messages are above`);
