// Files written whole are the old file or the new one, never a part; failures name the file and the cause.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { appendLineFlushed, writeFileWhole } from '../src/files';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-files-'));

// A 64 KiB file system, where root may mount one: the real ENOSPC, not a simulated one.
const small = path.join(scratch, 'small');
fs.mkdirSync(small);
const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', small]).status === 0;
afterAll(() => {
  if (mounted) spawnSync('umount', [small]);
  fs.rmSync(scratch, { recursive: true, force: true });
});

test('a file written whole replaces the old one and leaves no temporary file beside it', () => {
  const file = path.join(scratch, 'run.json');
  writeFileWhole(file, 'old');
  writeFileWhole(file, Buffer.from('new'));
  expect(fs.readFileSync(file, 'utf8')).toBe('new');
  expect(fs.readdirSync(scratch).filter((name) => name.includes('run.json'))).toEqual(['run.json']);
});

test('a write that cannot finish names the file and the cause, and leaves what was there', () => {
  const folder = path.join(scratch, 'report.html');
  fs.mkdirSync(folder); // a folder under the final name: the rename fails after the data was written
  expect(() => writeFileWhole(folder, '<html>')).toThrow(/^easyinv: cannot write .*report\.html: .*(EISDIR|directory)/);
  expect(fs.statSync(folder).isDirectory()).toBe(true);
  expect(fs.readdirSync(scratch).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  expect(() => appendLineFlushed(path.join(scratch, 'missing', 'results.jsonl'), '{}'))
    .toThrow(/^easyinv: cannot write .*missing\/results\.jsonl: .*ENOENT/);
});

(mounted ? test : test.skip)('on a full disk the old file stays whole, and the error says the disk is full', () => {
  const file = path.join(small, 'summary.json');
  writeFileWhole(file, 'the previous summary');
  expect(() => writeFileWhole(file, Buffer.alloc(256 * 1024, 1))).toThrow(/^easyinv: cannot write .*summary\.json: the disk is full/);
  expect(fs.readFileSync(file, 'utf8')).toBe('the previous summary');
  expect(fs.readdirSync(small)).toEqual(['summary.json']);
  const lines = path.join(small, 'results.jsonl');
  appendLineFlushed(lines, '{"image":"a.png"}');
  expect(() => appendLineFlushed(lines, JSON.stringify({ padding: 'x'.repeat(128 * 1024) }))).toThrow(/the disk is full/);
  expect(fs.readFileSync(lines, 'utf8')).toBe('{"image":"a.png"}\n'); // the part that fitted was cut off again
});
