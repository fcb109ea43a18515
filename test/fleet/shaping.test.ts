/**
 * Scenario: provider shaping shared by two gateways through one (private)
 * Redis (relay.shaping.shared, docs/shaping.md). Node a sends from
 * 127.0.0.50, node b from 127.0.0.51, both to a throttling sink on
 * 127.0.0.40 that is the MX of two providers (test/relay/throttling-sink.ts,
 * a real DNS server names the MX hosts).
 *
 *  - One rate: ten messages for a 5/s provider, five accepted by each node
 *    at once, arrive as one 5/s stream (not two).
 *  - One suspension: the sink answers node a's first transaction with
 *    421 4.7.0 "... try again later"; node b's message for that provider is
 *    deferred by shaping ("suspended until") without b connecting at all.
 *  - Redis killed: both nodes still deliver (each shaping on its own).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startThrottlingGroup, type ThrottlingSink } from '../relay/throttling-sink';
import { eventually, interceptClient, send, startNode, type FleetNode } from './fleet-helpers';
import { startRedis, uniquePrefix, type PrivateRedis } from './redis-server';

const A = '127.0.0.50';
const B = '127.0.0.51';

describe('provider shaping shared by two gateways through one Redis', { timeout: 90_000 }, () => {
  let redis: PrivateRedis;
  let dns: TestDns;
  let sink: ThrottlingSink;
  let a: FleetNode;
  let b: FleetNode;
  const prefix = uniquePrefix('shp');

  before(async () => {
    redis = await startRedis();
    dns = await startDnsServer();
    const g = await startThrottlingGroup({ host: '127.0.0.40', limits: {} }, []);
    sink = g.sink;
    for (const [domain, host] of [['users.ratemail.test', 'mx.ratemail.test'], ['users.bigmail.test', 'mx.bigmail.test'], ['users.third.test', 'mx.third.test']]) {
      dns.set(domain!, 'MX', [{ exchange: host!, priority: 10 }]);
      dns.set(host!, 'A', ['127.0.0.40']);
    }
    const spec = (name: string, source: string) => ({
      name,
      state: { backend: 'redis', failMode: 'open', keyPrefix: prefix, redis: { url: redis.url, commandTimeout: '5s' } },
      relay: {
        dns: { servers: [dns.server], timeout: '1s' },
        mxPort: g.port,
        sourceAddress: source,
        // An ordinary deferral is not retried within the test: whatever comes back early is shaping's retryAt.
        backoff: ['1h'],
        shaping: {
          providers: {
            ratemail: { mx: ['ratemail.test'], rate: '5/s', maxConnections: 10, messagesPerConnection: 100 },
            bigmail: { mx: ['bigmail.test'], rate: '50/s', suspend: '1m' },
            third: { mx: ['third.test'], rate: '5/s' },
          },
        },
      },
    });
    [a, b] = await Promise.all([startNode(spec('a', A)), startNode(spec('b', B))]);
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await sink?.mx.close();
    await dns?.close();
    await redis?.close();
  });

  it('one rate: 5/s for a provider is 5/s for both gateways together', async () => {
    sink.reset();
    sink.limits = {};
    const ca = await interceptClient(a.intercept, '127.0.0.5');
    const cb = await interceptClient(b.intercept, '127.0.0.6');
    // Five on each node, accepted as fast as possible: each node alone would send its five within 0.8 s.
    const accepted = await Promise.all([ca, cb].map(async (c, n) => {
      const out: string[] = [];
      for (let i = 0; i < 5; i++) out.push(await send(c, 'someone@home.test', `r${n}-${i}@users.ratemail.test`));
      return out;
    }));
    for (const r of accepted.flat()) assert.match(r, /^250 /);
    await eventually(async () => sink.mails.length, (n) => n >= 10, 20_000, 'ten messages at the sink');
    const times = sink.mails.map((m) => m.at).sort((x, y) => x - y);
    const span = times.at(-1)! - times[0]!;
    const perNode = { a: sink.mails.filter((m) => m.client === A).length, b: sink.mails.filter((m) => m.client === B).length };
    const peak = Math.max(...times.map((t) => times.filter((u) => u >= t && u < t + 1000).length));
    // One 5/s stream: ten messages take at least 9 intervals of 200 ms (1.8 s; slack for timers: 1.4 s); at most 5 (+1 at the edge) in any second.
    assert.deepEqual(perNode, { a: 5, b: 5 });
    assert.ok(span >= 1400, `ten messages over ${span} ms: two rates, not one (a 5/s stream needs 1800 ms)`);
    assert.ok(peak <= 6, `at most 6 messages in any second across both nodes, saw ${peak}`);
    assert.deepEqual(sink.refusals, []);
    await ca.quit();
    await cb.quit();
  });

  it("one suspension: a 421 4.7.0 to node a defers node b's mail for the provider without b connecting", async () => {
    sink.reset();
    // Every MAIL FROM: 421 4.7.0 ... rate limit exceeded, try again later.
    sink.limits = { perWindow: 0, windowMs: 60_000 };
    const ca = await interceptClient(a.intercept, '127.0.0.5');
    assert.match(await send(ca, 'someone@home.test', 'first@users.bigmail.test'), /^250 /);
    await eventually(async () => sink.refusals.length, (n) => n >= 1, 10_000, 'the 421 to node a');
    assert.equal(sink.refusals[0]!.client, A);
    // The provider would accept now: only the shared suspension can keep b away.
    sink.limits = {};
    await sleep(200);
    const cb = await interceptClient(b.intercept, '127.0.0.6');
    assert.match(await send(cb, 'someone@home.test', 'second@users.bigmail.test'), /^250 /);
    const queued = await eventually(
      async () => JSON.stringify((await b.api('GET', '/api/queue')).body),
      (q) => /suspended until/.test(q),
      10_000,
      "node b's message deferred by shaping",
    );
    assert.match(queued, /second@users\.bigmail\.test/);
    assert.equal(sink.maxOpen.get(B) ?? 0, 0, `node b connected to the suspended provider: ${sink.mails.filter((m) => m.client === B).length} message(s) from ${B}`);
    // Another provider from node b is not held back.
    assert.match(await send(cb, 'someone@home.test', 'x@users.ratemail.test'), /^250 /);
    await eventually(async () => sink.mails.filter((m) => m.client === B).length, (n) => n >= 1, 10_000, 'ratemail from node b');
    await ca.quit();
    await cb.quit();
  });

  it('Redis killed: both gateways still deliver, each shaping on its own', async () => {
    sink.reset();
    sink.limits = {};
    await redis.kill();
    const ca = await interceptClient(a.intercept, '127.0.0.5');
    const cb = await interceptClient(b.intercept, '127.0.0.6');
    for (let i = 0; i < 3; i++) {
      assert.match(await send(ca, 'someone@home.test', `a${i}@users.third.test`), /^250 /);
      assert.match(await send(cb, 'someone@home.test', `b${i}@users.third.test`), /^250 /);
    }
    await eventually(async () => sink.mails.length, (n) => n >= 6, 15_000, 'six messages at the sink with Redis down');
    // Each node still keeps its own 5/s: its three messages at least 2 intervals apart (slack for timers).
    for (const ip of [A, B]) {
      const t = sink.mails.filter((m) => m.client === ip).map((m) => m.at).sort((x, y) => x - y);
      assert.ok(t.at(-1)! - t[0]! >= 300, `node ${ip} sent 3 messages in ${t.at(-1)! - t[0]!} ms: its own 5/s not kept`);
    }
    await ca.quit();
    await cb.quit();
  });
});
