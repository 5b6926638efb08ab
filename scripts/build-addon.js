#!/usr/bin/env node
// Builds the native addon with cmake-js against the first LibTorch found:
//   1. LIBTORCH=/path/to/libtorch            an unpacked LibTorch (CPU or CUDA)
//   2. LIBTORCH_USE_PYTORCH=1                the LibTorch inside the torch package of python3 (or of $PYTHON)
//   3. nothing set                           the same, when python3's torch is 2.0 or newer (LIBTORCH_USE_PYTORCH=0
//                                            skips it)
//   4. the system's CMake package            Debian/Ubuntu libtorch-dev (CPU); installed here when missing, as root
//                                            with apt, unless EASYINV_NO_APT=1
// For a CUDA LibTorch it also finds the CUDA toolkit (nvcc) and, for pip's PyTorch, the nvidia-* wheels' headers and
// libraries. The build folder starts clean whenever the LibTorch or these settings change.
'use strict';
const { execFileSync, spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const { aptInstall } = require('./apt');

const root = path.resolve(__dirname, '..');
const buildDir = path.join(root, 'build');
const stampFile = path.join(buildDir, 'easyinv-libtorch.json');
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
  2. LIBTORCH_USE_PYTORCH=1 npm install            the LibTorch inside python3's torch (pip install torch), CUDA included;
                                                   PYTHON=/path/to/python picks another interpreter
  3. apt-get install libtorch-dev                  Debian/Ubuntu's CPU LibTorch, found by CMake
With nothing set, python3's torch is used when it is 2.0 or newer (LIBTORCH_USE_PYTORCH=0 skips it).
Then rebuild with: npm rebuild easyinv (or npm run build:native in a clone).`;

class BuildError extends Error {}

function fail(message) {
  console.error(`\neasyinv: cannot build the native addon: ${message}\n\n${ways}\n`);
  process.exit(1);
}

const log = (message) => console.log(`easyinv: ${message}`);

/** The version in a LibTorch's TorchConfigVersion.cmake, or undefined. */
function configVersion(configDir) {
  try {
    const text = fs.readFileSync(path.join(configDir, 'TorchConfigVersion.cmake'), 'utf8');
    return /set\(PACKAGE_VERSION "([^"]+)"\)/.exec(text)?.[1];
  } catch {
    return undefined;
  }
}

function fromLibtorchVariable() {
  const dir = path.resolve(process.env.LIBTORCH);
  const config = path.join(dir, 'share', 'cmake', 'Torch');
  if (!fs.existsSync(path.join(config, 'TorchConfig.cmake'))) {
    throw new BuildError(`LIBTORCH=${process.env.LIBTORCH} has no share/cmake/Torch/TorchConfig.cmake; point it at an unpacked LibTorch`);
  }
  return { how: `LIBTORCH=${dir}`, prefix: dir, version: configVersion(config), libDir: path.join(dir, 'lib'), nvidia: [] };
}

// Where pip's nvidia-* wheels live (site-packages/nvidia/<name>/{include,lib}), beside the torch package.
const probeScript = `
import glob, json, os, torch
site = os.path.dirname(os.path.dirname(torch.__file__))
print(json.dumps({"version": torch.__version__, "prefix": os.path.dirname(torch.__file__),
                  "abi": int(torch._C._GLIBCXX_USE_CXX11_ABI), "cuda": torch.version.cuda,
                  "nvidia": sorted(glob.glob(os.path.join(site, "nvidia", "*")))}))`;

function fromPyTorch() {
  const python = process.env.PYTHON || 'python3';
  let found;
  try {
    found = JSON.parse(execFileSync(python, ['-c', probeScript], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
  } catch (error) {
    const said = String(error.stderr || error.message).trim().split('\n').pop();
    throw new BuildError(`LIBTORCH_USE_PYTORCH=1 but \`${python} -c "import torch"\` failed (${said})`);
  }
  const cuda = found.cuda ? `CUDA ${found.cuda}` : 'CPU only';
  return {
    how: `PyTorch ${found.version} (${cuda}) of ${python}`,
    prefix: found.prefix, // the package folder itself: TorchConfig then finds its libraries before any system ones
    version: found.version,
    abi: found.abi,
    libDir: path.join(found.prefix, 'lib'),
    nvidia: found.nvidia,
  };
}

function fromSystem() {
  const config = systemConfigDirs.find((dir) => fs.existsSync(path.join(dir, 'TorchConfig.cmake')));
  if (!config) return undefined;
  const prefix = path.resolve(config, '..', '..', '..');
  const libDir = [path.resolve(config, '..', '..'), path.join(prefix, 'lib')]
    .find((dir) => fs.existsSync(path.join(dir, 'libtorch.so'))) ?? prefix;
  return { how: `system package (${config})`, prefix, version: configVersion(config), libDir, nvidia: [] };
}

const installSystemPackage = () => aptInstall('libtorch-dev', 'no LibTorch found', log);

const isCudaBuild = (torch) => fs.existsSync(path.join(torch.libDir, 'libtorch_cuda.so'));

/** The CUDA toolkit folder (with bin/nvcc): CUDA_HOME, CUDA_PATH, /usr/local/cuda, then the nvcc on PATH. */
function cudaToolkit() {
  const candidates = [process.env.CUDA_HOME, process.env.CUDA_PATH, '/usr/local/cuda'];
  const nvcc = spawnSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' }).stdout?.trim();
  if (nvcc) candidates.push(path.dirname(path.dirname(fs.realpathSync(nvcc))));
  return candidates.find((dir) => dir && fs.existsSync(path.join(dir, 'bin', 'nvcc')) &&
    fs.existsSync(path.join(dir, 'include', 'cuda_runtime.h')));
}

const findFile = (dirs, pattern) => {
  for (const dir of dirs) {
    const name = fs.existsSync(dir) ? fs.readdirSync(dir).sort().find((file) => pattern.test(file)) : undefined;
    if (name) return path.join(dir, name);
  }
  return undefined;
};

/** The CMake settings a CUDA LibTorch needs beyond its prefix. */
function cudaDefines(torch) {
  const toolkit = cudaToolkit();
  if (!toolkit) {
    throw new BuildError(`${torch.how} is a CUDA build, and building against it needs the CUDA toolkit (nvcc and its ` +
      'headers); none was found in CUDA_HOME, CUDA_PATH, /usr/local/cuda or on PATH. Install the toolkit of the same ' +
      'CUDA major version and set CUDA_HOME, or build against a CPU LibTorch');
  }
  const wheelLibs = torch.nvidia.map((dir) => path.join(dir, 'lib')).filter((dir) => fs.existsSync(dir));
  const wheelIncludes = torch.nvidia.map((dir) => path.join(dir, 'include')).filter((dir) => fs.existsSync(dir));
  const nvrtc = findFile([...wheelLibs, path.join(toolkit, 'lib64'), path.join(toolkit, 'lib')], /^libnvrtc\.so(\.\d+)*$/);
  if (!nvrtc) {
    throw new BuildError(`no libnvrtc.so in ${toolkit}/lib64 nor in the nvidia wheels beside torch: install the ` +
      'CUDA toolkit\'s NVRTC (or pip install the nvidia-cuda-nvrtc wheel that torch names)');
  }
  log(`CUDA toolkit ${toolkit}; NVRTC ${nvrtc}` +
    (wheelIncludes.length ? `; nvidia wheels ${torch.nvidia.map((dir) => path.basename(dir)).join(', ')}` : ''));
  return {
    CUDA_TOOLKIT_ROOT_DIR: toolkit,
    CUDA_nvrtc_LIBRARY: nvrtc,
    EASYINV_CUDA_INCLUDE_DIRS: wheelIncludes.join(';'),
    EASYINV_CUDA_LIBRARY_DIRS: wheelLibs.join(';'),
  };
}

function withDefines(torch) {
  const defines = { CMAKE_PREFIX_PATH: torch.prefix };
  if (torch.abi !== undefined) defines.EASYINV_CXX11_ABI = String(torch.abi);
  if (isCudaBuild(torch)) Object.assign(defines, cudaDefines(torch));
  return { ...torch, defines };
}

/** The LibTorch to build against, with its CMake settings. */
function findLibTorch() {
  if (process.env.LIBTORCH) return withDefines(fromLibtorchVariable());
  if (process.env.LIBTORCH_USE_PYTORCH === '1') return withDefines(fromPyTorch());
  if (process.env.LIBTORCH_USE_PYTORCH !== '0') {
    try {
      const torch = fromPyTorch();
      if (Number(torch.version.split('.')[0]) >= 2) {
        const chosen = withDefines(torch);
        log(`found ${torch.how}; building against its LibTorch (LIBTORCH_USE_PYTORCH=0 uses the system LibTorch instead)`);
        return chosen;
      }
    } catch (error) {
      if (!(error instanceof BuildError)) throw error;
      if (!/import torch/.test(error.message)) log(`not using python3's torch: ${error.message}`);
    }
  }
  let system = fromSystem();
  if (!system && installSystemPackage()) system = fromSystem();
  if (!system) {
    throw new BuildError('no LibTorch was found: LIBTORCH is not set, python3 has no torch 2.x, and no system ' +
      `TorchConfig.cmake exists (looked in ${systemConfigDirs.join(', ')})`);
  }
  return withDefines(system);
}

/** Empties the build folder when it was configured for another LibTorch: CMake caches the libraries it found. */
function cleanBuildFolderIfChanged(stamp) {
  let previous;
  try {
    previous = fs.readFileSync(stampFile, 'utf8');
  } catch {
    previous = undefined;
  }
  if (previous === stamp) return;
  if (fs.existsSync(buildDir)) {
    const was = previous ? JSON.parse(previous).how : 'an unrecorded LibTorch';
    log(`the build folder was configured for ${was}: starting it afresh`);
    fs.rmSync(buildDir, { recursive: true, force: true });
  }
}

let torch;
try {
  torch = findLibTorch();
} catch (error) {
  if (error instanceof BuildError) fail(error.message);
  throw error;
}
const stamp = JSON.stringify({ how: torch.how, version: torch.version, libDir: torch.libDir, defines: torch.defines });

/** The prebuilt addon of this platform (scripts/prebuild.js), when it links this very LibTorch. */
function matchingPrebuild() {
  // A clone always compiles its own sources.
  if (process.env.EASYINV_BUILD_FROM_SOURCE === '1' || fs.existsSync(path.join(root, '.git'))) return undefined;
  const folder = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  let tag;
  try {
    tag = JSON.parse(fs.readFileSync(path.join(folder, 'easyinv.json'), 'utf8'));
  } catch {
    return undefined;
  }
  const matches = tag.libtorch === torch.version && tag.libDir === torch.libDir && fs.existsSync(path.join(folder, 'easyinv.node'));
  if (!matches) log(`the prebuilt addon links LibTorch ${tag.libtorch} (${tag.libDir}), not this one: compiling`);
  return matches ? path.join(folder, 'easyinv.node') : undefined;
}

const prebuild = matchingPrebuild();
if (prebuild) {
  // Nothing in build/Release: the loader then takes the prebuild itself, guided by the stamp.
  fs.rmSync(buildDir, { recursive: true, force: true });
  fs.mkdirSync(buildDir, { recursive: true });
  fs.writeFileSync(stampFile, stamp);
  log(`using the prebuilt addon for LibTorch ${torch.version} from ${torch.how}: nothing to compile ` +
    '(EASYINV_BUILD_FROM_SOURCE=1 compiles anyway)');
  process.exit(0);
}
log(`building against LibTorch ${torch.version ?? '(version unknown)'} from ${torch.how}`);
cleanBuildFolderIfChanged(stamp);
const args = ['compile', ...Object.entries(torch.defines).map(([key, value]) => `--CD${key}=${value}`)];
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const env = { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: process.env.CMAKE_BUILD_PARALLEL_LEVEL || String(require('os').cpus().length) };
const result = spawnSync(process.execPath, [cmakeJs, ...args], { cwd: root, stdio: 'inherit', env });
if (result.status !== 0) fail(`cmake-js failed (exit ${result.status}); the compiler's messages are above`);
fs.writeFileSync(stampFile, stamp);

// An installed package (not a git checkout) keeps only the addon and the stamp: the intermediates, the precompiled
// header among them (about 400 MB), serve only the incremental rebuilds of a clone.
if (!fs.existsSync(path.join(root, '.git'))) {
  for (const entry of fs.readdirSync(buildDir)) {
    if (entry !== 'Release' && entry !== path.basename(stampFile)) fs.rmSync(path.join(buildDir, entry), { recursive: true, force: true });
  }
  const addonFile = path.join(buildDir, 'Release', 'easyinv.node');
  log(`built ${path.relative(root, addonFile)} (${(fs.statSync(addonFile).size / 2 ** 20).toFixed(1)} MiB); removed the build's intermediates`);
}
