/**
 * Shaping through the queue manager, on a running gateway: a subscriber
 * (127.0.0.3, intercept) sends 10 messages to a domain whose MX is a
 * throttling provider (127.0.0.44: 3 messages per second per sending
 * address, then 421 4.7.0 "rate limit exceeded, try again later"). The
 * retry schedule is one hour, so mail only arrives within the test if
 * throttle deferrals are retried when the suspension ends (retryAt) — and
 * they must not count as delivery attempts.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startThrottlingGroup, type ThrottlingSink } from './throttling-sink';

let dns: TestDns;
let gw: TestGateway;
let sink: ThrottlingSink;

before(async () => {
  dns = await startDnsServer();
  const g = await startThrottlingGroup({ host: '127.0.0.44', limits: { perWindow: 3, windowMs: 1000 } }, []);
  sink = g.sink;
  dns.set('users.bigmail.test', 'MX', [{ exchange: 'mx.bigmail.test', priority: 10 }]);
  dns.set('mx.bigmail.test', 'A', ['127.0.0.44']);
  gw = await startGateway({
    config: {
      relay: {
        dns: { servers: [dns.server], timeout: '1s' },
        mxPort: g.port,
        backoff: ['1h'],
        poolIdle: '200ms',
        shaping: { providers: { bigmail: { mx: ['bigmail.test'], maxConnections: 2, suspend: '600ms', recover: '200ms' } } },
      },
    },
  });
});
after(async () => {
  await gw.stop();
  await sink.mx.close();
  await dns.close();
});

async function send(n: number): Promise<string[]> {
  const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.3' });
  await c.reply();
  await c.cmd('EHLO sender.test');
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    assert.match((await c.cmd('MAIL FROM:<someone@sender.test>')).text, /^250 /);
    assert.match((await c.cmd(`RCPT TO:<user${i}@users.bigmail.test>`)).text, /^250 /);
    const r = await c.data(message({ from: 'someone@sender.test', to: `user${i}@users.bigmail.test` }));
    assert.match(r.text, /^250 /);
    ids.push(/queued as (\S+)/.exec(r.text)![1]!);
  }
  await c.quit();
  return ids;
}

it('throttled mail waits for the suspension, not the retry schedule, and no attempt is counted', async () => {
  const ids = await send(10);
  const qmgr = gw.app!.qmgr;
  let deferredSeen = 0;
  let maxAttempts = 0;
  const deadline = Date.now() + 20_000;
  // Watch the queue until every message has left it (bounded).
  for (;;) {
    const entries = await Promise.all(ids.map((id) => qmgr.entry(id)));
    for (const e of entries) {
      if (e?.state !== 'deferred') continue;
      deferredSeen++;
      maxAttempts = Math.max(maxAttempts, e.attempts);
    }
    // Both: an entry may be briefly invisible between states, so the sink's count decides too.
    if (entries.every((e) => e === undefined) && sink.mx.messages.length >= ids.length) break;
    assert.ok(Date.now() < deadline, `${sink.mx.messages.length} delivered; still queued after 20 s: ${entries.filter(Boolean).map((e) => `${e!.id} ${e!.state} ${e!.lastError ?? ''}`).join('; ')}`);
    await sleep(20);
  }
  assert.equal(sink.mx.messages.length, 10, 'all 10 delivered');
  assert.ok(sink.refusals.length > 0, 'the provider did throttle');
  assert.ok(deferredSeen > 0, 'some mail was seen waiting in deferred/');
  assert.equal(maxAttempts, 0, 'throttle and shaping deferrals are not delivery attempts');
});
