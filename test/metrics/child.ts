/**
 * `smarthost start --config F` as a child process, ready when its /readyz
 * answers 200. Like helpers/process.ts spawnGateway, with a longer deadline
 * (a primary and its workers starting on a busy 2-CPU CI box can take more
 * than 20 s) and the output kept for tests that read the logs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

export interface GatewayChild {
  child: ChildProcess;
  /** stdout and stderr so far. */
  output(): string;
  /** Resolves when the output matches (or rejects after `ms`). */
  waitForOutput(re: RegExp, ms?: number): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

const CLI = path.resolve(__dirname, '../../src/cli/main.js');

export async function spawnGatewayChild(configFile: string, adminPort: number, deadlineMs = 90_000): Promise<GatewayChild> {
  const child = spawn(process.execPath, [CLI, 'start', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  };
  const end = Date.now() + deadlineMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gateway exited early (${child.exitCode}):\n${out}`);
    const ready = await fetch(`http://127.0.0.1:${adminPort}/readyz`).then((r) => r.status === 200, () => false);
    if (ready) break;
    if (Date.now() > end) {
      await kill();
      throw new Error(`gateway not ready after ${deadlineMs} ms:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    child,
    output: () => out,
    async waitForOutput(re, ms = 15_000) {
      const until = Date.now() + ms;
      while (!re.test(out)) {
        if (Date.now() > until) throw new Error(`output never matched ${re}:\n${out.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    kill,
  };
}
