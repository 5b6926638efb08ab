// How the library and the CLI write files: every write, flush, rename, truncation and new folder goes through here.
// A file written whole goes to a temporary file in the same folder, is flushed to the disk, and is renamed over its
// final name, the folder flushed after: a kill, a full disk or a power loss leaves the old file or the new one, never
// a part of one under the final name. An appended line is flushed before the call returns (0.3 ms a line on a 2-core
// VM's disk, against seconds per result line), so that a power loss costs at most the line being written; a line
// that could not be written whole is cut off again.
import * as fs from 'fs';
import * as path from 'path';

import { failure } from './errors';

let written = 0;
const temporaryName = /^\..+\.\d+\.\d+\.tmp$/;

/**
 * Fault injection for the durability tests (scripts/write-faults.js), not part of the package's API: the `failAt`-th
 * operation counted from the start of the process fails with `code`, as the system call would. A failing write of
 * ENOSPC writes half of its data first, as a disk that fills up mid-write does.
 */
export const writeFaults: {
  operations: number;
  failAt?: number;
  code?: string;
  failed?: { operation: string; file: string };
} = { operations: 0 };

function operation(name: string, file: string): void {
  writeFaults.operations++;
  if (writeFaults.operations !== writeFaults.failAt) return;
  writeFaults.failed = { operation: name, file };
  const code = writeFaults.code ?? 'EIO';
  throw Object.assign(new Error(`${code}: injected fault, ${name} '${file}'`), { code, syscall: name, path: file });
}

const causes: Record<string, string> = {
  ENOSPC: 'the disk is full', EACCES: 'permission denied', EPERM: 'permission denied',
  EROFS: 'the file system is read-only', EMFILE: 'too many open files', ENFILE: 'too many open files',
};

function cannot(what: string, file: string, error: unknown): Error {
  const { code, message } = error as NodeJS.ErrnoException;
  const why = code !== undefined && Object.hasOwn(causes, code) ? `${causes[code]} (${code})` : message;
  return failure(`cannot ${what} ${file}: ${why}`, { cause: error });
}

function writeAll(fd: number, data: string | Uint8Array, file: string): void {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  try {
    operation('write', file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOSPC') fs.writeSync(fd, bytes, 0, bytes.length >> 1);
    throw error;
  }
  fs.writeFileSync(fd, bytes);
}

function syncFolder(folder: string, file: string): void {
  const fd = fs.openSync(folder, 'r');
  try {
    operation('fsync', file);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes `data` to `file` whole or not at all (see above); an error names the file and the cause. */
export function writeFileWhole(file: string, data: string | Uint8Array): void {
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${written++}.tmp`);
  let fd: number | undefined;
  try {
    operation('open', file);
    fd = fs.openSync(temporary, 'w');
    writeAll(fd, data, file);
    operation('fsync', file);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    operation('rename', file);
    fs.renameSync(temporary, file);
    syncFolder(path.dirname(file), file);
  } catch (error) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(temporary, { force: true });
    throw cannot('write', file, error);
  }
}

/** Appends one line to `file` in one write, flushed to the disk before it returns; on failure the file is as before. */
export function appendLineFlushed(file: string, line: string): void {
  let fd: number | undefined;
  let size = 0;
  try {
    operation('open', file);
    fd = fs.openSync(file, 'a');
    size = fs.fstatSync(fd).size;
    writeAll(fd, `${line}\n`, file);
    operation('fsync', file);
    fs.fdatasyncSync(fd);
  } catch (error) {
    // A part of the line may be in the file (a disk full mid-write). Cutting it off can fail too (a disk gone): then
    // the reader drops the cut-off last line (compare's readLines).
    if (fd !== undefined) {
      try {
        fs.ftruncateSync(fd, size);
      } catch {}
    }
    throw cannot('write', file, error);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Creates `file` with `data` unless it exists (then false): a lock. On failure nothing is left under its name. */
export function createFile(file: string, data: string): boolean {
  let fd: number | undefined;
  try {
    operation('open', file);
    fd = fs.openSync(file, 'wx');
    writeAll(fd, data, file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    if (fd !== undefined) fs.rmSync(file, { force: true });
    throw cannot('write', file, error);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Cuts `file` to its first `size` bytes. */
export function truncateFile(file: string, size: number): void {
  try {
    operation('truncate', file);
    fs.truncateSync(file, size);
  } catch (error) {
    throw cannot('write', file, error);
  }
}

/** Makes `folder` and the folders above it that are missing. */
export function makeFolder(folder: string): void {
  try {
    operation('mkdir', folder);
    fs.mkdirSync(folder, { recursive: true });
  } catch (error) {
    throw cannot('create the folder', folder, error);
  }
}

/** Removes the temporary files that killed processes left in `folder`: call it only where no other process writes. */
export function removeTemporaries(folder: string): void {
  for (const name of fs.readdirSync(folder)) {
    if (temporaryName.test(name)) fs.rmSync(path.join(folder, name), { force: true });
  }
}

/** Copies `from` to `to`, written whole. */
export function copyFileWhole(from: string, to: string): void {
  writeFileWhole(to, fs.readFileSync(from));
}
