/**
 * Provider-aware shaping in the delivery agent, over real SMTP on loopback:
 * a real UDP DNS server gives two domains MX hosts under bigmail.test (one
 * provider, "bigmail") and one domain an ordinary MX; a throttling sink on
 * 127.0.0.40 answers like a provider (421 4.7.0 beyond its per-address
 * limits); egress pools bind to 127.0.0.50 (a) and 127.0.0.51 (b).
 *
 * Each job is retried the way the queue manager does it: at its retryAt
 * when shaping deferred it, else after a fixed 300 ms (a short backoff).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RecipientOutcome } from '../../src/envelope';
import { At, ConfigError } from '../../src/config/validate';
import { createDeliveryAgent, type SmtpDeliveryAgent } from '../../src/relay/deliver';
import { parseEgressPools } from '../../src/relay/egress';
import { parseShaping, providerOf } from '../../src/relay/providers';
import { Shaper } from '../../src/relay/shaping';
import type { DeliveryJob } from '../../src/relay/types';
import { MetricsCatalogue } from '../../src/metrics/catalogue';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { captureLogger, job, relayConfig, type Captured, type CountedMx } from './fixtures';
import { peakInWindow, startThrottlingGroup, type ThrottlingSink } from './throttling-sink';

const A = '127.0.0.50';
const B = '127.0.0.51';
let dns: TestDns;
let port: number;
let sink: ThrottlingSink;
let calm: CountedMx;

before(async () => {
  dns = await startDnsServer();
  const g = await startThrottlingGroup({ host: '127.0.0.40', limits: {} }, [{ host: '127.0.0.41' }]);
  ({ port, sink } = g);
  calm = g.others[0]!;
  const mx = (domain: string, host: string, ip: string): void => {
    dns.set(domain, 'MX', [{ exchange: host, priority: 10 }]);
    dns.set(host, 'A', [ip]);
  };
  // Two domains, one provider: grouped by the MX host names, not by the recipient domain.
  mx('users.bigmail.test', 'mx1.bigmail.test', '127.0.0.40');
  mx('hosted-by-bigmail.test', 'mx2.in.bigmail.test', '127.0.0.40');
  mx('calm.test', 'mx.calm.test', '127.0.0.41');
});
after(async () => {
  await sink.mx.close();
  await calm.close();
  await dns.close();
});

const at = new At('smarthost.yaml', 'relay');
const POOLS = parseEgressPools(
  { a: { addresses: [A], heloName: 'a.out.test' }, b: { addresses: [B], heloName: 'b.out.test' } },
  at.child('pools'),
);

function agentWith(bigmail: Record<string, unknown>, log: Captured = captureLogger(), metrics?: MetricsCatalogue): SmtpDeliveryAgent {
  const shaping = parseShaping({ providers: { bigmail: { mx: ['bigmail.test'], ...bigmail } } }, at.child('shaping'), [...POOLS.keys()]);
  const agent = createDeliveryAgent(relayConfig(dns, port, { pools: POOLS, shaping, poolIdleMs: 2000 }), { hostname: 'gw.test', logger: log.logger, shapingObserver: metrics?.shaping }) as SmtpDeliveryAgent;
  metrics?.watchShaping(() => agent.shaper!.snapshot());
  return agent;
}

/** One sample of the exposition, e.g. value(text, 'smarthost_provider_suspended{provider="bigmail",pool="a"}'). */
function value(exposition: string, series: string): number | undefined {
  const line = exposition.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

interface Tried {
  readonly job: DeliveryJob;
  /** Every outcome, in order; the last is delivered unless the deadline passed. */
  readonly outcomes: Array<RecipientOutcome & { at: number }>;
}

/** Deliver one job until delivered, like the queue manager: at retryAt, else after 300 ms; bounded by a deadline. */
async function untilDelivered(agent: SmtpDeliveryAgent, j: DeliveryJob, deadline: number): Promise<Tried> {
  const outcomes: Tried['outcomes'] = [];
  while (Date.now() < deadline) {
    const o = (await agent.deliver(j))[0]!;
    outcomes.push({ ...o, at: Date.now() });
    if (o.kind !== 'deferred') break;
    await sleep(Math.max(0, Math.min(deadline - Date.now(), (o.retryAt ?? Date.now() + 300) - Date.now())));
  }
  return { job: j, outcomes };
}

const delivered = (t: Tried): boolean => t.outcomes.at(-1)?.kind === 'delivered';

describe('provider shaping', () => {
  it('keeps a provider within its connections, messages per connection and rate, across its domains', async () => {
    sink.reset();
    sink.limits = { maxConnections: 3, messagesPerConnection: 3 };
    const agent = agentWith({ maxConnections: 2, messagesPerConnection: 3, rate: '10/s' });
    try {
      const deadline = Date.now() + 20_000;
      const jobs = Array.from({ length: 16 }, (_, i) => job([`u${i}@${i % 2 ? 'users.bigmail.test' : 'hosted-by-bigmail.test'}`], { pool: 'a' }));
      const tried = await Promise.all(jobs.map((j) => untilDelivered(agent, j, deadline)));
      assert.equal(tried.filter(delivered).length, 16, 'all delivered');
      assert.deepEqual(sink.refusals, [], 'the provider never had to say 421');
      assert.ok((sink.maxOpen.get(A) ?? 0) <= 2, `at most 2 sessions at once across both domains, saw ${sink.maxOpen.get(A)}`);
      assert.ok(Math.max(...sink.perSession.values()) <= 3, `at most 3 messages per session, saw ${Math.max(...sink.perSession.values())}`);
      // 10/s is one message every 100 ms: at most 5 (+1 at the window's edge) in any 500 ms.
      const peak = peakInWindow(sink.mails, A, 500);
      assert.ok(peak <= 6, `at most 6 messages in any 500 ms, saw ${peak}`);
      // Deferred (not waited) beyond maxWait or the in-agent bound: each with a retry time.
      for (const t of tried) {
        for (const o of t.outcomes) {
          if (o.kind !== 'deferred') continue;
          assert.ok(o.retryAt, `shaping deferrals carry retryAt: ${o.error}`);
          assert.equal(o.statusCode, '4.7.0', o.error);
        }
      }
    } finally {
      await agent.close();
    }
  });

  it('suspends a throttling provider for the pool on its 421, keeps other providers and pools going, and delivers afterwards', async () => {
    sink.reset();
    // The provider: 4 messages per 2 s per sending address, then 421 4.7.0 "rate limit exceeded".
    sink.limits = { perWindow: 4, windowMs: 2000 };
    const log = captureLogger();
    const metrics = new MetricsCatalogue({ domains: [], defaultMetrics: false, shapingProviders: ['bigmail'], pools: [...POOLS.keys()] });
    const agent = agentWith({ maxConnections: 3, suspend: '1s', recover: '300ms' }, log, metrics);
    try {
      const deadline = Date.now() + 20_000;
      const big = Array.from({ length: 12 }, (_, i) => job([`t${i}@users.bigmail.test`], { pool: 'a' }));
      const running = big.map((j) => untilDelivered(agent, j, deadline));
      // Wait for the suspension, then send other mail while it lasts.
      let suspended: Record<string, unknown> | undefined;
      while (!(suspended = log.lines.find((l) => l.evt === 'shaping')) && Date.now() < deadline) await sleep(10);
      assert.ok(suspended, 'a shaping line announced the suspension');
      assert.equal(suspended.provider, 'bigmail');
      assert.equal(suspended.pool, 'a');
      assert.match(String(suspended.reply), /^421 4\.7\.0 .*rate limit/);
      const until = Date.parse(String(suspended.until));
      const start = Number(suspended.time);
      assert.equal(agent.shaper!.snapshot().find((s) => s.provider === 'bigmail' && s.pool === 'a')?.suspended, true);
      const scraped = (await metrics.render()).body;
      assert.equal(value(scraped, 'smarthost_provider_suspended{provider="bigmail",pool="a"}'), 1);
      assert.equal(value(scraped, 'smarthost_provider_limit_factor{provider="bigmail",pool="a"}'), 0.5, 'limits halved');
      assert.equal(value(scraped, 'smarthost_provider_suspensions_total{provider="bigmail",pool="a"}'), 1);
      assert.ok(value(scraped, 'smarthost_provider_outcomes_total{provider="bigmail",pool="a",outcome="throttled"}')! >= 1);

      const others = [
        ...Array.from({ length: 6 }, (_, i) => job([`c${i}@calm.test`], { pool: 'a' })),
        ...Array.from({ length: 2 }, (_, i) => job([`p${i}@users.bigmail.test`], { pool: 'b' })),
      ];
      const during = await Promise.all(others.map((j) => agent.deliver(j)));
      const doneAt = Date.now();
      assert.deepEqual(during.map((o) => o[0]!.kind), Array(8).fill('delivered'), 'another provider, and the same provider from another pool, are not held up');
      assert.ok(doneAt < until, 'delivered while pool a was suspended for bigmail');

      const tried = await Promise.all(running);
      assert.equal(tried.filter(delivered).length, 12, 'every throttled message was delivered in the end');
      // Suspended means suspended: nothing from pool a reached the provider in the suspension
      // (allowing 200 ms for transactions that were in flight when the 421 came).
      const inSuspension = [...sink.mails, ...sink.refusals].filter((e) => e.client === A && e.at > start + 200 && e.at < until);
      assert.deepEqual(inSuspension, [], 'no session from pool a during the suspension');
      // Every deferral was the shaper's (retryAt) — none burnt a retry — and few 421s were needed.
      const deferrals = tried.flatMap((t) => t.outcomes.filter((o) => o.kind === 'deferred'));
      for (const o of deferrals) assert.ok(o.retryAt !== undefined && o.retryAt >= start, `deferred to a set time: ${(o as { error: string }).error}`);
      const refused = sink.refusals.filter((e) => e.client === A).length;
      assert.ok(refused <= 6, `the provider said 421 ${refused} times (at most the sessions in flight per suspension)`);
      assert.equal(agent.shaper!.snapshot().find((s) => s.provider === 'bigmail' && s.pool === 'a')?.suspended, false, 'the suspension cleared');
      const end = (await metrics.render()).body;
      assert.equal(value(end, 'smarthost_provider_outcomes_total{provider="bigmail",pool="a",outcome="delivered"}'), 12);
      assert.equal(value(end, 'smarthost_provider_outcomes_total{provider="other",pool="a",outcome="delivered"}'), 6, 'calm.test counts as other');
      assert.doesNotMatch(end, /calm\.test|bigmail\.test|127\.0\.0/, 'no domain or address as a label');
    } finally {
      await agent.close();
    }
  });
});

describe('provider rules', () => {
  it('matches MX host names by whole-label suffix; built-in providers are there', () => {
    const cfg = parseShaping(undefined, at.child('shaping'), []);
    assert.equal(providerOf(cfg, ['alt1.aspmx.l.google.com'])?.name, 'google');
    assert.equal(providerOf(cfg, ['example-com.mail.protection.outlook.com.'])?.name, 'microsoft');
    assert.equal(providerOf(cfg, ['mta5.am0.yahoodns.net'])?.name, 'yahoo');
    assert.equal(providerOf(cfg, ['mx.notgoogle.com']), undefined, 'notgoogle.com is not google.com');
    assert.equal(providerOf(cfg, ['google.com.evil.test']), undefined);
    assert.equal(providerOf(cfg, ['Google.COM.'])?.name, 'google', 'the suffix itself, any case, trailing dot');
    assert.equal(providerOf(cfg, ['xgoogle.com']), undefined, 'a longer label ending in the suffix is not under it');
    assert.equal(providerOf(cfg, ['.google.com'])?.name, 'google');
    const removed = parseShaping({ providers: { google: null } }, at.child('shaping'), []);
    assert.equal(providerOf(removed, ['aspmx.l.google.com']), undefined, 'null removes a built-in provider');
  });

  it('halves the rate on a throttle reply (a learned one when none is configured) and regains it additively', async () => {
    let now = 1_000_000;
    const cfg = parseShaping({ providers: { bigmail: { mx: ['bigmail.test'], suspend: '1s', maxSuspend: '8s', recover: '1s' } } }, at.child('shaping'), []);
    const shaper = new Shaper(cfg, {}, () => now);
    const g = shaper.groupFor(['mx.bigmail.test'], 'users.bigmail.test', undefined);
    const rate = (): number | undefined => shaper.snapshotOf(g).ratePerSecond;
    // 20 messages in one second, unlimited.
    for (let i = 0; i < 20; i++, now += 50) assert.deepEqual(await shaper.beforeSend(g), { ok: true, waitMs: 0 });
    assert.equal(rate(), undefined, 'no rate before a throttle reply');
    const first = await shaper.throttled(g);
    assert.equal(first.until, now + 1000);
    assert.equal(rate(), 10, 'the 20/s it was sending at, halved');
    assert.equal((await shaper.admit(g)).ok, false, 'suspended');
    now = first.until;
    assert.equal((await shaper.admit(g)).ok, true, 'the suspension is over');
    // 10/s: one every 100 ms; the next turn is 100 ms away.
    assert.deepEqual(await shaper.beforeSend(g), { ok: true, waitMs: 0 });
    assert.deepEqual(await shaper.beforeSend(g), { ok: true, waitMs: 100 });
    now += 1000;
    assert.ok(Math.abs(rate()! - 12) < 1e-9, `a tenth of the learned 20/s back per second: ${rate()}`);
    // Throttled again before full recovery: twice as long, from the lower rate.
    const second = await shaper.throttled(g);
    assert.equal(second.until - now, 2000);
    assert.ok(Math.abs(rate()! - 6) < 1e-9, `halved again: ${rate()}`);
    now = second.until + 10_000;
    assert.equal(rate(), undefined, 'fully recovered: unlimited again');
    assert.equal(shaper.snapshotOf(g).factor, 1);
  });

  it('refuses bad shaping config with the key named', () => {
    const bad = (v: unknown, key: RegExp): void => {
      assert.throws(() => parseShaping(v, at.child('shaping'), ['a']), (e: unknown) => e instanceof ConfigError && key.test(e.message));
    };
    bad({ providers: { google: { rate: 'fast' } } }, /relay\.shaping\.providers\.google\.rate.*not a rate/);
    bad({ providers: { google: { recover: '0s' } } }, /relay\.shaping\.providers\.google\.recover.*must be more than 0/);
    bad({ providers: { x: { mx: ['x.test'], throttleReplies: ['(('] } } }, /relay\.shaping\.providers\.x\.throttleReplies\[0\].*regular expression/);
    bad({ providers: { x: { mx: ['x.test'], pools: { nope: { rate: '1/s' } } } } }, /unknown egress pool "nope"/);
    bad({ providers: { x: { rate: '1/s' } } }, /relay\.shaping\.providers\.x\.mx.*at least one/);
    bad({ providers: { other: { mx: ['o.test'] } } }, /relay\.shaping\.other/);
    bad({ providers: { x: { mx: ['x.test'], suspend: '10m', maxSuspend: '1m' } } }, /maxSuspend/);
    bad({ shared: 'yes' }, /smarthost\.yaml.*relay\.shaping\.shared/);
    assert.equal(parseShaping(undefined, at.child('shaping'), []).shared, true, 'shared by default');
  });
});
