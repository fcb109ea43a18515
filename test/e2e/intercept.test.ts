/**
 * Scenario: subscribers' redirected port-25 traffic. Clients bind to
 * different 127.0.0.x addresses: inside the subscriber netblock
 * (127.0.0.0/28) they relay without AUTH; outside it they are refused at
 * connect with 554 5.7.1, and nothing is ever queued for them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startDestination, type TestMx } from '../helpers/test-mx';

describe('intercept listener', () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: TestGateway;

  before(async () => {
    ({ dns, mx } = await startDestination());
    gw = await startGateway({ config: { relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port } } });
  });
  after(async () => {
    await gw.stop();
    await mx.close();
    await dns.close();
  });

  it('relays for a subscriber IP without AUTH', async () => {
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.5' });
    assert.match((await c.reply()).text, /^220 /);
    const ehlo = await c.cmd('EHLO home-server.test');
    assert.ok(!ehlo.lines.some((l) => l.startsWith('AUTH')), 'no AUTH on intercept');
    assert.match((await c.cmd('MAIL FROM:<anything@home.test>')).text, /^250 /);
    assert.match((await c.cmd('RCPT TO:<erin@dest.test>')).text, /^250 /);
    const r = await c.data(message({ from: 'anything@home.test', to: 'erin@dest.test' }));
    assert.match(r.text, /^250 2\.0\.0 Ok: queued as /);
    await c.quit();
    const got = await mx.waitFor(1);
    assert.equal(got[0]!.rcptTo[0], 'erin@dest.test');
    assert.match(got[0]!.data.toString(), /from home-server\.test \(\[127\.0\.0\.5\]\)/);
  });

  it('refuses an IP outside the subscriber netblocks with 554 5.7.1', async () => {
    for (const ip of ['127.0.0.20', '127.0.1.1']) {
      const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: ip });
      const greet = await c.reply();
      assert.match(greet.text, /^554 5\.7\.1 Relay access denied/, ip);
      // Whatever it tries next gets nowhere.
      await c.cmd('MAIL FROM:<x@y.test>').catch(() => undefined);
      c.close();
    }
    assert.equal((await gw.app!.qmgr.list()).length, 0);
  });

  it('limits connections per IP', async () => {
    await gw.stop();
    gw = await startGateway({ config: { limits: { maxConnectionsPerIp: 2 }, relay: { dns: { servers: [dns.server] }, mxPort: mx.port } } });
    const a = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.6' });
    const b = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.6' });
    assert.equal((await a.reply()).code, 220);
    assert.equal((await b.reply()).code, 220);
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.6' });
    assert.match((await c.reply()).text, /^421 4\.7\.0 /);
    // Another subscriber is not affected.
    const d = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.7' });
    assert.equal((await d.reply()).code, 220);
    for (const x of [a, b, c, d]) x.close();
  });

  it("pauses before the greeting for the listener's greetDelay", async () => {
    // The pause is per listener (here 700 ms on intercept, 0 on submission).
    await gw.stop();
    gw = await startGateway({
      config: {
        listeners: [
          { name: 'submission', role: 'submission', address: '127.0.0.1', port: 0, security: 'starttls', greetDelay: '0ms' },
          { name: 'intercept', role: 'intercept', address: '127.0.0.1', port: 0, security: 'none', greetDelay: '700ms' },
        ],
        relay: { dns: { servers: [dns.server] }, mxPort: mx.port },
      },
    });
    const t0 = Date.now();
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.8' });
    assert.equal((await c.reply()).code, 220);
    const waited = Date.now() - t0;
    assert.ok(waited >= 650, `greeting after ${waited} ms, before the configured 700 ms pause`);
    c.close();
  });
});
