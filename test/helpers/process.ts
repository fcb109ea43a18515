/**
 * A gateway as a real child process (`smarthost start --config F`), for
 * tests that SIGKILL it. Ports are chosen free beforehand because the
 * child's port-0 choices could not be read back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export interface GatewayProcess {
  child: ChildProcess;
  output: () => string;
  /** Until the output matches, bounded: a line the gateway wrote reaches this end of the pipe a little later. */
  waitForOutput(re: RegExp, ms?: number): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

const CLI = path.resolve(__dirname, '../../src/cli/main.js');

/**
 * `smarthost start --config configFile`, ready when its admin API says so.
 * Without a config file (undefined), `smarthost start` in `cwd`: the quick
 * start on the embedded defaults.
 */
export async function spawnGateway(configFile: string | undefined, adminPort: number, cwd?: string): Promise<GatewayProcess> {
  const args = configFile === undefined ? ['start'] : ['start', '--config', configFile];
  const child = spawn(process.execPath, [CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // A bound that catches a gateway that never comes up, not a speed check: on a
  // machine loaded by other test files a cold start can take tens of seconds.
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gateway exited early (${child.exitCode}):\n${out}`);
    try {
      const r = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
      if (r.status === 200) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`gateway not ready in time:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child,
    output: () => out,
    async waitForOutput(re, ms = 15_000) {
      const deadline = Date.now() + ms;
      while (!re.test(out)) {
        if (Date.now() > deadline) throw new Error(`no output matching ${re} within ${ms} ms:\n${out.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      // A gateway that does not stop on a polite signal is killed after 10 s, not waited for forever.
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** The direct children of a process (a multi-process gateway's workers). */
export function childPids(pid: number): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        const st = readFileSync(`/proc/${n}/stat`, 'utf8');
        return Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]) === pid;
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Until `pid` has exited (gone, or a zombie: its files and sockets are closed), bounded. */
export async function waitForExit(pid: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  const running = () => {
    try {
      const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3) !== 'Z';
    } catch {
      return false;
    }
  };
  while (running()) {
    if (Date.now() > deadline) throw new Error(`process ${pid} still running after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** SIGKILL a gateway and its workers at once (a crash of the whole tree); returns once all are gone. */
export async function killTree(gw: GatewayProcess): Promise<void> {
  const pids = [gw.child.pid!, ...childPids(gw.child.pid!)];
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await gw.kill('SIGKILL');
  // Workers of a killed primary: make sure none survives holding the port.
  for (let i = 0; i < 100 && pids.some((p) => existsSync(`/proc/${p}`)); i++) await new Promise((r) => setTimeout(r, 20));
}

/** Resident set size of a process in MB (VmRSS). */
export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
