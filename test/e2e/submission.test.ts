/**
 * Scenario: a subscriber's mail client submits on 587 (STARTTLS + AUTH) and
 * 465 (implicit TLS); the gateway refuses what it must, and what it accepts
 * arrives at the recipient's MX, found through a real DNS server.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import nodemailer from 'nodemailer';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, message, RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';
import { formatReply } from '../../src/replies';

describe('submission', () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: TestGateway;

  before(async () => {
    dns = await startDnsServer();
    mx = await startTestMx({ host: '127.0.0.2', starttls: true });
    dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
    dns.set('mx.dest.test', 'A', ['127.0.0.2']);
    gw = await startGateway({ config: { relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port, backoff: ['1s'] } } });
  });
  after(async () => {
    await gw.stop();
    await mx.close();
    await dns.close();
  });

  it('does not offer AUTH before TLS and refuses it with 538 5.7.11', async () => {
    const c = await RawSmtp.connect(gw.port('submission'));
    assert.equal((await c.reply()).code, 220);
    const ehlo = await c.cmd('EHLO client.test');
    assert.equal(ehlo.code, 250);
    assert.ok(ehlo.lines.includes('STARTTLS'), ehlo.text);
    assert.ok(!ehlo.lines.some((l) => l.startsWith('AUTH')), `AUTH advertised before TLS:\n${ehlo.text}`);
    const auth = await c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`);
    assert.match(auth.text, /^538 5\.7\.11 /);
    const mail = await c.cmd('MAIL FROM:<alice@isp.test>');
    assert.equal(mail.text, formatReply('auth_required'));
    await c.quit();
  });

  it('offers AUTH PLAIN and LOGIN after STARTTLS and requires it before MAIL', async () => {
    const c = await RawSmtp.connect(gw.port('submission'));
    await c.reply();
    await c.cmd('EHLO client.test');
    await c.starttls();
    const ehlo = await c.cmd('EHLO client.test');
    assert.ok(ehlo.lines.includes('AUTH PLAIN LOGIN'), ehlo.text);
    assert.ok(ehlo.lines.some((l) => l.startsWith('SIZE ')), ehlo.text);
    // From the reply table (530 5.7.0 Authentication required).
    assert.equal((await c.cmd('MAIL FROM:<alice@isp.test>')).text, '530 5.7.0 Authentication required');
    await c.quit();
  });

  async function authed(user: string, pass: string): Promise<{ c: RawSmtp; auth: string }> {
    const c = await RawSmtp.connect(gw.port('submission'));
    await c.reply();
    await c.cmd('EHLO client.test');
    await c.starttls();
    await c.cmd('EHLO client.test');
    const r = await c.cmd(`AUTH PLAIN ${authPlain(user, pass)}`);
    return { c, auth: r.text };
  }

  it('an account no quota limits leaves the open-connection counts alone: neither its AUTH nor its close updates them', async () => {
    // No quotas.yaml here, so nothing limits alice's concurrent connections: the session must
    // pass on the auth hook's answer (countedAccount false) and give nothing back at close.
    const store = gw.app!.state.store;
    const seen: string[] = [];
    const incr = store.incr.bind(store);
    store.incr = (key, by, ttlMs, now) => {
      if (key.startsWith('sh:c:')) seen.push(`${key} ${by}`);
      return incr(key, by, ttlMs, now);
    };
    try {
      const { c, auth } = await authed('alice@isp.test', 'alice-secret-1');
      assert.match(auth, /^235 /);
      assert.equal((await c.cmd('MAIL FROM:<alice@isp.test>')).code, 250);
      await c.quit();
      // The close (and any give-back) follows the 221 within milliseconds.
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.deepEqual(seen, [], 'no open-connection count touched');
    } finally {
      store.incr = incr;
    }
  });

  it('refuses a wrong password and a suspended account with 535 5.7.8', async () => {
    const wrong = await authed('alice@isp.test', 'not-her-password');
    assert.match(wrong.auth, /^535 5\.7\.8 /);
    await wrong.c.quit();
    const unknown = await authed('nobody@isp.test', 'whatever-pw');
    assert.match(unknown.auth, /^535 5\.7\.8 /);
    await unknown.c.quit();
    const suspended = await authed('mallory@isp.test', 'mallory-pw-333');
    assert.match(suspended.auth, /^535 5\.7\.8 /);
    await suspended.c.quit();
  });

  it('refuses an envelope sender the account does not own with 553 5.7.1', async () => {
    const { c, auth } = await authed('alice@isp.test', 'alice-secret-1');
    assert.match(auth, /^235 /);
    assert.match((await c.cmd('MAIL FROM:<bob@isp.test>')).text, /^553 5\.7\.1 /);
    assert.match((await c.cmd('MAIL FROM:<alice@isp.test>')).text, /^250 /);
    await c.cmd('RSET');
    // A whole domain listed as "@alice-bakery.test"
    assert.match((await c.cmd('MAIL FROM:<orders@alice-bakery.test>')).text, /^250 /);
    await c.quit();
  });

  it('refuses a header From the account does not own with 550 5.7.1', async () => {
    const { c } = await authed('alice@isp.test', 'alice-secret-1');
    await c.cmd('MAIL FROM:<alice@isp.test>');
    await c.cmd('RCPT TO:<carol@dest.test>');
    const r = await c.data(message({ from: 'ceo@bigbank.test', to: 'carol@dest.test' }));
    assert.match(r.text, /^550 5\.7\.1 /);
    await c.quit();
  });

  it('relays an authenticated submission to the MX, with Received, Date and Message-ID added', async () => {
    const before = mx.messages.length;
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: gw.port('submission'),
      secure: false,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user: 'alice@isp.test', pass: 'alice-secret-1' },
    });
    const info = await transport.sendMail({
      envelope: { from: 'alice@isp.test', to: ['carol@dest.test'] },
      raw: 'From: Alice <alice@isp.test>\r\nTo: carol@dest.test\r\nSubject: hi\r\n\r\nHello Carol.\r\n',
    });
    transport.close();
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as [0-9A-F]+/);
    const queueId = /queued as (\S+)/.exec(info.response)![1]!;
    const got = (await mx.waitFor(before + 1))[before]!;
    assert.equal(got.mailFrom, 'alice@isp.test');
    assert.deepEqual(got.rcptTo, ['carol@dest.test']);
    assert.ok(got.secure, 'delivered over STARTTLS');
    const text = got.data.toString();
    assert.match(text, new RegExp(`^Received: from client|^Received: from [^\\r]*\\r\\n\\tby gw\\.isp\\.test \\(smarthost\\) with ESMTPSA id ${queueId}`));
    assert.match(text, /\r\nDate: /);
    assert.match(text, /\r\nMessage-ID: <[^>]+@gw\.isp\.test>/);
    assert.match(text, /\r\n\r\nHello Carol\.\r\n$/);
  });

  it('accepts on implicit TLS (465) with AUTH', async () => {
    const before = mx.messages.length;
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: gw.port('submissions'),
      secure: true,
      tls: { rejectUnauthorized: false },
      auth: { user: 'bob@isp.test', pass: 'bob-secret-22' },
    });
    await transport.sendMail({ from: 'bob@isp.test', to: 'dave@dest.test', subject: 'x', text: 'via 465' });
    transport.close();
    const got = (await mx.waitFor(before + 1))[before]!;
    assert.equal(got.mailFrom, 'bob@isp.test');
    assert.match(got.data.toString(), /with ESMTPSA id/);
  });

  it('refuses a declared and a transferred oversize message with 552 5.3.4', async () => {
    await gw.stop();
    gw = await startGateway({ config: { limits: { maxMessageSize: '20k' }, relay: { dns: { servers: [dns.server] }, mxPort: mx.port } } });
    const { c } = await authed('alice@isp.test', 'alice-secret-1');
    assert.match((await c.cmd('MAIL FROM:<alice@isp.test> SIZE=50000')).text, /^552 5\.3\.4 /);
    assert.match((await c.cmd('MAIL FROM:<alice@isp.test>')).text, /^250 /);
    await c.cmd('RCPT TO:<carol@dest.test>');
    const big = 'x'.repeat(76) + '\r\n';
    const r = await c.data(`From: <alice@isp.test>\r\n\r\n${big.repeat(400)}.\r\n`);
    assert.match(r.text, /^552 5\.3\.4 /);
    await c.quit();
    const queued = await gw.app!.qmgr.list();
    assert.equal(queued.length, 0, 'nothing spooled');
  });
});
