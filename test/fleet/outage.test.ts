/**
 * Scenario: the shared Redis dies in the middle of a bounded load and comes
 * back on the same port, once per fail mode, against a gateway process.
 *
 *   open    every message keeps getting 250 (counted locally meanwhile),
 *           /readyz stays 200 with a warning; when Redis returns the gateway
 *           goes back to it by itself and replays what it counted, so Redis
 *           holds at least every message accepted during the outage.
 *   closed  while Redis is away clients get 451 4.3.0 (state_unavailable)
 *           at connect, on intercept and on submission (the per-address
 *           connection count lives in the store), and /readyz is 503; when
 *           it returns, mail is accepted again.
 * In both: every message that got a 250 arrives at the test MX.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import type { TestDns } from '../helpers/dns-server';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startDestination, type TestMx } from '../helpers/test-mx';
import { eventually, startNode, submissionClient, type FleetNode } from './fleet-helpers';
import { startRedis, uniquePrefix, type PrivateRedis } from './redis-server';

const QUOTAS = `
plans:
  residential: { messagesPerHour: 100000, recipientsPerHour: 100000, concurrentConnections: 100 }
defaultPlan: residential
classPlans: { residential-dynamic: residential }
`;
const CLIENTS = 6;
const IPS = ['127.0.0.3', '127.0.0.4', '127.0.0.5'];
const PAUSE_MS = 25;

interface Attempt {
  seq: number;
  start: number;
  end: number;
  reply: string;
}

async function attempt(port: number, ip: string, seq: number): Promise<string> {
  let c: RawSmtp | undefined;
  try {
    c = await RawSmtp.connect(port, { localAddress: ip });
    const g = await c.reply(5000);
    if (g.code !== 220) return g.text;
    await c.cmd('EHLO load.test');
    const m = await c.cmd('MAIL FROM:<load@home.test>');
    if (m.code !== 250) return m.text;
    const r = await c.cmd('RCPT TO:<sink@dest.test>');
    if (r.code !== 250) return r.text;
    return (await c.data(message({ from: 'load@home.test', to: 'sink@dest.test', headers: [`X-Seq: ${seq}`] }))).text;
  } catch (err) {
    return `error: ${(err as Error).message}`;
  } finally {
    c?.close();
  }
}

describe('a Redis outage under load', { timeout: 240_000 }, () => {
  let dns: TestDns;
  let mx: TestMx;

  before(async () => {
    ({ dns, mx } = await startDestination());
  });
  after(async () => {
    await mx.close();
    await dns.close();
  });

  for (const failMode of ['open', 'closed'] as const) {
    it(`fail ${failMode}: keeps its promise during the outage, recovers, loses no acknowledged message`, async () => {
      const redis: PrivateRedis = await startRedis();
      const prefix = uniquePrefix(`outage-${failMode}`);
      let node: FleetNode | undefined;
      try {
        node = await startNode({
          name: failMode,
          state: {
            backend: 'redis',
            failMode,
            keyPrefix: prefix,
            probeInterval: '100ms',
            // The outage is a SIGKILL: the connection drops and every call fails at once, so no
            // short command timeout is needed to see it. A short one (200 ms) on a loaded machine
            // added outages of its own: a slow reply flipped the node (fail closed: a 451 after
            // recovery), and a replayed batch that timed out was replayed again (Redis over-counted).
            redis: { url: redis.url, commandTimeout: '5s', connectTimeout: '1s', maxReconnectDelay: '200ms' },
          },
          policyFiles: { 'quotas.yaml': QUOTAS },
          relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port, backoff: ['300ms'] },
        });
        const n = node;
        const seqBase = failMode === 'open' ? 0 : 1_000_000;
        const attempts: Attempt[] = [];
        let seq = seqBase;
        let stop = false;
        const loops = Array.from({ length: CLIENTS }, async (_, i) => {
          while (!stop) {
            const s = seq++;
            const start = Date.now();
            const reply = await attempt(n.intercept, IPS[i % IPS.length]!, s);
            attempts.push({ seq: s, start, end: Date.now(), reply });
            await new Promise((r) => setTimeout(r, PAUSE_MS));
          }
        });
        const readyz = async () => {
          const r = await fetch(`http://127.0.0.1:${n.adminPort}/readyz`);
          return { status: r.status, body: (await r.json()) as { ready: boolean; failures?: string[]; warnings?: string[] } };
        };

        // Attempts started after `from` that have finished (only finished ones are recorded).
        const completed = (from: number) => attempts.filter((a) => a.start > from).length;
        // Each phase lasts at least as long as it always did, and then until its load has really
        // happened (bounded): on a loaded machine an attempt can take longer than the whole pause.
        const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
        await pause(1000);
        await eventually(async () => completed(0), (n) => n >= CLIENTS, 30_000, 'load before the outage');
        const killAt = Date.now();
        await redis.kill();
        await pause(700);
        // The gateway notices at its next Redis call; /readyz says so (bounded wait, same assertions below).
        const during = await eventually(readyz, (r) => r.status !== 200 || (r.body.warnings?.length ?? 0) > 0, 15_000, '/readyz to report the outage');
        // Submission during the outage: the connection count and AUTH's lockout state are both in
        // the store, so failing closed refuses at the greeting, failing open lets AUTH through.
        const greeting = await (async () => {
          const c = await RawSmtp.connect(n.submission, { localAddress: '127.0.0.14' });
          const g = await c.reply(5000);
          c.close();
          return g.text;
        })();
        const sub = failMode === 'open' ? await submissionClient(n.submission, '127.0.0.14', 'alice@isp.test', 'alice-secret-1') : undefined;
        await sub?.c.quit();
        await pause(800);
        await eventually(async () => completed(killAt + 300), (n) => n >= 5, 30_000, 'load during the outage');
        const restartAt = Date.now();
        await redis.start();
        const recovered = await eventually(readyz, (r) => r.status === 200 && !r.body.warnings, 30_000, 'the gateway to use Redis again');
        const recoveredAt = Date.now();
        await pause(800);
        await eventually(async () => completed(recoveredAt), (n) => n >= 5, 30_000, 'load after recovery');
        stop = true;
        await Promise.all(loops);

        const acked = attempts.filter((a) => a.reply.startsWith('250 '));
        const refused = attempts.filter((a) => !a.reply.startsWith('250 '));
        const inOutage = attempts.filter((a) => a.start > killAt + 300 && a.end < restartAt);
        const afterRecovery = attempts.filter((a) => a.start > recoveredAt);
        console.log(
          `# outage (fail ${failMode}): ${attempts.length} attempts, ${acked.length} acknowledged, ${refused.length} refused; ` +
            `${inOutage.length} wholly inside the outage (${inOutage.filter((a) => a.reply.startsWith('250')).length} acknowledged); ` +
            `recovered ${recoveredAt - restartAt} ms after Redis returned`,
        );
        assert.ok(inOutage.length >= 5, 'load went on during the outage');
        assert.ok(afterRecovery.length >= 5 && afterRecovery.every((a) => a.reply.startsWith('250 ')), `after recovery: ${afterRecovery.map((a) => a.reply).find((r) => !r.startsWith('250'))}`);
        assert.equal(recovered.body.ready, true);

        if (failMode === 'open') {
          assert.deepEqual(refused.map((a) => a.reply), [], 'fail open refuses nothing');
          assert.equal(during.status, 200);
          assert.match(greeting, /^220 /);
          assert.match(sub!.auth, /^235 /, 'AUTH works during the outage');
          assert.match(during.body.warnings?.join() ?? '', /state: .*failing open/);
          // What was counted during the outage reached the restarted (empty) Redis.
          const r = new Redis(redis.port, '127.0.0.1');
          try {
            let total = 0;
            for (const ip of IPS) total += Number((await r.hget(`${prefix}sh:q:{ip:${ip}}:messagesPerHour`, 't')) ?? 0);
            const outageAcked = inOutage.filter((a) => a.reply.startsWith('250')).length;
            assert.ok(total >= outageAcked, `Redis holds ${total} ≥ ${outageAcked} accepted during the outage`);
            assert.ok(total <= acked.length, `Redis holds ${total} ≤ ${acked.length} accepted in all`);
          } finally {
            r.disconnect();
          }
        } else {
          assert.equal(during.status, 503);
          assert.match(greeting, /^451 4\.3\.0 Policy state unavailable/, 'submission is deferred at the greeting during the outage');
          assert.match(during.body.failures?.join() ?? '', /state: .*failing closed/);
          assert.ok(inOutage.length > 0 && inOutage.every((a) => /^451 4\.3\.0 Policy state unavailable/.test(a.reply)), `inside the outage: ${[...new Set(inOutage.map((a) => a.reply))].join(' | ')}`);
          // Around the edges only the same tempfail, never anything permanent or lost.
          for (const a of refused) assert.match(a.reply, /^451 4\.3\.0 /, a.reply);
        }

        // No acknowledged message lost.
        const want = new Set(acked.map((a) => a.seq));
        await eventually(
          async () => {
            const seen = new Set(mx.messages.map((m) => Number(/X-Seq: (\d+)/.exec(m.data.toString())?.[1])));
            return [...want].filter((s) => !seen.has(s));
          },
          (missing) => missing.length === 0,
          30_000,
          'every acknowledged message at the MX',
        );
      } finally {
        await node?.stop();
        await redis.close();
      }
    });
  }
});
