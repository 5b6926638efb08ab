'use strict';
// The one place that loads the native addon. A failure says what probably went wrong and how to fix it.
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
let addon;

/**
 * What the build stamp says the addon links, when this process cannot read that LibTorch: it is gone, or out of this
 * user's reach. Loading the addon then would not fail cleanly: the dynamic linker would take another LibTorch on the
 * system's path (a distribution's), and the process would die of a missing symbol at its first call.
 */
function unreachableLibTorch() {
  let stamp;
  try {
    stamp = JSON.parse(fs.readFileSync(path.join(root, 'build', 'easyinv-libtorch.json'), 'utf8'));
  } catch {
    return undefined;
  }
  try {
    fs.accessSync(path.join(stamp.libDir, 'libtorch.so'), fs.constants.R_OK);
    return undefined;
  } catch (error) {
    const built = `The addon was built against LibTorch ${stamp.version} in ${stamp.libDir}`;
    if (error.code === 'ENOENT') {
      return `${built}, which is no longer there.\n` +
        '    Fix: reinstall that LibTorch, or rebuild against the one you have: npm rebuild easyinv.';
    }
    return `${built}, which this process may not read (${error.code}; user id ${process.getuid?.()}).\n` +
      '    Fix: run as a user who may read it, make it readable to all (chmod -R a+rX on its folders), or rebuild\n' +
      '    against a LibTorch every user of the program may read: npm rebuild easyinv.';
  }
}

function explain(error) {
  const message = String(error && error.message);
  const causes = [];
  if (/Could not locate the bindings file/.test(message)) {
    causes.push('The addon was never built: the install ran without dependency scripts (--ignore-scripts; pnpm 10 and bun\n' +
      '    skip them unless allowed), or its build failed (see the install log).\n' +
      '    Fix: npm rebuild easyinv (pnpm: pnpm approve-builds; bun: add easyinv to "trustedDependencies");\n' +
      '    in a clone: npm run build:native.');
  }
  if (/cannot open shared object file|Library not loaded|image not found/.test(message)) {
    causes.push('A LibTorch library the addon was linked against is gone (LibTorch moved, was upgraded or uninstalled).\n' +
      '    Fix: reinstall that LibTorch, or rebuild against the one you have: npm rebuild easyinv.');
  }
  if (/undefined symbol|NODE_MODULE_VERSION|invalid ELF header|wrong ELF class/.test(message)) {
    causes.push('The addon was built for another LibTorch, another C++ ABI, another platform or another runtime (Electron).\n' +
      '    Fix: npm rebuild easyinv; for Electron, rebuild with cmake-js --runtime=electron --runtime-version=<version>.');
  }
  const unreachable = unreachableLibTorch();
  if (unreachable) causes.unshift(unreachable);
  if (causes.length === 0) {
    causes.push('Unknown: rebuild with `npm rebuild easyinv` and read the build log; LibTorch is found through LIBTORCH,\n' +
      '    LIBTORCH_USE_PYTORCH=1 or the system package libtorch-dev.');
  }
  return new Error(`easyinv: the native addon could not be loaded.\n${message}\nLikely causes and fixes:\n` +
    causes.map((cause) => `  - ${cause}`).join('\n'), { cause: error });
}

// Electron packs an app's JavaScript into app.asar and its native files beside it, in app.asar.unpacked (asar
// cannot hold a shared library): there the addon is looked for in the unpacked twin of this package's folder.
const unpackedRoot = root.replace(/\.asar(?=[\\/]|$)/, '.asar.unpacked');

function loadAddon() {
  if (addon === undefined) {
    if (unreachableLibTorch()) throw explain(new Error('the LibTorch it was built against cannot be read'));
    const roots = unpackedRoot === root ? [root] : [unpackedRoot, root];
    let failure;
    for (const moduleRoot of roots) {
      try {
        addon = require('bindings')({ bindings: 'easyinv', module_root: moduleRoot });
        break;
      } catch (error) {
        failure ??= error;
      }
      // An install that took the prebuilt addon (its LibTorch matched) built nothing: load the prebuild itself.
      const prebuilt = path.join(moduleRoot, 'prebuilds', `${process.platform}-${process.arch}`, 'easyinv.node');
      if (fs.existsSync(path.join(moduleRoot, 'build', 'easyinv-libtorch.json')) && fs.existsSync(prebuilt)) {
        try {
          addon = require(prebuilt);
          break;
        } catch (error) {
          failure = error;
        }
      }
    }
    if (addon === undefined) throw explain(failure);
    // Explicit resource management: `using t = await ...` disposes t at the end of its block. (A second loader of
    // the same process, as a test runner's fresh module registry, finds it already there.)
    if (!Object.hasOwn(addon.Tensor.prototype, Symbol.dispose)) {
      Object.defineProperty(addon.Tensor.prototype, Symbol.dispose, {
        value() {
          this.dispose();
        },
      });
    }
  }
  return addon;
}

module.exports = { loadAddon, explain };
