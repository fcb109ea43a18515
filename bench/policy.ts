/**
 * Per-transaction policy cost: the engine's hooks for one whole SMTP
 * transaction (connect, [AUTH before/after], MAIL, 2 × RCPT, DATA,
 * disconnect) with the shipped policies/ (lists, quotas, identity, rules),
 * a DNSBL zone served by a real DNS server on loopback, the in-memory state
 * store, logging at info to /dev/null (as in production: accepts log at
 * debug). The clock is injected and advances 10 ms per transaction so
 * sliding windows move as they would.
 *
 *   intercept, DNSBL cached   10,000 subscriber addresses in rotation
 *   submission                5,000 accounts in rotation
 *   intercept, DNSBL miss     every client new: one real UDP query each
 *
 * Reports transactions/s one at a time and with POLICY_BENCH_CONCURRENCY in
 * flight, and µs per transaction. Bounded: POLICY_BENCH_SECONDS per case.
 *
 *   node dist/bench/policy.js
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import type { Account } from '../src/accounts/store';
import type { ClientInfo } from '../src/envelope';
import { PolicyEngine } from '../src/policy/engine';
import { loadPolicy } from '../src/policy/load';
import { MemoryStore } from '../src/state/memory';
import { startDnsServer } from '../test/helpers/dns-server';

const SECONDS = Number(process.env.POLICY_BENCH_SECONDS ?? 2);
const CONCURRENCY = Number(process.env.POLICY_BENCH_CONCURRENCY ?? 32);
const LISTENERS = [
  { name: 'submission', role: 'submission' as const },
  { name: 'intercept', role: 'intercept' as const },
];

async function main(): Promise<void> {
  const dns = await startDnsServer(); // every name NXDOMAIN: subscribers are clean
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-bench-policy-'));
  try {
    await fsp.cp(path.resolve(__dirname, '../../policies'), dir, { recursive: true });
    // The shipped policy, pointed at the local DNS server, with a bigger subscriber range.
    const dnsbl = (await fsp.readFile(path.join(dir, 'dnsbl.yaml'), 'utf8'))
      .replace('servers: []', `servers: ["${dns.server}"]`)
      .replace('queryPrivate: false', 'queryPrivate: true');
    await fsp.writeFile(path.join(dir, 'dnsbl.yaml'), dnsbl);
    const nb = await fsp.readFile(path.join(dir, 'netblocks.yaml'), 'utf8');
    await fsp.writeFile(path.join(dir, 'netblocks.yaml'), nb.replace('netblocks:\n', 'netblocks:\n  - cidr: 100.64.0.0/10\n    class: residential-dynamic\n'));

    const policy = loadPolicy(dir, { listeners: LISTENERS });
    const accounts = new Map<string, Account>();
    for (let i = 0; i < 5000; i++) {
      const name = `user${i}@isp.example`;
      accounts.set(name, { name, passwordHash: 'x', senders: [name], plan: i % 10 === 0 ? 'business' : 'residential', suspended: false, netblocks: [] });
    }
    const clock = { now: Date.now() };
    const logger = pino({ level: 'info' }, pino.destination({ dest: '/dev/null', sync: true }));
    const engine = new PolicyEngine(policy, { store: new MemoryStore(), logger, clock: () => clock.now, accounts: { get: (n) => accounts.get(n.toLowerCase()) } });

    const ipOf = (i: number) => `100.64.${(i >>> 8) & 255}.${i & 255}`;
    let fresh = 0;
    const freshIp = () => {
      fresh++;
      return `100.${65 + ((fresh >>> 16) & 63)}.${(fresh >>> 8) & 255}.${fresh & 255}`;
    };

    async function interceptTx(ip: string): Promise<void> {
      clock.now += 10;
      const c = await engine.connect({ listener: { name: 'intercept', role: 'intercept' } as never, ip });
      if (c.verdict.action !== 'accept') throw new Error(`connect: ${JSON.stringify(c.verdict)}`);
      const client: ClientInfo = { listener: 'intercept', role: 'intercept', ip, tls: true, netblockClass: c.netblockClass };
      const from = 'someone@home.example';
      const m = await engine.mail({ client, mailFrom: from, recipients: [] });
      if (m.action !== 'accept') throw new Error(`mail: ${JSON.stringify(m)}`);
      await engine.rcpt({ client, mailFrom: from, recipients: [], rcpt: 'a@dest.example' });
      await engine.rcpt({ client, mailFrom: from, recipients: ['a@dest.example'], rcpt: 'b@dest.example' });
      const d = await engine.data({ client, mailFrom: from, recipients: ['a@dest.example', 'b@dest.example'], size: 4000, headerFrom: [from], receivedCount: 1 });
      if (d.action !== 'accept') throw new Error(`data: ${JSON.stringify(d)}`);
      engine.disconnect({ client, countedConnection: c.countedConnection, countedAccount: false });
    }

    async function submissionTx(i: number): Promise<void> {
      clock.now += 10;
      const ip = ipOf(i % 10_000);
      const acct = accounts.get(`user${i % 5000}@isp.example`)!;
      const c = await engine.connect({ listener: { name: 'submission', role: 'submission' } as never, ip });
      let client: ClientInfo = { listener: 'submission', role: 'submission', ip, tls: true, netblockClass: c.netblockClass };
      const a = await engine.auth({ client, user: acct.name, phase: 'before' });
      if (a.action !== 'accept') throw new Error(`auth: ${JSON.stringify(a)}`);
      const counted = await engine.auth({ client, user: acct.name, phase: 'after', ok: true });
      client = { ...client, user: acct.name };
      const m = await engine.mail({ client, account: acct, mailFrom: acct.name, recipients: [] });
      if (m.action !== 'accept') throw new Error(`mail: ${JSON.stringify(m)}`);
      await engine.rcpt({ client, account: acct, mailFrom: acct.name, recipients: [], rcpt: 'a@dest.example' });
      await engine.rcpt({ client, account: acct, mailFrom: acct.name, recipients: ['a@dest.example'], rcpt: 'b@dest.example' });
      const d = await engine.data({ client, account: acct, mailFrom: acct.name, recipients: ['a@dest.example', 'b@dest.example'], size: 4000, headerFrom: [acct.name], receivedCount: 1 });
      if (d.action !== 'accept') throw new Error(`data: ${JSON.stringify(d)}`);
      engine.disconnect({ client, countedConnection: c.countedConnection, countedAccount: counted.countedAccount });
    }

    async function measure(name: string, tx: (i: number) => Promise<void>, concurrency: number): Promise<void> {
      let i = 0;
      const latencies: number[] = [];
      const t0 = performance.now();
      const end = t0 + SECONDS * 1000;
      const worker = async () => {
        while (performance.now() < end) {
          const s = performance.now();
          await tx(i++);
          latencies.push(performance.now() - s);
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
      const secs = (performance.now() - t0) / 1000;
      latencies.sort((a, b) => a - b);
      const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!;
      const rate = i / secs;
      console.log(
        `  ${name.padEnd(40)} c=${String(concurrency).padEnd(3)} ${Math.round(rate).toString().padStart(7)} tx/s  ${((1e6 / rate)).toFixed(1).padStart(6)} µs/tx  latency p50 ${(q(0.5) * 1000).toFixed(0)} µs p99 ${(q(0.99) * 1000).toFixed(0)} µs`,
      );
    }

    // Warm: DNSBL cache for the 10,000 rotating addresses, and the JIT.
    for (let i = 0; i < 10_000; i++) await interceptTx(ipOf(i));
    for (let i = 0; i < 5000; i++) await submissionTx(i);

    console.log(`policy engine, shipped policies/ (${policy.stages.connect.length + policy.stages.mail.length + policy.stages.rcpt.length + policy.stages.data.length} rules), node ${process.version}`);
    for (const c of [1, CONCURRENCY]) await measure('intercept, DNSBL cached', (i) => interceptTx(ipOf(i % 10_000)), c);
    for (const c of [1, CONCURRENCY]) await measure('submission (AUTH hooks, account quotas)', submissionTx, c);
    for (const c of [1, CONCURRENCY]) await measure('intercept, DNSBL miss (UDP query)', () => interceptTx(freshIp()), c);
  } finally {
    await dns.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
