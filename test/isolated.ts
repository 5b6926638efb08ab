import { execFile } from 'child_process';
import * as path from 'path';

export interface Isolated {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const dist = path.join(__dirname, '..', 'dist');

/**
 * Runs `body` (async JavaScript with `easyinv`, the built library, and `weights`, the test files' folder, in scope)
 * in a child Node process, so that a native abort or a hang fails the one test that caused it, not the whole suite.
 */
export function runIsolated(body: string, timeoutMs = 60_000, env: NodeJS.ProcessEnv = process.env): Promise<Isolated> {
  const script = [
    `const easyinv = require(${JSON.stringify(dist)});`,
    `const weights = (name) => require('path').join(${JSON.stringify(path.join(__dirname, '..', 'weights'))}, name);`,
    `(async () => { ${body} })().then(() => process.exit(0), (error) => { console.error(error && error.stack); process.exit(3); });`,
  ].join('\n');
  return new Promise((resolve) => {
    const child = execFile(process.execPath, ['-e', script], { timeout: timeoutMs, killSignal: 'SIGKILL', env }, (_, stdout, stderr) =>
      resolve({ code: child.exitCode, signal: child.signalCode, stdout, stderr }));
  });
}
