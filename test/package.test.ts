// The package as a consumer project gets it: packed, installed from the tarball elsewhere, used from an ES module
// written in TypeScript with `using` (compiled by tsc with Node's module resolution, so the exports map and the
// declarations are what resolve), with images from Buffers, writing a JPEG.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';

const root = path.join(__dirname, '..');
const consumer = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-consumer-'));
afterAll(() => fs.rmSync(consumer, { recursive: true, force: true }));

const program = `
import { readFileSync } from 'node:fs';
import { invert, liveTensors, loadModel, reconstruct, writeImage, Tensor } from 'easyinv';

const bundle = new URL('./node_modules/easyinv/weights/tiny-sd1-256', import.meta.url).pathname;
const photo = readFileSync(new URL('./node_modules/easyinv/weights/photos/astronaut.png', import.meta.url));
{
  await using model = await loadModel(bundle);
  using z0 = await model.encodeImage(photo);
  using inverted = await invert(model, z0, { method: 'easyinv', steps: 4, eta: 0.5 });
  using latent = await reconstruct(model, inverted.latent, { steps: 4 });
  using image = await model.decode(latent);
  await writeImage(image, 'back.jpg');
  console.log(JSON.stringify({ shape: image.shape, isTensor: image instanceof Tensor }));
}
console.log(JSON.stringify({ live: liveTensors() }));
`;

test('packed, installed elsewhere and used from ESM with `using`: Buffers in, a JPEG out, nothing left alive', () => {
  const run = (command: string, args: string[], cwd: string) => {
    try {
      return execFileSync(command, args, { cwd, encoding: 'utf8', stdio: 'pipe' });
    } catch (error) {
      const { stdout, stderr } = error as { stdout: string; stderr: string };
      throw new Error(`${command} ${args.join(' ')} failed:\n${stdout}\n${stderr}`);
    }
  };
  // --ignore-scripts: dist/ is already built (npm test compiles first) and the build is copied in below, as a
  // prebuilt binary would be; compiling LibTorch code here would take minutes.
  const tarball = path.join(consumer, run('npm', ['pack', '--ignore-scripts', '--pack-destination', consumer, '--silent'], root).trim());
  fs.writeFileSync(path.join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  run('npm', ['install', tarball, '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--silent'], consumer);
  const installed = path.join(consumer, 'node_modules', 'easyinv');
  fs.mkdirSync(path.join(installed, 'build', 'Release'), { recursive: true });
  fs.copyFileSync(path.join(root, 'build', 'Release', 'easyinv.node'), path.join(installed, 'build', 'Release', 'easyinv.node'));

  fs.writeFileSync(path.join(consumer, 'main.mts'), program);
  // The README's TypeScript examples must compile as a user would paste them, under --strict.
  const examples = [...fs.readFileSync(path.join(root, 'README.md'), 'utf8').matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  expect(examples.length).toBeGreaterThanOrEqual(2);
  examples.forEach((code, i) => fs.writeFileSync(path.join(consumer, `readme-${i}.mts`), `${code}\nexport {};\n`));
  fs.writeFileSync(path.join(consumer, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, lib: ['ES2022', 'ESNext.Disposable'],
      types: ['node'], typeRoots: [path.join(root, 'node_modules', '@types')], // a consumer's own @types/node
    },
    files: ['main.mts', ...examples.map((_, i) => `readme-${i}.mts`)],
  }));
  run(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', consumer], consumer);
  // the export tool ships with the modules it imports (--help runs without torch)
  expect(run('python3', [path.join(installed, 'tools', 'export_sd.py'), '--help'], consumer)).toContain('--cpu-isa');
  const lines = run(process.execPath, ['main.mjs'], consumer).trim().split('\n').map((line) => JSON.parse(line));
  expect(lines).toEqual([{ shape: [1, 3, 256, 256], isTensor: true }, { live: 0 }]);
  return sharp(path.join(consumer, 'back.jpg')).metadata().then((meta) => {
    expect(meta).toMatchObject({ format: 'jpeg', width: 256, height: 256 });
    const size = (dir: string): number => fs.readdirSync(dir, { withFileTypes: true })
      .reduce((sum, entry) => sum + (entry.isDirectory() ? size(path.join(dir, entry.name)) : fs.statSync(path.join(dir, entry.name)).size), 0);
    console.log(`tarball ${(fs.statSync(tarball).size / 2 ** 20).toFixed(2)} MiB; installed ${(size(installed) / 2 ** 20).toFixed(2)} MiB with the addon`);
  });
}, 180_000);

test('the ES module entry names exactly what the CommonJS one exports, with no default or __esModule', async () => {
  const { runIsolated } = await import('./isolated');
  const { code, stdout, stderr } = await runIsolated(`
    const esm = Object.keys(await import(${JSON.stringify(path.join(root, 'esm', 'index.mjs'))})).sort();
    const cjs = Object.keys(easyinv).filter((key) => key !== '__esModule').sort();
    console.log(JSON.stringify({ esm, cjs }));`);
  expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
  const { esm, cjs } = JSON.parse(stdout);
  expect(esm).toEqual(cjs);
  expect(esm).not.toContain('default');
});
