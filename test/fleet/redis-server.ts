/**
 * A private redis-server for tests: started on a free port (never the
 * machine's shared 6379), no persistence, its own directory; it can be
 * killed and restarted on the same port to play an outage. Optionally a
 * one-node Redis Cluster (all 16384 slots on one node), which still refuses
 * multi-key operations across hash slots (CROSSSLOT): enough to prove the
 * key layout works on a cluster.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../helpers/process';

export const REDIS_SERVER = process.env.REDIS_SERVER ?? '/usr/bin/redis-server';

export interface PrivateRedis {
  readonly port: number;
  readonly url: string;
  /** Start (again) on the same port. */
  start(): Promise<void>;
  /** SIGKILL: an outage (connections reset, nothing saved). */
  kill(): Promise<void>;
  /** Stop and remove its directory. */
  close(): Promise<void>;
  /** Is the process up? */
  running(): boolean;
  /** Send a signal (SIGSTOP/SIGCONT: a Redis that hangs without closing connections). */
  signal(sig: NodeJS.Signals): void;
}

async function waitForPing(port: number, deadlineMs: number): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      let buf = '';
      s.setTimeout(500, () => (s.destroy(), resolve(false)));
      s.on('connect', () => s.write('PING\r\n'));
      s.on('data', (d) => {
        buf += d.toString();
        if (buf.includes('\r\n')) {
          s.destroy();
          resolve(buf.startsWith('+PONG'));
        }
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING`);
    await new Promise((r) => setTimeout(r, 30));
  }
}

export async function startRedis(opts: { cluster?: boolean; replicaOf?: number } = {}): Promise<PrivateRedis> {
  const port = await freePort();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-redis-'));
  let child: ChildProcess | undefined;
  let out = '';
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no', '--repl-diskless-sync-delay', '0'];
  if (opts.replicaOf) args.push('--replicaof', '127.0.0.1', String(opts.replicaOf));
  if (opts.cluster) args.push('--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, 'nodes.conf'), '--cluster-announce-ip', '127.0.0.1');

  const start = async () => {
    if (child && child.exitCode === null && child.signalCode === null) return;
    // A fresh cluster config each start: a restarted node must not remember slots it gave up.
    if (opts.cluster) await fsp.rm(path.join(dir, 'nodes.conf'), { force: true });
    child = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitForPing(port, 10_000);
    } catch (err) {
      child.kill('SIGKILL');
      throw new Error(`${(err as Error).message}\n${out}`);
    }
    if (opts.cluster) {
      const r = spawnSync('redis-cli', ['-p', String(port), 'cluster', 'addslotsrange', '0', '16383'], { encoding: 'utf8' });
      if (r.status !== 0 || !/OK/.test(r.stdout)) throw new Error(`cluster addslotsrange failed: ${r.stdout}${r.stderr}`);
      const deadline = Date.now() + 10_000;
      for (;;) {
        const info = spawnSync('redis-cli', ['-p', String(port), 'cluster', 'info'], { encoding: 'utf8' }).stdout;
        if (/cluster_state:ok/.test(info)) break;
        if (Date.now() > deadline) throw new Error(`cluster not ok: ${info}`);
        await new Promise((res) => setTimeout(res, 50));
      }
    }
  };

  const kill = async () => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGKILL');
    });
  };

  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    start,
    kill,
    running: () => Boolean(child && child.exitCode === null && child.signalCode === null),
    signal: (sig) => void child?.kill(sig),
    async close() {
      await kill();
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

/** A key prefix no other test (or run) uses. */
export function uniquePrefix(name: string): string {
  return `t:${name}:${process.pid}:${Date.now().toString(36)}:${Math.random().toString(36).slice(2, 8)}:`;
}

export interface PrivateSentinel {
  readonly port: number;
  close(): Promise<void>;
}

/** A redis-sentinel watching `master` as "mymaster" (quorum 1, quick failover). */
export async function startSentinel(master: { port: number }, opts: { downAfterMs?: number } = {}): Promise<PrivateSentinel> {
  const port = await freePort();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-sentinel-'));
  const conf = path.join(dir, 'sentinel.conf');
  await fsp.writeFile(
    conf,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${dir}`,
      `sentinel monitor mymaster 127.0.0.1 ${master.port} 1`,
      `sentinel down-after-milliseconds mymaster ${opts.downAfterMs ?? 1000}`,
      'sentinel failover-timeout mymaster 5000',
      'sentinel parallel-syncs mymaster 1',
      '',
    ].join('\n'),
  );
  const child = spawn(REDIS_SERVER, [conf, '--sentinel'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  try {
    await waitForPing(port, 10_000);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n${out}`);
  }
  return {
    port,
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        await new Promise<void>((resolve) => {
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        });
      }
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}
