// Write faults at every point of every write: through the seam of src/files.ts (writeFaults) for ENOSPC, EACCES,
// EROFS and EMFILE at any operation, and the real errors where this machine can make them (a full tmpfs, a read-only
// one, a folder the CLI's user may not write). Each must name the file and the cause, leave no file written in part
// and no lock, and a later --resume must complete the run with one line per item.
import { execFile, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { promisify } from 'util';

import { appendLineFlushed, createFile, makeFolder, truncateFile, writeFaults, writeFileWhole } from '../src/files';

const root = path.join(__dirname, '..');
const weights = path.join(root, 'weights');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-faults-'));
fs.chmodSync(scratch, 0o755); // the EACCES test's CLI runs as another user

// A tmpfs where root may mount one: the kernel's own ENOSPC and EROFS.
const disk = path.join(scratch, 'disk');
fs.mkdirSync(disk);
const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=755', 'tmpfs', disk]).status === 0;
const remount = (options: string) => expect(spawnSync('mount', ['-o', `remount,${options}`, disk]).status).toBe(0);
afterAll(() => {
  if (mounted) spawnSync('umount', [disk]);
  fs.rmSync(scratch, { recursive: true, force: true });
});

const causes = { ENOSPC: 'the disk is full', EACCES: 'permission denied', EROFS: 'the file system is read-only', EMFILE: 'too many open files' };
const temporaries = (folder: string) => fs.readdirSync(folder, { recursive: true }).map(String).filter((name) => path.basename(name).endsWith('.tmp'));

describe('every operation of every write, failed through the seam', () => {
  afterEach(() => {
    writeFaults.failAt = undefined;
    writeFaults.failed = undefined;
  });

  /** Runs `write` once to count its operations, then once failing at each of them with each errno. */
  function failEach(name: string, setUp: () => void, write: () => void, check: (operation: string) => void) {
    setUp();
    const before = writeFaults.operations;
    write();
    const operations = writeFaults.operations - before;
    const seen = new Set<string>();
    for (let i = 1; i <= operations; i++) {
      for (const [code, cause] of Object.entries(causes)) {
        setUp();
        Object.assign(writeFaults, { failAt: writeFaults.operations + i, code });
        expect(write).toThrow(new RegExp(`^easyinv: cannot (write|create the folder) ${name}: ${cause} \\(${code}\\)$`));
        seen.add(writeFaults.failed!.operation);
        check(writeFaults.failed!.operation);
      }
    }
    return [...seen];
  }

  test('a file written whole keeps its old content or has the new, and no temporary file stays', () => {
    const folder = path.join(scratch, 'whole');
    fs.mkdirSync(folder);
    const file = path.join(folder, 'summary.json');
    const operations = failEach(file, () => fs.writeFileSync(file, 'old'), () => writeFileWhole(file, 'x'.repeat(100_000)), (operation) => {
      // after the rename only the folder's flush can fail: the new file is in place, whole
      expect(fs.readFileSync(file, 'utf8')).toBe(operation === 'fsync' && fs.statSync(file).size === 100_000 ? 'x'.repeat(100_000) : 'old');
      expect(temporaries(folder)).toEqual([]);
    });
    expect(operations).toEqual(['open', 'write', 'fsync', 'rename']);
  });

  test('an appended line is all there or not at all, also when the disk fills mid-write', () => {
    const file = path.join(scratch, 'results.jsonl');
    const operations = failEach(file, () => fs.writeFileSync(file, '{"image":"a.png"}\n'), () => appendLineFlushed(file, JSON.stringify({ image: 'b'.repeat(5000) })), () => {
      expect(fs.readFileSync(file, 'utf8')).toBe('{"image":"a.png"}\n');
    });
    expect(operations).toEqual(['open', 'write', 'fsync']);
  });

  test('a lock that cannot be written is not left behind; a truncation and a new folder name theirs', () => {
    const lock = path.join(scratch, 'lock');
    expect(failEach(lock, () => fs.rmSync(lock, { force: true }), () => createFile(lock, '{"pid":1}'), () => {
      expect(fs.existsSync(lock)).toBe(false);
    })).toEqual(['open', 'write']);
    const file = path.join(scratch, 'cut.jsonl');
    failEach(file, () => fs.writeFileSync(file, '{}\n{"cut'), () => truncateFile(file, 3), () => expect(fs.readFileSync(file, 'utf8')).toBe('{}\n{"cut'));
    const folder = path.join(scratch, 'new', 'grids');
    failEach(folder, () => fs.rmSync(path.join(scratch, 'new'), { recursive: true, force: true }), () => makeFolder(folder), () => {
      expect(fs.existsSync(folder)).toBe(false);
    });
  });
});

// The CLI's compare run, on three photos with three methods: nine items.
const images = path.join(scratch, 'images');
fs.mkdirSync(images);
for (const photo of ['astronaut.png', 'chelsea.png', 'coffee.png']) fs.copyFileSync(path.join(weights, 'photos', photo), path.join(images, photo));
const compareArgs = (out: string) => [path.join(root, 'dist', 'cli.js'), 'compare', '--model', path.join(weights, 'test-sdxl'), '--images', images,
  '--steps', '4', '--methods', 'ddim,easyinv,fixed-point', '--out', out, '--json', '--resume'];

function compare(out: string, as?: { uid: number; gid: number }): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, compareArgs(out), { stdio: ['ignore', 'ignore', 'pipe'], ...as, env: { ...process.env, HOME: scratch } });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stderr })));
}

/** After a failed run: no lock, no temporary file, only whole result lines, each once. */
function expectClean(out: string) {
  expect(fs.existsSync(path.join(out, 'lock'))).toBe(false);
  expect(temporaries(out)).toEqual([]);
  const text = fs.existsSync(path.join(out, 'results.jsonl')) ? fs.readFileSync(path.join(out, 'results.jsonl'), 'utf8') : '';
  expect(text === '' || text.endsWith('\n')).toBe(true);
  const keys = text.split('\n').filter(Boolean).map((line) => ((l) => `${l.image}|${l.method}`)(JSON.parse(line)));
  expect(new Set(keys).size).toBe(keys.length);
  return keys.length;
}

async function expectResumed(out: string, as?: { uid: number; gid: number }) {
  expect(await compare(out, as)).toMatchObject({ code: 0 });
  expect(expectClean(out)).toBe(9);
}

(mounted ? test : test.skip)('a disk that fills mid-run, then a read-only one: each named, and the run resumes once there is room', async () => {
  const out = path.join(disk, 'run');
  const full = await compare(out);
  expect(full.code).toBe(1);
  expect(full.stderr).toMatch(new RegExp(`^easyinv: cannot write ${out}/\\S+: the disk is full \\(ENOSPC\\)$`, 'm'));
  const written = expectClean(out);
  expect(written).toBeGreaterThan(0); // it failed mid-run, with results written
  expect(written).toBeLessThan(9);
  remount('ro');
  const readOnly = await compare(out);
  expect(readOnly).toMatchObject({ code: 1, stderr: `easyinv: cannot write ${out}/lock: the file system is read-only (EROFS)\n` });
  expect(expectClean(out)).toBe(written);
  remount('rw,size=4m');
  await expectResumed(out);
}, 120_000);

// As root, the CLI runs as nobody: root writes through any permission. nobody must be able to load this build: a
// LibTorch from pip in root's home is out of its reach (the seam's EACCES above still runs there).
const user = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : undefined;
const userLoadsTheBuild = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(root)}).capabilities().then(() => process.exit(0))`],
  { ...user, cwd: os.tmpdir() }).status === 0;

(userLoadsTheBuild ? test : test.skip)('a folder the CLI may not write: permission denied, naming the file; the run resumes once it may', async () => {
  const out = path.join(scratch, 'denied');
  fs.mkdirSync(path.join(out, 'grids'), { recursive: true });
  fs.chmodSync(out, 0o777);
  fs.chmodSync(path.join(out, 'grids'), 0o555);
  const denied = await compare(out, user);
  expect(denied.code).toBe(1);
  expect(denied.stderr).toMatch(new RegExp(`^easyinv: cannot write ${out}/grids/astronaut-float32.png: permission denied \\(EACCES\\)$`, 'm'));
  expect(expectClean(out)).toBe(3); // the first photo's three results, before its grid
  fs.chmodSync(path.join(out, 'grids'), 0o777);
  await expectResumed(out, user);
}, 120_000);

test('seeded stress: write faults and signals at random points, each episode resumed to one line per item', async () => {
  const stress = promisify(execFile)(process.execPath, [path.join(root, 'scripts', 'stress-resume.js'), '--kills', '0', '--faults', '3', '--signals', '3',
    '--seed', '5'], { timeout: 230_000, killSignal: 'SIGKILL' });
  // on a problem it exits 1: its report says which
  const report = JSON.parse((await stress.catch((error: { stdout: string }) => error)).stdout);
  expect(report).toMatchObject({ faults: 3, signals: 3, linesLost: 0, linesDoubled: 0, problems: [] });
  expect(report.resumes).toBeGreaterThanOrEqual(6);
}, 240_000);
