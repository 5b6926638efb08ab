// How the library and the CLI write files. A file written whole goes to a temporary file in the same folder, is
// flushed to the disk, and is renamed over its final name, the folder flushed after: a kill, a full disk or a power
// loss leaves the old file or the new one, never a part of one under the final name. An appended line is flushed
// before the call returns (0.3 ms a line on a 2-core VM's disk, against seconds per result line), so that a power
// loss costs at most the line being written.
import * as fs from 'fs';
import * as path from 'path';

import { failure } from './errors';

let written = 0;

function cannotWrite(file: string, error: unknown): Error {
  const { code, message } = error as NodeJS.ErrnoException;
  const why = code === 'ENOSPC' ? 'the disk is full' : code === 'EACCES' || code === 'EPERM' ? 'permission denied'
    : code === 'EROFS' ? 'the file system is read-only' : code === 'EMFILE' || code === 'ENFILE' ? 'too many open files' : message;
  return failure(`cannot write ${file}: ${why}${code && !message.includes(why) ? ` (${code})` : ''}`, { cause: error });
}

function syncFolder(folder: string): void {
  const fd = fs.openSync(folder, 'r');
  try {
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
    fd = fs.openSync(temporary, 'w');
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(temporary, file);
    syncFolder(path.dirname(file));
  } catch (error) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(temporary, { force: true });
    throw cannotWrite(file, error);
  }
}

/** Appends one line to `file` in one write, flushed to the disk before it returns. */
export function appendLineFlushed(file: string, line: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'a');
    fs.writeFileSync(fd, `${line}\n`);
    fs.fdatasyncSync(fd);
  } catch (error) {
    throw cannotWrite(file, error);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
