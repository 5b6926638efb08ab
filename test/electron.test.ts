// What an Electron app needs of the package, checked without Electron: the addon loads from an asar-like layout
// (JavaScript in app.asar/, the native file only in app.asar.unpacked/) and runs in a worker thread there too.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { runIsolated } from './isolated';

const root = path.join(__dirname, '..');
const app = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-app-'));
afterAll(() => fs.rmSync(app, { recursive: true, force: true }));

test('loads from app.asar with the addon in app.asar.unpacked, on the main thread and in a worker', async () => {
  const packed = path.join(app, 'resources', 'app.asar', 'node_modules', 'easyinv');
  const unpacked = path.join(app, 'resources', 'app.asar.unpacked', 'node_modules', 'easyinv');
  for (const part of ['dist', 'binding', 'package.json', 'weights']) fs.cpSync(path.join(root, part), path.join(packed, part), { recursive: true });
  fs.mkdirSync(path.join(unpacked, 'build', 'Release'), { recursive: true });
  fs.copyFileSync(path.join(root, 'build', 'Release', 'easyinv.node'), path.join(unpacked, 'build', 'Release', 'easyinv.node'));
  // The app's other dependencies sit beside easyinv in app.asar/node_modules.
  for (const dependency of fs.readdirSync(path.join(root, 'node_modules'))) {
    if (!dependency.startsWith('.')) fs.symlinkSync(path.join(root, 'node_modules', dependency), path.join(packed, '..', dependency));
  }
  const { code, stdout, stderr } = await runIsolated(`
    const { Worker } = require('worker_threads');
    const lib = require(${JSON.stringify(path.join(packed, 'dist'))});
    const main = await lib.capabilities();
    const model = await lib.loadModel(${JSON.stringify(path.join(packed, 'weights', 'test-sd1'))});
    const z0 = await model.encodeImage(${JSON.stringify(path.join(packed, 'weights', 'photos', 'astronaut.png'))});
    const inverted = await lib.invert(model, z0, { method: 'ddim', steps: 2 });
    const inWorker = await new Promise((resolve, reject) => {
      const worker = new Worker(\`
        const { parentPort } = require('worker_threads');
        const lib = require(\${JSON.stringify(${JSON.stringify(path.join(packed, 'dist'))})});
        lib.Tensor.randn([2, 3], { seed: 1 }).then((t) => t.toArray()).then((values) => parentPort.postMessage(values.length));
      \`, { eval: true });
      worker.on('message', resolve);
      worker.on('error', reject);
    });
    console.log(JSON.stringify({ libtorch: typeof main.libtorch, shape: inverted.latent.shape, inWorker }));`);
  expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
  expect(JSON.parse(stdout)).toEqual({ libtorch: 'string', shape: [1, 4, 32, 32], inWorker: 6 });
  // The addon really came from the unpacked folder: the packed one has no build/ at all.
  expect(fs.existsSync(path.join(packed, 'build'))).toBe(false);
});
