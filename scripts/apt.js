'use strict';
// Installs a Debian package with apt-get when this process may (root, apt-get present, EASYINV_NO_APT not 1): the
// one way easyinv's install step (LibTorch) and its tests (Chromium) set up a fresh Debian machine by themselves.
const { spawnSync } = require('child_process');

function aptInstall(pkg, why, log = (message) => console.log(`easyinv: ${message}`)) {
  if (process.env.EASYINV_NO_APT === '1') return false;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const hasApt = spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status === 0;
  if (!isRoot || !hasApt) return false;
  log(`${why}; installing Debian's ${pkg} with apt-get (set EASYINV_NO_APT=1 to stop this)`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (args) => spawnSync('apt-get', args, { stdio: ['ignore', 'inherit', 'inherit'], env }).status === 0;
  return run(['install', '-y', '--no-install-recommends', pkg]) || (run(['update']) && run(['install', '-y', '--no-install-recommends', pkg]));
}

module.exports = { aptInstall };
