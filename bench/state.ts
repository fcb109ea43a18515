/**
 * The cost of the Redis state store against the in-memory one.
 *
 *   hitMany      one check-and-increment of two limits (per hour and per
 *                day, as RCPT does), 10,000 subjects in rotation: memory,
 *                Redis (RedisStore: one Lua script, one round trip) and
 *                Redis behind the fail-open wrapper (what a gateway runs)
 *   transaction  the policy engine's store work for one intercept SMTP
 *                transaction (connect, MAIL, 2 × RCPT, DATA, disconnect):
 *                default rules, quotas on, no DNSBL; reports the store calls
 *                per transaction too
 * Each at 1 and BENCH_STATE_CONCURRENCY (32) in flight: ops/s, µs per op
 * (wall time / ops) and latency p50/p99. Redis is a private redis-server
 * on loopback started here (or BENCH_REDIS_URL), no persistence: what is
 * measured is the round trip and the script, not the disk.
 * Bounded: BENCH_STATE_SECONDS (2) per case.
 *
 *   node dist/bench/state.js
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import pino from 'pino';
import type { ClientInfo } from '../src/envelope';
import { PolicyEngine } from '../src/policy/engine';
import { loadPolicy } from '../src/policy/load';
import { MemoryStore } from '../src/state/memory';
import { RedisStore } from '../src/state/redis';
import { ResilientStore } from '../src/state/resilient';
import type { StateStore } from '../src/state/store';
import { startRedis, uniquePrefix, type PrivateRedis } from '../test/fleet/redis-server';

const SECONDS = Number(process.env.BENCH_STATE_SECONDS ?? 2);
const CONCURRENCY = Number(process.env.BENCH_STATE_CONCURRENCY ?? 32);
const HOUR = 3_600_000;
const silent = pino({ level: 'silent' });

interface Result {
  name: string;
  concurrency: number;
  opsPerSec: number;
  usPerOp: number;
  p50us: number;
  p99us: number;
}

async function measure(name: string, op: (i: number) => Promise<unknown>, concurrency: number): Promise<Result> {
  let i = 0;
  const lat: number[] = [];
  const t0 = performance.now();
  const end = t0 + SECONDS * 1000;
  const worker = async () => {
    while (performance.now() < end) {
      const s = performance.now();
      await op(i++);
      lat.push(performance.now() - s);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const secs = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! * 1000;
  const r = { name, concurrency, opsPerSec: i / secs, usPerOp: (secs * 1e6) / i, p50us: q(0.5), p99us: q(0.99) };
  console.log(
    `  ${name.padEnd(34)} c=${String(concurrency).padEnd(3)} ${Math.round(r.opsPerSec).toString().padStart(8)} ops/s ${r.usPerOp.toFixed(1).padStart(7)} µs/op   p50 ${r.p50us.toFixed(0).padStart(5)} µs  p99 ${r.p99us.toFixed(0).padStart(5)} µs`,
  );
  return r;
}

/** Counts calls, to report store round trips per transaction. */
function counting(store: StateStore): { store: StateStore; calls: () => number } {
  let n = 0;
  const proxy = new Proxy(store, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv) as unknown;
      if (typeof v === 'function' && prop !== 'close') {
        return (...args: unknown[]) => {
          n++;
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return v;
    },
  });
  return { store: proxy, calls: () => n };
}

async function main(): Promise<void> {
  let redis: PrivateRedis | undefined;
  const url = process.env.BENCH_REDIS_URL ?? (redis = await startRedis()).url;
  const clients: Redis[] = [];
  const connect = async () => {
    const c = new Redis(url, { commandTimeout: 1000, maxRetriesPerRequest: 1 });
    clients.push(c);
    await c.ping();
    return c;
  };
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-bench-state-'));
  try {
    const prefix = uniquePrefix('bench');
    const memory = new MemoryStore();
    const direct = new RedisStore(await connect(), { keyPrefix: `${prefix}d:`, ownsClient: false });
    const wrapped = new ResilientStore(new RedisStore(await connect(), { keyPrefix: `${prefix}w:`, ownsClient: false }), { failMode: 'open', logger: silent });
    const stores: Array<[string, StateStore]> = [
      ['memory', memory],
      ['redis', direct],
      ['redis, fail-open wrapper', wrapped],
    ];

    console.log(`state store cost, node ${process.version}, redis ${url.replace(/\/\/.*@/, '//')}${redis ? ' (private, loopback)' : ''}`);
    console.log('hitMany: recipientsPerHour + recipientsPerDay of one subject, 10,000 subjects in rotation');
    const results: Result[] = [];
    const base = Date.now();
    for (const [name, s] of stores) {
      const limits = (i: number) => {
        const tag = `{a:user${i % 10_000}@isp.example}`;
        return [
          { key: `sh:q:${tag}:recipientsPerHour`, limit: 1e9, windowMs: HOUR },
          { key: `sh:q:${tag}:recipientsPerDay`, limit: 1e9, windowMs: 24 * HOUR },
        ];
      };
      for (let i = 0; i < 10_000; i++) await s.hitMany(limits(i), 1, base + i); // warm: keys exist, scripts loaded, JIT
      for (const c of [1, CONCURRENCY]) results.push(await measure(`hitMany ${name}`, (i) => s.hitMany(limits(i), 1, Date.now()), c));
    }

    console.log('one intercept transaction through the policy engine (connect, MAIL, 2 × RCPT, DATA, disconnect)');
    await fsp.writeFile(path.join(dir, 'netblocks.yaml'), 'netblocks:\n  - { cidr: 100.64.0.0/10, class: residential-dynamic }\n');
    await fsp.writeFile(
      path.join(dir, 'quotas.yaml'),
      'plans:\n  residential: { messagesPerHour: 1000000000, recipientsPerHour: 1000000000, recipientsPerDay: 1000000000, concurrentConnections: 1000000 }\nclassPlans: { residential-dynamic: residential }\n',
    );
    const policy = loadPolicy(dir, { listeners: [{ name: 'intercept', role: 'intercept' }] });
    const txStores: Array<[string, StateStore]> = [
      ['memory', new MemoryStore()],
      ['redis, fail-open wrapper', new ResilientStore(new RedisStore(await connect(), { keyPrefix: `${prefix}t:`, ownsClient: false }), { failMode: 'open', logger: silent })],
    ];
    for (const [name, s] of txStores) {
      const counted = counting(s);
      const engine = new PolicyEngine(policy, { store: counted.store, logger: silent });
      const ipOf = (i: number) => `100.64.${(i >>> 8) & 255}.${i & 255}`;
      const tx = async (i: number) => {
        const ip = ipOf(i % 10_000);
        const c = await engine.connect({ listener: { name: 'intercept', role: 'intercept' } as never, ip });
        if (c.verdict.action !== 'accept') throw new Error(`connect: ${JSON.stringify(c.verdict)}`);
        const client: ClientInfo = { listener: 'intercept', role: 'intercept', ip, tls: false, netblockClass: c.netblockClass };
        const from = 'someone@home.example';
        const m = await engine.mail({ client, mailFrom: from, recipients: [] });
        if (m.action !== 'accept') throw new Error(`mail: ${JSON.stringify(m)}`);
        await engine.rcpt({ client, mailFrom: from, recipients: [], rcpt: 'a@dest.example' });
        await engine.rcpt({ client, mailFrom: from, recipients: ['a@dest.example'], rcpt: 'b@dest.example' });
        const d = await engine.data({ client, mailFrom: from, recipients: ['a@dest.example', 'b@dest.example'], size: 4000, headerFrom: [from], receivedCount: 1 });
        if (d.action !== 'accept') throw new Error(`data: ${JSON.stringify(d)}`);
        engine.disconnect({ client, countedConnection: c.countedConnection, countedAccount: false });
      };
      for (let i = 0; i < 2000; i++) await tx(i);
      const before = counted.calls();
      await tx(0);
      // disconnect releases asynchronously; let it land before counting
      await new Promise((r) => setImmediate(r));
      const perTx = counted.calls() - before;
      for (const c of [1, CONCURRENCY]) results.push(await measure(`transaction ${name}`, tx, c));
      console.log(`    (${perTx} store calls per transaction)`);
    }

    const m1 = results.find((r) => r.name === 'hitMany memory' && r.concurrency === 1)!;
    const r1 = results.find((r) => r.name === 'hitMany redis' && r.concurrency === 1)!;
    const t1 = results.filter((r) => r.name.startsWith('transaction') && r.concurrency === 1);
    console.log(
      `summary: hitMany ${m1.usPerOp.toFixed(1)} µs in memory vs ${r1.usPerOp.toFixed(1)} µs on Redis (one round trip); ` +
        `a transaction's store work ${t1[0]!.usPerOp.toFixed(0)} µs vs ${t1[1]!.usPerOp.toFixed(0)} µs one at a time`,
    );
    for (const s of [memory, wrapped, ...txStores.map((x) => x[1])]) await s.close().catch(() => undefined);
  } finally {
    for (const c of clients) c.disconnect();
    await redis?.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
