/**
 * Scenario: the policy engine in a running gateway, over real sockets and a
 * real DNS server. Clients bind different 127.0.0.x addresses to play
 * subscribers: inside and outside the netblocks, XBL- and PBL-listed, one
 * whose DNSBL query times out, one over its recipient and message quotas,
 * a business line whose excess is held, and a password guesser locked out
 * before its passwords are even checked.
 *
 *   127.0.0.0/28   residential-dynamic (plan residential)
 *   127.0.0.16/29  business            (plan business: excess held)
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, message, RawSmtp } from '../helpers/smtp-client';
import { startDestination, type TestMx } from '../helpers/test-mx';

const DNSBL = (server: string) => `
resolver: { servers: ["${server}"], timeout: 400ms, tries: 1 }
queryPrivate: true   # the test subscribers are on 127.0.0.x
zones:
  - name: zen
    zone: zen.test
    codes: { 127.0.0.2: sbl, 127.0.0.3: css, 127.0.0.4-127.0.0.7: xbl, 127.0.0.10-127.0.0.11: pbl }
    actions:
      xbl:
        intercept: { action: reject, reply: dnsbl_listed, detail: "see https://help.isp.test/infected?ip={ip}" }
        submission: hold
      pbl: ignore
    onError: accept
`;

const QUOTAS = `
plans:
  residential: { messagesPerHour: 2, recipientsPerHour: 3, concurrentConnections: 2 }
  business: { recipientsPerHour: 2, onExceed: hold }
defaultPlan: residential
classPlans: { residential-dynamic: residential, business: business }
authFailures:
  perIp: { window: 15m, delayAfter: 0, lockoutAfter: 3, lockout: 10m }
  perAccount: { lockoutAfter: 0 }
`;

describe('policy in a running gateway', () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: TestGateway;

  before(async () => {
    ({ dns, mx } = await startDestination());
    dns.set('3.0.0.127.zen.test', 'A', ['127.0.0.4']); // XBL: infected
    dns.set('4.0.0.127.zen.test', 'A', ['127.0.0.10']); // PBL: a dynamic range, expected
    dns.behave('5.0.0.127.zen.test', 'drop'); // the DNSBL does not answer
    gw = await startGateway({
      netblocks: [
        { cidr: '127.0.0.0/28', class: 'residential-dynamic' },
        { cidr: '127.0.0.16/29', class: 'business' },
      ],
      policyFiles: { 'dnsbl.yaml': DNSBL(dns.server), 'quotas.yaml': QUOTAS },
      config: { relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port } },
    });
  });
  after(async () => {
    await gw.stop();
    await mx.close();
    await dns.close();
  });

  async function client(ip: string): Promise<{ c: RawSmtp; greeting: string; ms: number }> {
    const t0 = Date.now();
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: ip });
    const greeting = (await c.reply()).text;
    return { c, greeting, ms: Date.now() - t0 };
  }

  it('a clean subscriber inside the netblocks relays; an address outside is refused', async () => {
    const { c, greeting } = await client('127.0.0.2');
    assert.match(greeting, /^220 /);
    await c.cmd('EHLO pc.home.test');
    assert.match((await c.cmd('MAIL FROM:<me@home.test>')).text, /^250 /);
    assert.match((await c.cmd('RCPT TO:<you@dest.test>')).text, /^250 /);
    assert.match((await c.data(message({ from: 'me@home.test', to: 'you@dest.test' }))).text, /^250 2\.0\.0 Ok: queued as /);
    await c.quit();
    const out = await client('127.0.0.40');
    assert.equal(out.greeting, '554 5.7.1 Relay access denied');
    out.c.close();
  });

  it('refuses an XBL-listed subscriber on intercept with the help page; ignores a PBL listing', async () => {
    const x = await client('127.0.0.3');
    assert.equal(x.greeting, '554 5.7.1 Service unavailable; client host [127.0.0.3] listed at zen.test (xbl); see https://help.isp.test/infected?ip=127.0.0.3');
    x.c.close();
    const p = await client('127.0.0.4');
    assert.match(p.greeting, /^220 /);
    await p.c.cmd('EHLO pc');
    assert.match((await p.c.cmd('MAIL FROM:<me@home.test>')).text, /^250 /);
    await p.c.quit();
  });

  it('fails open when the DNSBL does not answer, within the query deadline', async () => {
    const t = await client('127.0.0.5');
    assert.match(t.greeting, /^220 /);
    assert.ok(t.ms >= 350 && t.ms < 2000, `greeting after ${t.ms} ms`);
    t.c.close();
  });

  it('holds mail submitted with valid credentials from an XBL-listed host', async () => {
    const c = await RawSmtp.connect(gw.port('submission'), { localAddress: '127.0.0.3' });
    assert.match((await c.reply()).text, /^220 /);
    await c.cmd('EHLO pc');
    await c.starttls();
    await c.cmd('EHLO pc');
    assert.match((await c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`)).text, /^235 /);
    await c.cmd('MAIL FROM:<alice@isp.test>');
    await c.cmd('RCPT TO:<carol@dest.test>');
    const r = await c.data(message({ from: 'alice@isp.test', to: 'carol@dest.test' }));
    assert.match(r.text, /^250 2\.0\.0 Ok: queued as /);
    await c.quit();
    const id = /queued as (\S+)/.exec(r.text)![1]!;
    const e = (await gw.app!.qmgr.list()).find((x) => x.id === id);
    assert.equal(e?.state, 'hold');
    assert.equal(e?.holdReason, 'dnsbl:zen.xbl');
  });

  it('recipients per hour: three accepted, the fourth refused with 451 4.7.1, and it stays refused', async () => {
    const { c } = await client('127.0.0.7');
    await c.cmd('EHLO pc');
    await c.cmd('MAIL FROM:<me@home.test>');
    for (let i = 1; i <= 3; i++) assert.match((await c.cmd(`RCPT TO:<r${i}@dest.test>`)).text, /^250 /, `rcpt ${i}`);
    assert.match((await c.cmd('RCPT TO:<r4@dest.test>')).text, /^451 4\.7\.1 Sending rate limit exceeded, try again later \(recipientsPerHour 3 reached; try again in [\dhm ]+\)$/);
    assert.match((await c.data(message({ from: 'me@home.test', to: 'r1@dest.test' }))).text, /^250 /, 'the three accepted recipients are sent');
    await c.cmd('MAIL FROM:<me@home.test>');
    assert.match((await c.cmd('RCPT TO:<r5@dest.test>')).text, /^451 4\.7\.1 /);
    await c.quit();
  });

  it('messages per hour: the edge and one past it, refused at MAIL FROM', async () => {
    const { c } = await client('127.0.0.8');
    await c.cmd('EHLO pc');
    for (let i = 1; i <= 2; i++) {
      assert.match((await c.cmd('MAIL FROM:<me@home.test>')).text, /^250 /);
      await c.cmd('RCPT TO:<you@dest.test>');
      assert.match((await c.data(message({ from: 'me@home.test', to: 'you@dest.test' }))).text, /^250 /, `message ${i}`);
    }
    assert.match((await c.cmd('MAIL FROM:<me@home.test>')).text, /^451 4\.7\.1 Sending rate limit exceeded.*messagesPerHour 2 reached/);
    await c.quit();
  });

  it('a business line over its plan is held, not refused', async () => {
    const { c } = await client('127.0.0.17');
    await c.cmd('EHLO server.bakery.test');
    await c.cmd('MAIL FROM:<orders@bakery.test>');
    for (let i = 1; i <= 3; i++) assert.match((await c.cmd(`RCPT TO:<c${i}@dest.test>`)).text, /^250 /);
    const r = await c.data(message({ from: 'orders@bakery.test', to: 'c1@dest.test' }));
    await c.quit();
    const id = /queued as (\S+)/.exec(r.text)![1]!;
    const e = (await gw.app!.qmgr.list()).find((x) => x.id === id);
    assert.equal(e?.state, 'hold');
    assert.equal(e?.holdReason, 'quota.recipients:recipientsPerHour');
  });

  it('limits concurrent connections per subscriber address', async () => {
    const a = await client('127.0.0.10');
    const b = await client('127.0.0.10');
    const c = await client('127.0.0.10');
    assert.match(a.greeting, /^220 /);
    assert.match(b.greeting, /^220 /);
    assert.match(c.greeting, /^421 4\.7\.0 Too many connections from your address/);
    c.c.close();
    a.c.close();
    await new Promise((r) => setTimeout(r, 100));
    const d = await client('127.0.0.10');
    assert.match(d.greeting, /^220 /, 'a slot freed when a connection closed');
    b.c.close();
    d.c.close();
  });

  it('locks out a password guesser before its passwords are checked (454 4.7.0)', async () => {
    const accounts = gw.app!.accounts;
    let hashed = 0;
    const real = accounts.authenticate.bind(accounts);
    accounts.authenticate = async (u, p) => {
      hashed++;
      return real(u, p);
    };
    try {
      const c = await RawSmtp.connect(gw.port('submission'), { localAddress: '127.0.0.9' });
      await c.reply();
      await c.cmd('EHLO pc');
      await c.starttls();
      await c.cmd('EHLO pc');
      for (let i = 0; i < 3; i++) assert.match((await c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', `guess-${i}`)}`)).text, /^535 5\.7\.8 /);
      assert.equal(hashed, 3);
      const locked = await c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`);
      assert.match(locked.text, /^454 4\.7\.0 Too many failed logins, try again later \(try again in 10m\)/);
      assert.equal(hashed, 3, 'no password was checked for the locked-out client');
      await c.quit();
      // Another address is not affected.
      const o = await RawSmtp.connect(gw.port('submission'), { localAddress: '127.0.0.11' });
      await o.reply();
      await o.cmd('EHLO pc');
      await o.starttls();
      await o.cmd('EHLO pc');
      assert.match((await o.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`)).text, /^235 /);
      await o.quit();
    } finally {
      accounts.authenticate = real;
    }
  });
});
