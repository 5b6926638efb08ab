import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';

export const weights = (name: string) => path.join(__dirname, '..', 'weights', 'test', name);

type Numbers = ArrayLike<number>;

export function maxAbsDifference(a: Numbers, b: Numbers): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** ||a - b|| / ||b||, computed on the device. */
export async function relativeError(a: import('../src').Tensor, b: import('../src').Tensor): Promise<number> {
  const { Tensor } = await import('../src');
  const difference = await Tensor.weightedSum([a, b], [1, -1]);
  const error = (await difference.norm()) / (await b.norm());
  difference.dispose();
  return error;
}

/** The live tensor count once every unreachable handle has been collected, so earlier tests' garbage cannot skew it. */
export async function settledLiveTensors(): Promise<number> {
  const { liveTensors } = await import('../src');
  const v8 = await import('v8');
  const vm = await import('vm');
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  let count = -1;
  while (count !== liveTensors()) {
    count = liveTensors();
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return count;
}

const chromiumPath = '/usr/bin/chromium';
// Headless Chromium as root in a closed network: no sandbox, and none of its background connections.
const chromiumArgs = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

/** Opens a local HTML file in Debian's headless Chromium and runs `use` on the loaded page; skipped (undefined) when
 * the global setup found no browser and could not install one. */
export async function withPage<T>(file: string, use: (page: import('playwright-core').Page, url: string) => Promise<T>): Promise<T | undefined> {
  if (process.env.EASYINV_SKIP_BROWSER === '1') {
    console.warn(`easyinv: SKIPPED the browser check of ${file}: no Chromium (see the line at the start of the run)`);
    return undefined;
  }
  const { chromium } = await import('playwright-core');
  const { pathToFileURL } = await import('url');
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: chromiumArgs });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
    const url = pathToFileURL(file).href;
    return await use(page, url);
  } finally {
    await browser.close();
  }
}

// Rewrites the zip archive `file` (a .pt2 package) with each entry's bytes passed through `change` (by entry name),
// every entry stored: enough of the zip format for tests that hand LibTorch a package with altered records.
export function rewriteZip(file: string, change: (name: string, data: Buffer) => Buffer): void {
  const archive = fs.readFileSync(file);
  const end = archive.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const count = archive.readUInt16LE(end + 10);
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (let i = 0, at = archive.readUInt32LE(end + 16); i < count; i++) {
    const method = archive.readUInt16LE(at + 10);
    const size = archive.readUInt32LE(at + 20);
    const nameLength = archive.readUInt16LE(at + 28);
    const skipped = archive.readUInt16LE(at + 30) + archive.readUInt16LE(at + 32); // extra field and comment
    const local = archive.readUInt32LE(at + 42);
    const name = archive.toString('utf8', at + 46, at + 46 + nameLength);
    const start = local + 30 + archive.readUInt16LE(local + 26) + archive.readUInt16LE(local + 28);
    const stored = archive.subarray(start, start + size);
    const data = change(name, method === 8 ? zlib.inflateRawSync(stored) : stored);
    const header = Buffer.alloc(30);
    header.writeUInt32LE(0x04034b50, 0);
    header.writeUInt16LE(20, 4);
    header.writeUInt32LE(zlib.crc32(data), 14);
    header.writeUInt32LE(data.length, 18);
    header.writeUInt32LE(data.length, 22);
    header.writeUInt16LE(nameLength, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    header.copy(central, 16, 14, 26);
    central.writeUInt16LE(nameLength, 28);
    central.writeUInt32LE(offset, 42);
    const nameBytes = Buffer.from(name, 'utf8');
    locals.push(header, nameBytes, data);
    centrals.push(central, nameBytes);
    offset += 30 + nameBytes.length + data.length;
    at += 46 + nameLength + skipped;
  }
  const directory = Buffer.concat(centrals);
  const tail = Buffer.alloc(22);
  tail.writeUInt32LE(0x06054b50, 0);
  tail.writeUInt16LE(count, 8);
  tail.writeUInt16LE(count, 10);
  tail.writeUInt32LE(directory.length, 12);
  tail.writeUInt32LE(offset, 16);
  fs.writeFileSync(file, Buffer.concat([...locals, directory, tail]));
}
