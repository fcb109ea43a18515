/**
 * Scenario: what happens after the 250. A deferred delivery that succeeds
 * when the MX comes back; a permanent failure that produces an RFC 3464
 * DSN to the sender; a message with three recipients of which one is
 * refused bounces for that one only; queue operations on a running gateway.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';
import { waitUntil } from '../helpers/wait-until';

async function send(gw: TestGateway, from: string, to: string[], body?: string): Promise<string> {
  const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.3' });
  await c.reply();
  await c.cmd('EHLO sender.test');
  assert.match((await c.cmd(`MAIL FROM:<${from}>`)).text, /^250 /);
  for (const t of to) assert.match((await c.cmd(`RCPT TO:<${t}>`)).text, /^250 /);
  const r = await c.data(message({ from, to: to[0]!, body }));
  assert.match(r.text, /^250 /);
  await c.quit();
  return /queued as (\S+)/.exec(r.text)![1]!;
}

/** How long a wait here may take (a bounded poll, test/helpers/wait-until). */
const WAIT_MS = 20_000;

describe('relay outcomes', () => {
  let dns: TestDns;
  let gw: TestGateway;
  let senderMx: TestMx;
  let mxPort: number;

  before(async () => {
    dns = await startDnsServer();
    // The sender's domain has its own MX: DSNs go there.
    senderMx = await startTestMx({ host: '127.0.0.9' });
    mxPort = senderMx.port;
    dns.set('sender.test', 'MX', [{ exchange: 'mx.sender.test', priority: 10 }]);
    dns.set('mx.sender.test', 'A', ['127.0.0.9']);
    dns.set('later.test', 'MX', [{ exchange: 'mx.later.test', priority: 10 }]);
    dns.set('mx.later.test', 'A', ['127.0.0.10']);
    dns.set('strict.test', 'MX', [{ exchange: 'mx.strict.test', priority: 10 }]);
    dns.set('mx.strict.test', 'A', ['127.0.0.11']);
    gw = await startGateway({ config: { relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort, backoff: ['300ms'], connectTimeout: '2s' } } });
  });
  after(async () => {
    await gw.stop();
    await senderMx.close();
    await dns.close();
  });

  it('defers while the MX is down and delivers when it comes back', async () => {
    const id = await send(gw, 'someone@sender.test', ['user@later.test']);
    await waitUntil('a deferral', async () => (await gw.app!.qmgr.entry(id))?.state === 'deferred', WAIT_MS);
    const entry = await gw.app!.qmgr.entry(id);
    assert.ok(entry!.attempts >= 1);
    assert.ok(entry!.lastError, 'last error recorded');
    const later = await startTestMx({ host: '127.0.0.10', port: mxPort });
    try {
      const got = await later.waitFor(1);
      assert.deepEqual(got[0]!.rcptTo, ['user@later.test']);
      await waitUntil('the queue to empty', async () => (await gw.app!.qmgr.entry(id)) === undefined, WAIT_MS);
    } finally {
      await later.close();
    }
  });

  it('bounces a permanent failure for that recipient only, with an RFC 3464 DSN', async () => {
    const strict = await startTestMx({
      host: '127.0.0.11',
      port: mxPort,
      rcptReplies: new Map([['ghost@strict.test', [550, '5.1.1 No such user here']]]),
    });
    try {
      const before = senderMx.messages.length;
      const id = await send(gw, 'someone@sender.test', ['real1@strict.test', 'ghost@strict.test', 'real2@strict.test']);
      const got = await strict.waitFor(1);
      assert.deepEqual(got[0]!.rcptTo.sort(), ['real1@strict.test', 'real2@strict.test']);
      const dsns = await senderMx.waitFor(before + 1);
      const dsn = dsns[before]!;
      assert.equal(dsn.mailFrom, '', 'a DSN has the null sender');
      assert.deepEqual(dsn.rcptTo, ['someone@sender.test']);
      const text = dsn.data.toString();
      assert.match(text, /Content-Type: multipart\/report;[^\r]*\s*report-type="?delivery-status"?/i);
      assert.match(text, /Content-Type: message\/delivery-status/i);
      assert.match(text, /Final-Recipient: rfc822;\s*ghost@strict\.test/i);
      assert.match(text, /Action: failed/i);
      assert.match(text, /Status: 5\.1\.1/);
      assert.doesNotMatch(text, /Final-Recipient: rfc822;\s*real1@strict\.test/i);
      assert.match(text, new RegExp(id));
      await waitUntil('the queue to empty', async () => (await gw.app!.qmgr.entry(id)) === undefined, WAIT_MS);
    } finally {
      await strict.close();
    }
  });

  it('sends no DSN for a bounce of the null sender', async () => {
    const strict = await startTestMx({ host: '127.0.0.11', port: mxPort, rcptReplies: new Map([['ghost@strict.test', [550, '5.1.1 No such user']]]) });
    try {
      const before = senderMx.messages.length;
      const id = await send(gw, '', ['ghost@strict.test']);
      await waitUntil('the bounce to settle', async () => (await gw.app!.qmgr.entry(id)) === undefined, WAIT_MS);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(senderMx.messages.length, before, 'no DSN for <>');
    } finally {
      await strict.close();
    }
  });

  it('holds, releases, flushes and deletes through the admin API', async () => {
    const admin = `http://127.0.0.1:${gw.app!.admin.port}`;
    const call = async (method: string, path: string, token = 'test-admin-token') => {
      const r = await fetch(admin + path, { method, headers: { authorization: `Bearer ${token}` } });
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    };
    assert.equal((await call('GET', '/api/queue', 'wrong')).status, 401);
    // later.test's MX is down again: the message defers and waits.
    const id = await send(gw, 'someone@sender.test', ['user@later.test']);
    await waitUntil('a deferral', async () => (await gw.app!.qmgr.entry(id))?.state === 'deferred', WAIT_MS);
    assert.equal((await call('POST', `/api/queue/${id}/hold`)).status, 200);
    assert.equal((await gw.app!.qmgr.entry(id))?.state, 'hold');
    const list = await call('GET', '/api/queue');
    assert.ok((list.body as unknown as Array<{ id: string }>).some((e) => e.id === id));
    assert.equal((await call('POST', `/api/queue/${id}/release`)).status, 200);
    await waitUntil('back in the schedule', async () => ['incoming', 'active', 'deferred'].includes((await gw.app!.qmgr.entry(id))?.state ?? ''), WAIT_MS);
    assert.equal((await call('POST', '/api/queue/flush')).status, 200);
    await waitUntil('deletable', async () => (await call('POST', `/api/queue/${id}/delete`)).status === 200, WAIT_MS);
    await waitUntil('gone', async () => (await gw.app!.qmgr.entry(id)) === undefined, WAIT_MS);
  });
});
