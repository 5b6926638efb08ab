// tools/export_sd.py: its Python tests (argument checks, manifest, wrappers traced around stand-ins of the diffusers
// modules, the whole export loop) run with Debian's python3-torch; --help must work without torch.
import { spawnSync } from 'child_process';
import * as path from 'path';

const root = path.join(__dirname, '..');
const debianPython = '/usr/bin/python3';
const run = (python: string, args: string[]) =>
  spawnSync(python, args, { cwd: root, encoding: 'utf8', timeout: 180_000 });

const hasTorch = run(debianPython, ['-c', 'import torch']).status === 0;
const withTorch = hasTorch ? test : test.skip;
const reason = hasTorch ? '' : ` (skipped: ${debianPython} cannot import torch)`;

describe('export_sd.py', () => {
  withTorch(`its unittest suite passes${reason}`, () => {
    const result = run(debianPython, ['-m', 'unittest', 'tools/test_export_sd.py']);
    const output = `${result.stdout}${result.stderr}`;
    expect(result.error).toBeUndefined();
    if (result.status !== 0) throw new Error(`python unittest failed:\n${output}`);
    expect(output).toMatch(/Ran [1-9]\d* tests/);
    expect(output).toMatch(/\nOK/);
  }, 200_000);

  test('pt2_file.py: its unittest suite passes (packages without their generated sources)', () => {
    const result = run('python3', ['-m', 'unittest', 'tools/test_pt2_file.py']);
    const output = `${result.stdout}${result.stderr}`;
    if (result.status !== 0) throw new Error(`python unittest failed:\n${output}`);
    expect(output).toMatch(/Ran 2 tests[\s\S]*\nOK/);
  });

  test('--help lists the main options', () => {
    const result = run('python3', ['tools/export_sd.py', '--help']);
    expect(result.error).toBeUndefined();
    expect(result.status).toBe(0);
    for (const option of ['--model', '--out', '--device', '--dtype', '--random-weights']) {
      expect(result.stdout).toContain(option);
    }
  });
});
