/**
 * Scenario: POP-before-SMTP. The gateway follows a mailbox server log in
 * Dovecot's exact format; a pop3-login line for alice from 127.0.0.7 makes
 * that address relay as alice on the intercept listener (her sender
 * identity applies: she may not send as bob; Received: says ESMTPA and
 * names no one else), the grant expires after its TTL, and the admin API
 * grants the same way. Off by default.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseLoginLine } from '../../src/roles/dovecot-log';
import { RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';
import { BASE_LISTENERS, startRoleGateway, waitUntil, type RoleGateway } from './helpers';

const TTL_MS = 1500;

function dovecotLine(user: string, ip: string): string {
  // Debian's dovecot-pop3d, logging through syslog.
  return `Nov 28 16:50:01 mail dovecot: pop3-login: Login: user=<${user}>, method=PLAIN, rip=${ip}, lip=127.0.0.1, mpid=4242, secured, session=<kW3d1Z4M4tR/AAAB>\n`;
}

async function mailFrom(gw: RoleGateway, ip: string, from: string): Promise<string> {
  const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: ip });
  await c.reply();
  await c.cmd('EHLO legacy-client');
  const r = (await c.cmd(`MAIL FROM:<${from}>`)).text;
  await c.quit();
  return r;
}

async function admin(gw: RoleGateway, method: string, p: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${gw.app.admin.port}${p}`, {
    method,
    headers: { authorization: 'Bearer test-admin-token', 'content-type': 'application/json' },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('POP-before-SMTP', { timeout: 30_000 }, () => {
  let gw: RoleGateway;
  let mx: TestMx;
  let logFile: string;

  before(async () => {
    mx = await startTestMx({ host: '127.0.0.42' });
    gw = await startRoleGateway(
      {
        config: {
          dkim: { enabled: false },
          listeners: BASE_LISTENERS,
          relay: { routes: { 'dest.test': { host: '127.0.0.42', port: mx.port, tlsLevel: 'none' } } },
          roles: { popBeforeSmtp: { enabled: true, listeners: ['intercept'], ttl: `${TTL_MS}ms`, logFile: 'mail.log', poll: '50ms', userDomain: 'isp.test' } },
        },
      },
      { 'mail.log': 'Nov 28 16:49:00 mail dovecot: master: Dovecot v2.3 starting up\n' },
    );
    logFile = path.join(gw.dir, 'mail.log');
  });
  after(async () => {
    await gw.stop();
    await mx.close();
  });

  it('reads Dovecot login lines (pop3 and imap)', () => {
    assert.deepEqual(parseLoginLine(dovecotLine('alice', '192.0.2.7').trimEnd(), 'syslog'), { user: 'alice', ip: '192.0.2.7' });
    assert.deepEqual(
      parseLoginLine('Nov 28 10:00:00 mail dovecot: imap-login: Login: user=<bob@isp.test>, method=PLAIN, rip=2001:db8::7, lip=2001:db8::1, mpid=1, TLS, session=<x>', 'syslog'),
      { user: 'bob@isp.test', ip: '2001:db8::7' },
    );
    assert.equal(parseLoginLine('Nov 28 10:00:00 mail dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<alice>, method=PLAIN, rip=192.0.2.7', 'syslog'), undefined);
  });

  it('grants relay as the account after a login line, then expires', async () => {
    // No grant: an intercept subscriber with no sender identity configured.
    assert.match(await mailFrom(gw, '127.0.0.7', 'bob@isp.test'), /^250 /);

    await fsp.appendFile(logFile, dovecotLine('alice', '127.0.0.7'));
    await waitUntil('the grant', async () => (await admin(gw, 'GET', '/api/pop-grants?ip=127.0.0.7&user=alice')).body.granted === true, 3000);
    const t0 = Date.now();

    // Granted: the client is alice; her identity rules apply.
    assert.match(await mailFrom(gw, '127.0.0.7', 'bob@isp.test'), /^553 5\.7\.1 /);
    // Another address is not granted.
    assert.match(await mailFrom(gw, '127.0.0.8', 'bob@isp.test'), /^250 /);

    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.7' });
    await c.reply();
    await c.cmd('EHLO legacy-client');
    assert.match((await c.cmd('MAIL FROM:<alice@isp.test>')).text, /^250 /);
    assert.match((await c.cmd('RCPT TO:<friend@dest.test>')).text, /^250 /);
    assert.match((await c.data('From: alice@isp.test\r\nSubject: hi\r\n\r\nbody\r\n.\r\n')).text, /^250 /);
    await c.quit();
    const [m] = await mx.waitFor(1, 5000);
    assert.match(m!.data.toString(), /^Received: from legacy-client \(\[127\.0\.0\.7\]\)\r\n\tby gw\.isp\.test \(smarthost\) with ESMTPA /);

    // Expired: back to what the address alone may do.
    const left = TTL_MS - (Date.now() - t0);
    await new Promise((r) => setTimeout(r, Math.max(0, left) + 200));
    assert.equal((await admin(gw, 'GET', '/api/pop-grants?ip=127.0.0.7&user=alice')).body.granted, false);
    assert.match(await mailFrom(gw, '127.0.0.7', 'bob@isp.test'), /^250 /);
  });

  it('grants through the admin API; unknown accounts are refused', async () => {
    const r = await admin(gw, 'POST', '/api/pop-grants', { user: 'alice@isp.test', ip: '127.0.0.9' });
    assert.equal(r.status, 200);
    assert.equal(r.body.account, 'alice@isp.test');
    assert.match(await mailFrom(gw, '127.0.0.9', 'bob@isp.test'), /^553 5\.7\.1 /);
    assert.match(await mailFrom(gw, '127.0.0.9', 'alice@isp.test'), /^250 /);
    assert.equal((await admin(gw, 'POST', '/api/pop-grants', { user: 'nobody', ip: '127.0.0.9' })).status, 400);
  });

  it('GET by address lists its grants; a missing or bad ip, or an empty user=, is a 400 (never the user "@domain")', async () => {
    assert.equal((await admin(gw, 'POST', '/api/pop-grants', { user: 'alice', ip: '127.0.0.10' })).status, 200);
    const listed = await admin(gw, 'GET', '/api/pop-grants?ip=127.0.0.10');
    assert.equal(listed.status, 200);
    assert.equal(listed.body.ip, '127.0.0.10');
    const grants = listed.body.grants as Array<{ user: string; ttlMs: number }>;
    assert.deepEqual(grants.map((g) => g.user), ['alice@isp.test']);
    assert.ok(grants[0]!.ttlMs > 0 && grants[0]!.ttlMs <= TTL_MS, String(grants[0]!.ttlMs));
    assert.ok(!('user' in listed.body), JSON.stringify(listed.body));
    assert.deepEqual((await admin(gw, 'GET', '/api/pop-grants?ip=127.0.0.11')).body.grants, []);
    for (const q of ['', '?user=alice', '?ip=not-an-ip', '?ip=127.0.0.10&user=', '?ip=127.0.0.10&user=%20']) {
      const r = await admin(gw, 'GET', `/api/pop-grants${q}`);
      assert.equal(r.status, 400, `${q}: ${JSON.stringify(r.body)}`);
      assert.equal(typeof r.body.error, 'string');
    }
    // By account, as before.
    assert.equal((await admin(gw, 'GET', '/api/pop-grants?ip=127.0.0.10&user=alice')).body.granted, true);
  });

  it('is off by default', async () => {
    const other = await startRoleGateway({ config: { dkim: { enabled: false }, listeners: BASE_LISTENERS } });
    try {
      const res = await fetch(`http://127.0.0.1:${other.app.admin.port}/api/pop-grants`, {
        method: 'POST',
        headers: { authorization: 'Bearer test-admin-token', 'content-type': 'application/json' },
        body: JSON.stringify({ user: 'alice@isp.test', ip: '127.0.0.9' }),
      });
      assert.equal(res.status, 409);
      await res.body?.cancel();
    } finally {
      await other.stop();
    }
  });
});
