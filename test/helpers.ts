import * as path from 'path';

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
