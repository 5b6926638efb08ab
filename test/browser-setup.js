'use strict';
// Jest's global setup. The report's checks render it in Debian's Chromium: on a fresh machine it is installed here
// when it can be (root and apt, as the install step does for LibTorch); otherwise those checks are skipped with a
// loud line, unless EASYINV_REQUIRE_BROWSER=1 (CI) makes a missing browser an error.
const fs = require('fs');

const { aptInstall } = require('../scripts/apt');

const chromium = '/usr/bin/chromium';

module.exports = async () => {
  if (fs.existsSync(chromium)) return;
  if (aptInstall('chromium', 'the browser checks need Chromium') && fs.existsSync(chromium)) return;
  const fix = 'install it with `apt-get install -y --no-install-recommends chromium`';
  if (process.env.EASYINV_REQUIRE_BROWSER === '1') throw new Error(`easyinv: no browser at ${chromium}: ${fix}`);
  process.env.EASYINV_SKIP_BROWSER = '1'; // read by the test workers, which start after this
  console.warn(`\n*** easyinv: no browser at ${chromium}: the checks that render report.html are SKIPPED; ${fix} ***\n`);
};
