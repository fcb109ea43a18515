/**
 * Shared shaping when the shared store fails (relay.shaping.shared,
 * docs/shaping.md): a delivery agent whose state store is a real Redis
 * behind the resilient wrapper with state.failMode: closed (every store
 * call throws while Redis is away). Redis is killed mid-way: mail for the
 * provider is still delivered, at the provider's rate kept by this process
 * alone, and the fallback is logged once. A real DNS server and a sink on
 * 127.0.0.40 (test/relay/throttling-sink.ts).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { At } from '../../src/config/validate';
import { createDeliveryAgent, type SmtpDeliveryAgent } from '../../src/relay/deliver';
import { parseShaping } from '../../src/relay/providers';
import { createState, parseStateConfig, type StateRuntime } from '../../src/state/config';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startRedis, uniquePrefix, type PrivateRedis } from '../fleet/redis-server';
import { captureLogger, job, relayConfig } from './fixtures';
import { startThrottlingGroup, type ThrottlingSink } from './throttling-sink';

describe('shared shaping, the shared store failing', { timeout: 60_000 }, () => {
  let redis: PrivateRedis;
  let dns: TestDns;
  let sink: ThrottlingSink;
  let port: number;
  let rt: StateRuntime | undefined;

  before(async () => {
    redis = await startRedis();
    dns = await startDnsServer();
    ({ port, sink } = await startThrottlingGroup({ host: '127.0.0.40', limits: {} }, []));
    dns.set('users.bigmail.test', 'MX', [{ exchange: 'mx.bigmail.test', priority: 10 }]);
    dns.set('mx.bigmail.test', 'A', ['127.0.0.40']);
  });
  after(async () => {
    await rt?.close();
    await sink?.mx.close();
    await dns?.close();
    await redis?.close();
  });

  it('fail closed, Redis killed: delivered at the rate kept in this process, logged once', async () => {
    const log = captureLogger();
    const cfg = parseStateConfig(
      { backend: 'redis', failMode: 'closed', keyPrefix: uniquePrefix('shp-closed'), probeInterval: '100ms', redis: { url: redis.url, commandTimeout: '200ms', connectTimeout: '1s', maxReconnectDelay: '100ms' } },
      new At('test'),
      (p) => p,
    );
    rt = createState(cfg, log.logger);
    await rt.start();
    const at = new At('smarthost.yaml', 'relay');
    const shaping = parseShaping({ providers: { bigmail: { mx: ['bigmail.test'], rate: '5/s' } } }, at.child('shaping'), []);
    const agent = createDeliveryAgent(relayConfig(dns, port, { shaping }), { hostname: 'gw.test', logger: log.logger, state: rt.store }) as SmtpDeliveryAgent;
    try {
      // Shared first: the turn is in Redis.
      assert.equal((await agent.deliver(job(['one@users.bigmail.test'])))[0]!.kind, 'delivered');
      await redis.kill();
      const outcomes = await Promise.all(Array.from({ length: 4 }, (_, i) => agent.deliver(job([`r${i}@users.bigmail.test`]))));
      assert.deepEqual(outcomes.map((o) => o[0]!.kind), ['delivered', 'delivered', 'delivered', 'delivered'], JSON.stringify(outcomes));
      assert.equal(rt.degraded(), true);
      // 5/s kept by this process: four messages at least 3 intervals of 200 ms apart (slack for timers).
      const t = sink.mails.slice(1).map((m) => m.at).sort((x, y) => x - y);
      assert.ok(t.at(-1)! - t[0]! >= 450, `four messages in ${t.at(-1)! - t[0]!} ms: no rate kept without Redis`);
      const warned = log.lines.filter((l) => l.evt === 'shaping' && l.shared === false);
      assert.equal(warned.length, 1, `one warning for the fallback, got ${warned.length}`);
    } finally {
      await agent.close();
    }
  });
});
