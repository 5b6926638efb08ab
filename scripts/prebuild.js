#!/usr/bin/env node
// Stores the current build as the prebuilt addon of this platform (prebuilds/<platform>-<arch>/, node-gyp-build's
// layout), tagged with the LibTorch it links: the install step uses it instead of compiling wherever it finds that
// same LibTorch (version and library folder). Runs before `npm pack` (prepack), so the tarball carries it.
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const built = path.join(root, 'build', 'Release', 'easyinv.node');
const stampFile = path.join(root, 'build', 'easyinv-libtorch.json');
const folder = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);

if (!fs.existsSync(built) || !fs.existsSync(stampFile)) {
  console.log('easyinv: no build to store as a prebuilt addon (npm run build:native first); the package will compile at install');
  process.exit(0);
}
const { how, version, libDir } = JSON.parse(fs.readFileSync(stampFile, 'utf8'));
fs.rmSync(folder, { recursive: true, force: true });
fs.mkdirSync(folder, { recursive: true });
fs.copyFileSync(built, path.join(folder, 'easyinv.node'));
fs.writeFileSync(path.join(folder, 'easyinv.json'), `${JSON.stringify({ libtorch: version, libDir, how, napi: 8 }, null, 2)}\n`);
console.log(`easyinv: stored the addon built against LibTorch ${version} (${libDir}) in ${path.relative(root, folder)}`);
