// Preloaded into the CLI by the durability tests and scripts/stress-resume.js (node --require): with
// EASYINV_WRITE_FAULT='{"at":17,"code":"ENOSPC","report":"FILE"}' the 17th write operation of src/files.ts (open,
// write, fsync, rename, truncate, mkdir) fails with ENOSPC; without "at" none does. At exit, FILE gets the number of
// operations made and the one that failed: {"operations":42,"failed":{"operation":"write","file":"..."}}.
'use strict';
const fs = require('fs');
const path = require('path');

const { writeFaults } = require(path.join(__dirname, '..', 'dist', 'files'));

const { at, code, report } = JSON.parse(process.env.EASYINV_WRITE_FAULT ?? '{}');
writeFaults.failAt = at;
writeFaults.code = code;
if (report) {
  process.on('exit', () => fs.writeFileSync(report, JSON.stringify({ operations: writeFaults.operations, failed: writeFaults.failed ?? null })));
}
