/**
 * Scenario: two gateways sharing one (private) Redis behave as one gateway:
 * node a a single process, node b a primary with two worker processes. A limit of 100 messages per hour, submissions alternating
 * between the nodes: exactly 100 accepted, the 101st refused 451 4.7.1 —
 * for an intercept address and for an authenticated account. A password
 * guesser locked out on one node is locked out on the other. An account
 * suspended through one node's admin API is refused on the other, even in
 * a session that authenticated before; a quota cleared on one node is
 * cleared for both; a reload asked on one node reloads both.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import type { TestDns } from '../helpers/dns-server';
import { startDestination, type TestMx } from '../helpers/test-mx';
import { eventually, interceptClient, send, startNode, submissionClient, type FleetNode } from './fleet-helpers';
import { startRedis, uniquePrefix, type PrivateRedis } from './redis-server';

const QUOTAS = `
plans:
  residential: { messagesPerHour: 100, recipientsPerHour: 100000, concurrentConnections: 50 }
defaultPlan: residential
classPlans: { residential-dynamic: residential }
authFailures:
  perIp: { window: 15m, delayAfter: 0, lockoutAfter: 3, lockout: 10m }
  perAccount: { lockoutAfter: 0 }
`;

describe('two gateways, one Redis', { timeout: 90_000 }, () => {
  let redis: PrivateRedis;
  let dns: TestDns;
  let mx: TestMx;
  let a: FleetNode;
  let b: FleetNode;
  const prefix = uniquePrefix('two');

  before(async () => {
    redis = await startRedis();
    ({ dns, mx } = await startDestination());
    const spec = (name: string, config?: Record<string, unknown>) => ({
      name,
      config,
      // This scenario is about sharing, not outages (outage.test.ts): on a saturated
      // machine the default 250 ms command timeout flipped a node to counting
      // locally, and the replay counted again a hit Redis had already taken.
      state: { backend: 'redis', failMode: 'open', keyPrefix: prefix, redis: { url: redis.url, commandTimeout: '5s' } },
      policyFiles: { 'quotas.yaml': QUOTAS },
      relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port },
    });
    // Node b is itself a multi-process gateway: each of its processes talks to Redis.
    [a, b] = await Promise.all([startNode(spec('a')), startNode(spec('b', { process: { workers: 2 } }))]);
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await mx?.close();
    await dns?.close();
    await redis?.close();
  });

  it('enforce one hourly limit of 100 messages for one intercept address: exactly 100 accepted', async () => {
    const ca = await interceptClient(a.intercept, '127.0.0.5');
    const cb = await interceptClient(b.intercept, '127.0.0.5');
    let accepted = 0;
    const perNode = { a: 0, b: 0 };
    for (let i = 0; i < 100; i++) {
      const onA = i % 2 === 0;
      const r = await send(onA ? ca : cb, 'someone@home.test', 'erin@dest.test', [`X-Seq: ip-${i}`]);
      assert.match(r, /^250 2\.0\.0 /, `message ${i + 1} on ${onA ? 'a' : 'b'}`);
      accepted++;
      perNode[onA ? 'a' : 'b']++;
    }
    // The 101st, on either node, is refused.
    assert.match(await send(ca, 'someone@home.test', 'erin@dest.test'), /^451 4\.7\.1 /);
    assert.match(await send(cb, 'someone@home.test', 'erin@dest.test'), /^451 4\.7\.1 /);
    assert.equal(accepted, 100);
    assert.deepEqual(perNode, { a: 50, b: 50 });
    // The count lives in Redis, once.
    const r = new Redis(redis.port, '127.0.0.1');
    try {
      assert.equal(await r.hget(`${prefix}sh:q:{ip:127.0.0.5}:messagesPerHour`, 't'), '100');
    } finally {
      r.disconnect();
    }
    // Another subscriber is not affected.
    const other = await interceptClient(b.intercept, '127.0.0.6');
    assert.match(await send(other, 'x@home.test', 'erin@dest.test'), /^250 /);
    for (const c of [ca, cb, other]) await c.quit();
  });

  it('enforce one hourly limit of 100 messages for one account: exactly 100 accepted', async () => {
    const sa = await submissionClient(a.submission, '127.0.0.8', 'alice@isp.test', 'alice-secret-1');
    const sb = await submissionClient(b.submission, '127.0.0.9', 'alice@isp.test', 'alice-secret-1');
    assert.match(sa.auth, /^235 /);
    assert.match(sb.auth, /^235 /);
    let accepted = 0;
    for (let i = 0; i < 101; i++) {
      const r = await send(i % 2 === 0 ? sa.c : sb.c, 'alice@isp.test', 'erin@dest.test', [`X-Seq: acct-${i}`]);
      if (r.startsWith('250 ')) accepted++;
      else {
        assert.equal(i, 100, `refused early at ${i + 1}: ${r}`);
        assert.match(r, /^451 4\.7\.1 /);
      }
    }
    assert.equal(accepted, 100);
    await sa.c.quit();
    await sb.c.quit();
  });

  it('a quota cleared through one node is cleared for both', async () => {
    const cleared = await b.api('POST', '/api/fleet/quotas/clear', { ip: '127.0.0.5' });
    assert.equal(cleared.status, 200, JSON.stringify(cleared.body));
    const ca = await interceptClient(a.intercept, '127.0.0.5');
    assert.match(await send(ca, 'someone@home.test', 'erin@dest.test'), /^250 /);
    await ca.quit();
    assert.equal((await a.api('POST', '/api/fleet/quotas/clear', { ip: 'not-an-ip' })).status, 400);
  });

  it('a failed-AUTH lockout triggered on one node holds on the other', async () => {
    for (let i = 0; i < 3; i++) {
      const { c, auth } = await submissionClient(a.submission, '127.0.0.7', 'bob@isp.test', 'wrong-password');
      assert.match(auth, /^535 /);
      await c.quit();
    }
    // The right password, on the other node, from the locked-out address.
    const locked = await submissionClient(b.submission, '127.0.0.7', 'bob@isp.test', 'bob-secret-22');
    assert.match(locked.auth, /^454 4\.7\.0 Too many failed logins/);
    await locked.c.quit();
    // Another address is not locked out.
    const fine = await submissionClient(b.submission, '127.0.0.10', 'bob@isp.test', 'bob-secret-22');
    assert.match(fine.auth, /^235 /);
    await fine.c.quit();
    // Lifted through node b's admin API, for both.
    assert.equal((await b.api('POST', '/api/fleet/lockouts/clear', { ip: '127.0.0.7' })).status, 200);
    const again = await submissionClient(a.submission, '127.0.0.7', 'bob@isp.test', 'bob-secret-22');
    assert.match(again.auth, /^235 /);
    await again.c.quit();
  });

  it('an account suspended through one node is suspended on the other, even in an open session', async () => {
    const open = await submissionClient(b.submission, '127.0.0.11', 'bob@isp.test', 'bob-secret-22');
    assert.match(open.auth, /^235 /);
    const s = await a.api('POST', '/api/fleet/accounts/bob@isp.test/suspend', { reason: 'compromised: spam run', by: 'abuse-desk' });
    assert.equal(s.status, 200, JSON.stringify(s.body));
    const refused = await eventually(
      async () => {
        const r = await open.c.cmd('MAIL FROM:<bob@isp.test>');
        if (r.code === 250) await open.c.cmd('RSET');
        return r.text;
      },
      (t) => !t.startsWith('250'),
      3000,
      'the suspension to reach node b',
    );
    assert.match(refused, /^550 5\.7\.1 Account suspended/);
    await open.c.quit();
    // A new login on either node fails.
    for (const n of [a, b]) {
      const x = await submissionClient(n.submission, '127.0.0.12', 'bob@isp.test', 'bob-secret-22');
      assert.match(x.auth, /^535 /, n.name);
      await x.c.quit();
    }
    const fleet = await b.api('GET', '/api/fleet');
    assert.deepEqual((fleet.body.suspended as Array<{ account: string }>).map((x) => x.account), ['bob@isp.test']);
    // Lifted through the other node.
    assert.equal((await b.api('POST', '/api/fleet/accounts/bob@isp.test/unsuspend')).status, 200);
    await eventually(
      async () => (await a.api('GET', '/api/fleet')).body.suspended as unknown[],
      (list) => list.length === 0,
      3000,
      'the unsuspension to reach node a',
    );
    const back = await submissionClient(a.submission, '127.0.0.13', 'bob@isp.test', 'bob-secret-22');
    assert.match(back.auth, /^235 /);
    await back.c.quit();
  });

  it('a reload asked on one node reloads every node', async () => {
    // A stray publisher on the events channel is ignored, not fatal.
    const r0 = new Redis(redis.port, '127.0.0.1');
    await r0.publish(`${prefix}sh:fleet:events`, 'not json');
    await r0.publish(`${prefix}sh:fleet:events`, '{"type":"suspend"}');
    r0.disconnect();
    const r = await a.api('POST', '/api/fleet/reload', { timeout: 5000 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const results = r.body.results as Array<{ node: string; ok: boolean; version: number }>;
    assert.equal(results.length, 2);
    assert.ok(results.every((x) => x.ok && x.version === 2), JSON.stringify(results));
    const fleet = await b.api('GET', '/api/fleet');
    const nodes = fleet.body.nodes as Array<{ alive: boolean; policyVersion: number }>;
    assert.equal(nodes.filter((n) => n.alive).length, 2);
    assert.equal((fleet.body.state as { degraded: boolean }).degraded, false);
  });
});
