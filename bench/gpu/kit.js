#!/usr/bin/env node
// node bench/gpu/kit.js: makes .gpu-kit/, what a machine with a GPU but without Node.js, npm or a registry needs to
// run bench/gpu.js from a copy of this repository: this Node.js (stripped of its debug information, xz-compressed),
// the compiled library (dist/) and the runtime packages the benchmark loads (not sharp: it reads no image), packed,
// and start.sh, which a command sources from the repository's root to unpack them. docs/gpu.md gives the command;
// bench/gpu/rehearse.js runs it here.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..', '..');
const kit = path.join(root, '.gpu-kit');
// Left behind: sharp (libvips is 19 MB) and what only it needs.
const unneeded = new Set(['sharp']);

const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
const run = (command, args, options = {}) => execFileSync(command, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], ...options });

function replaceWith(file, write) {
  const temporary = `${file}.tmp`;
  write(temporary);
  fs.renameSync(temporary, file);
}

/** The folders of the production packages, relative to the root, except `unneeded` and what only they need. */
function runtimePackages() {
  const tree = JSON.parse(run('npm', ['ls', '--omit=dev', '--all', '--json', '--long'], { maxBuffer: 64 * 2 ** 20 }).toString());
  const folders = new Set();
  const visit = (dependencies = {}) => {
    for (const [name, info] of Object.entries(dependencies)) {
      if (unneeded.has(name) || !info.path) continue;
      folders.add(info.path);
      visit(info.dependencies); // a package listed again as "deduped" lists no dependencies: the walk ends
    }
  };
  visit(tree.dependencies);
  return [...folders].map((folder) => path.relative(root, folder)).sort();
}

function nodeBinary() {
  const stamp = path.join(kit, 'node.version');
  const packed = path.join(kit, 'node.xz');
  if (fs.existsSync(packed) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === process.version) return;
  console.log(`kit: packing Node.js ${process.version} (a minute or two)`);
  const stripped = path.join(kit, 'node.stripped');
  run('strip', ['-o', stripped, process.execPath]);
  replaceWith(packed, (temporary) => run('sh', ['-c', 'xz -9 -T0 -c "$0" > "$1"', stripped, temporary]));
  fs.rmSync(stripped);
  fs.writeFileSync(stamp, process.version);
}

const startScript = `# Sourced from the repository's root on the GPU machine (bench/gpu/kit.js made this folder): unpacks Node.js, the
# compiled library and its runtime packages, and builds against the machine's PyTorch. The benchmark's budget
# counts from here.
export EASYINV_BENCH_STARTED=\${EASYINV_BENCH_STARTED:-$(date +%s)}
_kit=$(cd "$(dirname "\${BASH_SOURCE[0]}")" && pwd)
if [ ! -x "$_kit/bin/node" ]; then
  mkdir -p "$_kit/bin" && xz -dc "$_kit/node.xz" > "$_kit/bin/node.tmp" && chmod +x "$_kit/bin/node.tmp" &&
    mv "$_kit/bin/node.tmp" "$_kit/bin/node"
fi
tar -xJf "$_kit/library.tar.xz"
export PATH="$_kit/bin:$PATH" LIBTORCH_USE_PYTORCH=1
echo "gpu kit: Node.js $(node --version), $(python3 -c 'import torch; print("PyTorch", torch.__version__)' 2>&1 | tail -1)"
`;

function main() {
  fs.mkdirSync(kit, { recursive: true });
  fs.rmSync(path.join(kit, 'bin'), { recursive: true, force: true }); // an unpacked Node.js (86 MB) must not travel
  console.log('kit: compiling the library');
  run('npm', ['run', '--silent', 'build']);
  nodeBinary();
  const packages = runtimePackages();
  replaceWith(path.join(kit, 'library.tar.xz'), (temporary) => run('tar', ['-cJf', temporary, '--exclude=*.map', '--exclude=*.md',
    '--exclude=*.d.ts', '--exclude=*.d.mts', '--exclude=*.d.cts', 'dist', ...packages]));
  fs.writeFileSync(path.join(kit, 'start.sh'), startScript);
  const size = fs.readdirSync(kit).reduce((sum, file) => sum + fs.statSync(path.join(kit, file)).size, 0);
  console.log(`kit: .gpu-kit is ${mib(size)}: Node.js ${mib(fs.statSync(path.join(kit, 'node.xz')).size)}, the library and ` +
    `${packages.length} packages ${mib(fs.statSync(path.join(kit, 'library.tar.xz')).size)}`);
}

main();
