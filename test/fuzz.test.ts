import { execFile } from 'child_process';
import * as path from 'path';
import { promisify } from 'util';

// A short run of the fuzzer (scripts/fuzz.js; longer runs with other seeds by hand), in its own process so that a
// crash fails this test alone. The outcomes show the generator reaches both sides: inputs read and inputs refused.
test('the safetensors reader and the manifest check survive 1500 seeded random and mutated inputs each', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [path.join(__dirname, '..', 'scripts', 'fuzz.js'), '--cases', '1500', '--seed', '7'],
    { timeout: 110_000, killSignal: 'SIGKILL' });
  const report = JSON.parse(stdout);
  expect(report.failures).toBe(0);
  expect(report.safetensors.cases).toBe(1500);
  expect(report.manifest.cases).toBe(1500);
  for (const outcome of ['valid: read', 'header: read', 'header: rejected', 'bytes: rejected', 'random: rejected']) {
    expect(report.safetensors.outcomes[outcome]).toBeGreaterThan(0);
  }
  for (const outcome of ['valid: accepted', 'fields: accepted', 'fields: rejected', 'text: rejected', 'random: rejected']) {
    expect(report.manifest.outcomes[outcome]).toBeGreaterThan(0);
  }
}, 120_000);
