/**
 * Policy test fixtures: a temporary policy directory from a table of files,
 * and an engine on it with an injected clock, a memory store and a silent
 * logger (or one that records lines).
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import type { Account } from '../../src/accounts/store';
import type { ListenerRole } from '../../src/envelope';
import { PolicyEngine, type StageFacts } from '../../src/policy/engine';
import { loadPolicy } from '../../src/policy/load';
import type { PolicyObserver } from '../../src/policy/types';
import { MemoryStore } from '../../src/state/memory';

export const LISTENERS: Array<{ name: string; role: ListenerRole }> = [
  { name: 'submission', role: 'submission' },
  { name: 'intercept', role: 'intercept' },
  { name: 'mx', role: 'mx' },
];

export const T0 = Date.UTC(2024, 0, 1, 10, 0, 0);

const dirs: string[] = [];

export async function policyDir(files: Record<string, string>): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-policy-'));
  dirs.push(d);
  for (const [n, t] of Object.entries(files)) {
    await fsp.mkdir(path.dirname(path.join(d, n)), { recursive: true });
    await fsp.writeFile(path.join(d, n), t);
  }
  return d;
}

export async function removePolicyDirs(): Promise<void> {
  for (const d of dirs.splice(0)) await fsp.rm(d, { recursive: true, force: true });
}

export interface TestEngine {
  engine: PolicyEngine;
  store: MemoryStore;
  clock: { now: number };
  logs: Array<Record<string, unknown>>;
  slept: number[];
}

export async function engineFor(
  files: Record<string, string>,
  /** `store`: another engine's, as after a policy reload (the state store outlives it). */
  opts: { accounts?: Account[]; observer?: PolicyObserver; store?: MemoryStore } = {},
): Promise<TestEngine> {
  const dir = await policyDir(files);
  const clock = { now: T0 };
  const store = opts.store ?? new MemoryStore();
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const logger = pino({ level: 'debug' }, sink);
  const slept: number[] = [];
  const accounts = opts.accounts ? new Map(opts.accounts.map((a) => [a.name.toLowerCase(), a])) : undefined;
  const engine = new PolicyEngine(loadPolicy(dir, { listeners: LISTENERS }), {
    store,
    logger,
    clock: () => clock.now,
    sleep: async (ms) => {
      slept.push(ms);
    },
    observer: opts.observer,
    accounts: accounts ? { get: (n) => accounts.get(n.toLowerCase()) } : undefined,
  });
  return { engine, store, clock, logs, slept };
}

export function account(name: string, extra: Partial<Account> = {}): Account {
  return { name, passwordHash: 'scrypt$x', senders: [name], plan: 'residential', suspended: false, netblocks: [], ...extra };
}

export const intercept = (ip: string): StageFacts => ({ listener: { name: 'intercept', role: 'intercept' }, ip });
export const submission = (ip: string, acct?: Account): StageFacts => ({
  listener: { name: 'submission', role: 'submission' },
  ip,
  ...(acct ? { account: acct, user: acct.name } : {}),
});
