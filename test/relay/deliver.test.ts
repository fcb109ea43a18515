/**
 * The delivery agent end to end: a real UDP DNS server and real test MXes on
 * 127.0.0.x (all on one port, as MX delivery uses a single mxPort).
 *
 *   127.0.0.2  main MX: STARTTLS; nobody@ → 550 5.1.1, later@ → 451 4.3.0
 *   127.0.0.3  second MX: plain
 *   127.0.0.4  upstream relay: STARTTLS + AUTH required
 *   127.0.0.5  route target: plain
 *   127.0.0.6  greylisting MX: nobody@ → 550 at RCPT, 451 at end of DATA
 *   127.0.0.7  greets with 554
 *   127.0.0.8  does not offer SMTPUTF8
 *   127.0.0.9  nothing listening (connection refused)
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import type { RecipientOutcome } from '../../src/envelope';
import type { RelayConfig } from '../../src/relay/config';
import { createDeliveryAgent } from '../../src/relay/deliver';
import type { DeliveryAgent, DeliveryJob } from '../../src/relay/types';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { captureLogger, job, relayConfig, startMxGroup, type Captured, type CountedMx } from './fixtures';

const PASS = 's3cret-Pa55';
let dns: TestDns;
let port: number;
let main: CountedMx, second: CountedMx, relay: CountedMx, routed: CountedMx, greylist: CountedMx, rude: CountedMx, ascii: CountedMx;

before(async () => {
  dns = await startDnsServer();
  const g = await startMxGroup([
    {
      host: '127.0.0.2',
      starttls: true,
      rcptReplies: new Map<string, [number, string]>([
        ['nobody@main.test', [550, '5.1.1 No such user']],
        ['later@main.test', [451, '4.3.0 Try again later']],
      ]),
    },
    { host: '127.0.0.3' },
    { host: '127.0.0.4', starttls: true, auth: { user: 'relayuser', pass: PASS } },
    { host: '127.0.0.5' },
    {
      host: '127.0.0.6',
      rcptReplies: new Map<string, [number, string]>([['nobody@greylist.test', [550, '5.1.1 No such user']]]),
      dataReply: [451, '4.7.1 Greylisted, come back later'],
    },
    {
      host: '127.0.0.7',
      extra: {
        onConnect(_s, cb) {
          cb(Object.assign(new Error('5.7.1 No service for you'), { responseCode: 554 }));
        },
      },
    },
    { host: '127.0.0.8', extra: { hideSMTPUTF8: true } },
  ]);
  port = g.port;
  [main, second, relay, routed, greylist, rude, ascii] = g.mxs;

  const mx = (domain: string, hosts: Array<[string, number, string]>): void => {
    dns.set(domain, 'MX', hosts.map(([exchange, priority]) => ({ exchange, priority })));
    for (const [name, , ip] of hosts) dns.set(name, 'A', [ip]);
  };
  mx('main.test', [['mx.main.test', 10, '127.0.0.2']]);
  mx('pref.test', [
    ['mx1.pref.test', 10, '127.0.0.9'],
    ['mx2.pref.test', 20, '127.0.0.2'],
  ]);
  mx('order.test', [
    ['mxb.order.test', 20, '127.0.0.2'],
    ['mxa.order.test', 10, '127.0.0.3'],
  ]);
  mx('greylist.test', [['mx.greylist.test', 10, '127.0.0.6']]);
  mx('rude.test', [
    ['mx1.rude.test', 10, '127.0.0.7'],
    ['mx2.rude.test', 20, '127.0.0.3'],
  ]);
  mx('onlyrude.test', [['mx.onlyrude.test', 10, '127.0.0.7']]);
  mx('down.test', [['mx.down.test', 10, '127.0.0.9']]);
  mx('ascii.test', [['mx.ascii.test', 10, '127.0.0.8']]);
  dns.set('implicit.test', 'A', ['127.0.0.3']);
  dns.set('nullmx.test', 'MX', [{ exchange: '', priority: 0 }]);
  dns.behave('slow.test', 'drop');
});

after(async () => {
  await Promise.all([main, second, relay, routed, greylist, rude, ascii].map((m) => m?.close()));
  await dns?.close();
});

/** An agent for one test, closed at its end. */
async function withAgent<T>(over: Partial<RelayConfig>, fn: (agent: DeliveryAgent, log: Captured) => Promise<T>): Promise<T> {
  const log = captureLogger();
  const agent = createDeliveryAgent(relayConfig(dns, port, over), { hostname: 'gw.isp.test', logger: log.logger });
  try {
    return await fn(agent, log);
  } finally {
    await agent.close();
  }
}

function byAddress(outcomes: RecipientOutcome[]): Record<string, RecipientOutcome> {
  return Object.fromEntries(outcomes.map((o) => [o.address, o]));
}

const T = { timeout: 20_000 };

test('falls back to the second MX when the first refuses connections', T, async () => {
  await withAgent({}, async (agent, log) => {
    const before = main.messages.length;
    const [o] = await agent.deliver(job(['a@pref.test']));
    assert.equal(o.kind, 'delivered', JSON.stringify(o));
    assert.equal(o.kind === 'delivered' && o.remoteMta, 'mx2.pref.test');
    assert.equal(main.messages.length, before + 1);
    assert.deepEqual(main.messages.at(-1)?.rcptTo, ['a@pref.test']);
    const line = log.lines.find((l) => l.evt === 'delivery' && l.rcpt === 'a@pref.test');
    assert.ok(line);
    assert.match(String((line.skipped as string[])[0]), /mx1\.pref\.test\[127\.0\.0\.9\]/);
    assert.match(String(line.relay), /mx2\.pref\.test\[127\.0\.0\.2\]/);
  });
});

test('delivers to the most preferred MX when all are up', T, async () => {
  await withAgent({}, async (agent) => {
    const before = second.messages.length;
    const [o] = await agent.deliver(job(['a@order.test']));
    assert.equal(o.kind === 'delivered' && o.remoteMta, 'mxa.order.test');
    assert.equal(second.messages.length, before + 1);
  });
});

test('a domain without MX but with an A record gets mail at that address', T, async () => {
  await withAgent({}, async (agent) => {
    const before = second.messages.length;
    const [o] = await agent.deliver(job(['x@implicit.test']));
    assert.equal(o.kind === 'delivered' && o.remoteMta, 'implicit.test');
    assert.equal(second.messages.length, before + 1);
  });
});

test('null MX and NXDOMAIN bounce; DNS timeout defers', T, async () => {
  await withAgent({}, async (agent, log) => {
    const t0 = Date.now();
    const o = byAddress(await agent.deliver(job(['a@nullmx.test', 'b@no-such-domain.test', 'c@slow.test'])));
    assert.equal(o['a@nullmx.test'].kind, 'bounced');
    assert.equal(o['a@nullmx.test'].kind === 'bounced' && o['a@nullmx.test'].statusCode, '5.1.10');
    assert.equal(o['b@no-such-domain.test'].kind === 'bounced' && o['b@no-such-domain.test'].statusCode, '5.1.2');
    assert.equal(o['c@slow.test'].kind === 'deferred' && o['c@slow.test'].statusCode, '4.4.3');
    assert.ok(Date.now() - t0 < 5000);
    assert.equal(log.lines.filter((l) => l.evt === 'bounce').length, 2);
    assert.deepEqual(log.lines.filter((l) => l.evt === 'transient_failure').map((l) => l.status), ['4.4.3']);
    assert.ok(log.lines.every((l) => l.queueId !== undefined));
  });
});

test('per-recipient 550: only that recipient bounces; STARTTLS is used when offered', T, async () => {
  await withAgent({}, async (agent) => {
    const before = main.messages.length;
    const o = byAddress(await agent.deliver(job(['good@main.test', 'nobody@main.test'])));
    assert.equal(o['good@main.test'].kind, 'delivered');
    const bounced = o['nobody@main.test'];
    assert.equal(bounced.kind, 'bounced');
    assert.equal(bounced.kind === 'bounced' && bounced.statusCode, '5.1.1');
    assert.match(bounced.kind === 'bounced' ? bounced.error : '', /^550 5\.1\.1 No such user/);
    assert.equal(bounced.kind === 'bounced' && bounced.remoteMta, 'mx.main.test');
    assert.equal(main.messages.length, before + 1);
    const got = main.messages.at(-1)!;
    assert.deepEqual(got.rcptTo, ['good@main.test']);
    assert.equal(got.secure, true, 'STARTTLS was used');
    assert.equal(got.mailFrom, 'sender@origin.test');
    assert.match(got.data.toString(), /\r\n\.leading dot\r\n/, 'dot-stuffing round-trips');
  });
});

test('mxTls none does not use STARTTLS', T, async () => {
  await withAgent({ mxTls: 'none' }, async (agent) => {
    const [o] = await agent.deliver(job(['plain@main.test']));
    assert.equal(o.kind, 'delivered');
    assert.equal(main.messages.at(-1)?.secure, false);
  });
});

test('451 at RCPT defers that recipient, the others are delivered', T, async () => {
  await withAgent({}, async (agent) => {
    const [only] = await agent.deliver(job(['later@main.test']));
    assert.equal(only.kind, 'deferred');
    assert.match(only.kind === 'deferred' ? only.error : '', /^451 4\.3\.0/);
    assert.equal(only.kind === 'deferred' && only.statusCode, '4.3.0');
    const o = byAddress(await agent.deliver(job(['later@main.test', 'ok@main.test'])));
    assert.equal(o['later@main.test'].kind, 'deferred');
    assert.equal(o['ok@main.test'].kind, 'delivered');
  });
});

test('RCPT 550 keeps its bounce when DATA is then refused with 451', T, async () => {
  await withAgent({}, async (agent) => {
    const o = byAddress(await agent.deliver(job(['nobody@greylist.test', 'good@greylist.test'])));
    assert.equal(o['nobody@greylist.test'].kind, 'bounced');
    assert.equal(o['good@greylist.test'].kind, 'deferred');
    assert.match(o['good@greylist.test'].kind === 'deferred' ? o['good@greylist.test'].error : '', /^451 4\.7\.1/);
    assert.equal(o['good@greylist.test'].kind === 'deferred' && o['good@greylist.test'].statusCode, '4.7.1');
  });
});

test('a 554 greeting moves on to the next MX; with no other MX it defers, never bounces', T, async () => {
  await withAgent({}, async (agent) => {
    const [o] = await agent.deliver(job(['a@rude.test']));
    assert.equal(o.kind === 'delivered' && o.remoteMta, 'mx2.rude.test');
    const [d] = await agent.deliver(job(['a@onlyrude.test']));
    assert.equal(d.kind, 'deferred');
    assert.match(d.kind === 'deferred' ? d.error : '', /554/);
    assert.equal(d.kind === 'deferred' && d.statusCode, '4.7.1', "the 554 greeting's 5.7.1, made class 4 (Postfix's smtp_skip_5xx_greeting)");
    const [r] = await agent.deliver(job(['a@down.test']));
    assert.equal(r.kind, 'deferred');
    assert.match(r.kind === 'deferred' ? r.error : '', /ECONNREFUSED/);
    assert.equal(r.kind === 'deferred' && r.statusCode, '4.4.1');
  });
});

test('relayhost with STARTTLS + AUTH receives the mail; the password is never logged', T, async () => {
  const relayhost = { host: '127.0.0.4', port, tls: 'required' as const, auth: { user: 'relayuser', pass: PASS } };
  await withAgent({ relayhost }, async (agent, log) => {
    const before = relay.messages.length;
    const [o] = await agent.deliver(job(['someone@anywhere.example']));
    assert.equal(o.kind, 'delivered', JSON.stringify(o));
    assert.equal(relay.messages.length, before + 1);
    const got = relay.messages.at(-1)!;
    assert.equal(got.user, 'relayuser');
    assert.equal(got.secure, true);
    assert.ok(log.raw.length > 0);
    assert.ok(!log.raw.join('').includes(PASS));
  });
  await withAgent({ relayhost: { ...relayhost, auth: { user: 'relayuser', pass: 'wrong' } } }, async (agent) => {
    const [o] = await agent.deliver(job(['someone@anywhere.example']));
    assert.equal(o.kind, 'deferred', 'an AUTH failure is a configuration problem, never a bounce');
    assert.match(o.kind === 'deferred' ? o.error : '', /535/);
    // The test MX says "535 Invalid credentials", no enhanced code: 4.0.0 (a 535 5.7.8 would be 4.7.8).
    assert.equal(o.kind === 'deferred' && o.statusCode, '4.0.0');
  });
});

test('a relayhost whose name does not resolve defers 4.3.5, a configuration problem (Postfix), never a bounce', T, async () => {
  await withAgent({ relayhost: { host: 'no-such-relay.test', port, tls: 'none' } }, async (agent, log) => {
    const [o] = await agent.deliver(job(['a@anywhere.example']));
    assert.equal(o.kind === 'deferred' && o.statusCode, '4.3.5', JSON.stringify(o));
    assert.equal(log.lines.find((l) => l.evt === 'transient_failure')?.status, '4.3.5');
  });
});

test('no MX address of the source address family: deferred 4.4.4, unable to route', T, async () => {
  await withAgent({ sourceAddress: '::1' }, async (agent) => {
    const [o] = await agent.deliver(job(['a@main.test']));
    assert.equal(o.kind === 'deferred' && o.statusCode, '4.4.4', JSON.stringify(o));
    assert.match(o.kind === 'deferred' ? o.error : '', /No address of main\.test is reachable/);
  });
});

test('routes: exact and parent-domain routes go to their host, the rest to MX', T, async () => {
  const hop = { host: '127.0.0.5', port, tls: 'none' as const };
  const routes = new Map([
    ['routed.test', hop],
    ['.sub.test', hop],
  ]);
  await withAgent({ routes }, async (agent) => {
    const r0 = routed.messages.length;
    const m0 = main.messages.length;
    const o = await agent.deliver(job(['a@routed.test', 'b@x.sub.test', 'c@main.test']));
    assert.deepEqual(o.map((x) => x.kind), ['delivered', 'delivered', 'delivered']);
    assert.equal(routed.messages.length, r0 + 1, 'one transaction for both routed domains');
    assert.deepEqual(routed.messages.at(-1)?.rcptTo.sort(), ['a@routed.test', 'b@x.sub.test']);
    assert.equal(main.messages.length, m0 + 1);
    assert.deepEqual(main.messages.at(-1)?.rcptTo, ['c@main.test']);
  });
});

test('connections are reused across jobs to one destination', T, async () => {
  await withAgent({}, async (agent) => {
    const c0 = main.connections.total;
    for (let i = 0; i < 5; i++) {
      const [o] = await agent.deliver(job([`r${i}@main.test`]));
      assert.equal(o.kind, 'delivered');
    }
    assert.equal(main.connections.total - c0, 1);
  });
  await withAgent({ maxMessagesPerConnection: 2 }, async (agent) => {
    const c0 = main.connections.total;
    for (let i = 0; i < 5; i++) await agent.deliver(job([`m${i}@main.test`]));
    assert.equal(main.connections.total - c0, 3, 'closed after 2 messages each');
  });
});

test('concurrency per destination is bounded: extra jobs wait, none fail', T, async () => {
  await waitFor(() => main.connections.open === 0);
  main.connections.maxOpen = 0;
  await withAgent({ concurrencyPerDestination: 2 }, async (agent) => {
    const c0 = main.connections.total;
    const jobs: DeliveryJob[] = Array.from({ length: 8 }, (_, i) => job([`c${i}@main.test`]));
    const outcomes = await Promise.all(jobs.map((j) => agent.deliver(j)));
    assert.ok(outcomes.every(([o]) => o.kind === 'delivered'));
    assert.ok(main.connections.total - c0 <= 2, `used ${main.connections.total - c0} connections`);
    assert.ok(main.connections.maxOpen <= 2);
  });
});

test('after close(), deliver defers instead of failing', T, async () => {
  const log = captureLogger();
  const agent = createDeliveryAgent(relayConfig(dns, port), { hostname: 'gw.isp.test', logger: log.logger });
  await agent.close();
  const [o] = await agent.deliver(job(['a@main.test']));
  assert.equal(o.kind === 'deferred' && o.statusCode, '4.3.0');
});

test('SMTPUTF8: sent when offered; bounced 5.6.7 when a UTF-8 address meets a server without it', T, async () => {
  await withAgent({}, async (agent) => {
    const [o] = await agent.deliver(job(['üser@main.test'], { smtpUtf8: true }));
    assert.equal(o.kind, 'delivered', JSON.stringify(o));
    assert.deepEqual(main.messages.at(-1)?.rcptTo, ['üser@main.test']);
    const before = ascii.messages.length;
    const [b] = await agent.deliver(job(['üser@ascii.test'], { smtpUtf8: true }));
    assert.equal(b.kind === 'bounced' && b.statusCode, '5.6.7');
    assert.equal(ascii.messages.length, before);
    const [ok] = await agent.deliver(job(['user@ascii.test'], { smtpUtf8: true }));
    assert.equal(ok.kind, 'delivered', 'ASCII addresses still go');
  });
});

test('an unreadable message defers, and the session is not poisoned', T, async () => {
  await withAgent({}, async (agent) => {
    const [a] = await agent.deliver(
      job(['x@main.test'], {
        open: () => {
          throw new Error('ENOENT: spool file gone');
        },
      }),
    );
    assert.equal(a.kind, 'deferred');
    assert.match(a.kind === 'deferred' ? a.error : '', /spool file gone/);
    assert.equal(a.kind === 'deferred' && a.statusCode, '4.3.0');
    const [b] = await agent.deliver(
      job(['y@main.test'], {
        open: () =>
          new Readable({
            read() {
              this.push('Subject: half\r\n');
              this.destroy(new Error('disk read error'));
            },
          }),
      }),
    );
    assert.equal(b.kind === 'deferred' && b.statusCode, '4.3.0');
    const before = main.messages.length;
    const [c] = await agent.deliver(job(['z@main.test']));
    assert.equal(c.kind, 'delivered');
    assert.equal(main.messages.length, before + 1);
    assert.ok(!main.messages.some((m) => m.rcptTo.includes('y@main.test')), 'the broken message was not accepted');
  });
});

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
