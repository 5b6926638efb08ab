import { execFile } from 'child_process';
import * as path from 'path';
import { promisify } from 'util';

// A short run of the concurrency soak (bench/soak-concurrent.js; `npm run soak:concurrent` runs it for 10 minutes),
// in its own process so that a crash fails this test alone. The script itself fails on a wrong result, an unexpected
// error, RSS growth or a leaked tensor; the figures show that every kind of call and every outcome was reached.
// 20 s is within the rise of RSS that a long run's warm-up waits out (about 4 minutes): 10 s after a 10 s warm-up it
// grew 0.7-5%, so the bound here is 20%; what this short run holds to exactly is the results and the live tensors.
test('20 s of concurrent calls over two models, with aborts, disposals and terminated workers: every result as alone, nothing leaked', async () => {
  const script = path.join(__dirname, '..', 'bench', 'soak-concurrent.js');
  const { stdout } = await promisify(execFile)(process.execPath,
    ['--expose-gc', script, '--seconds', '20', '--warm-up', '10', '--rss-bound', '20', '--steps', '1', '--methods', 'ddim,easyinv,direct'],
    { timeout: 110_000, killSignal: 'SIGKILL' });
  const figure = (pattern: RegExp) => stdout.match(pattern)?.slice(1).map(Number) ?? [];
  const [duration] = figure(/^duration ([\d.]+) s/m);
  const [invert, reconstruct, encodeImage] = figure(/^calls: invert (\d+), reconstruct (\d+), encodeImage (\d+)$/m);
  const [completed, aborted, rejected, disposals] = figure(/^outcomes: completed (\d+), aborted (\d+), rejected (\d+) \(model disposed, (\d+) disposals\)$/m);
  const [started, terminated, answered] = figure(/^workers: started (\d+), terminated (\d+), completed (\d+)$/m);
  const [rssStart, rssWarm, rssEnd] = figure(/^RSS: start ([\d.]+) MiB, after warm-up ([\d.]+) MiB, end ([\d.]+) MiB/m);
  const [liveStart, liveEnd] = figure(/^live tensors: start (\d+), end (\d+)/m);
  expect(duration).toBeGreaterThanOrEqual(20);
  for (const count of [invert, reconstruct, encodeImage, completed, aborted, rejected, disposals, started]) expect(count).toBeGreaterThan(0);
  expect(completed + aborted + rejected).toBe(invert + reconstruct + encodeImage);
  expect(terminated + answered).toBe(started);
  for (const rss of [rssStart, rssWarm, rssEnd]) expect(rss).toBeGreaterThan(100);
  expect(liveEnd).toBe(liveStart);
}, 120_000);
