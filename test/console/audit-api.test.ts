/**
 * The admin audit log covers the API too: an operator's `POST
 * /api/queue/ID/hold` is a line naming the operator token, the route and the
 * message; the read-only token's refused attempt is a line with ok: false;
 * views (GET) are not logged. Both are counted in smarthost_admin_actions_total.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { message, RawSmtp } from '../helpers/smtp-client';

describe('admin audit log: API calls', () => {
  let gw: TestGateway;
  let readToken: string;
  before(async () => {
    // No DNS answers for dest.test: the message waits in the queue to be held.
    gw = await startGateway({ config: { admin: { address: '127.0.0.1', port: 0, token: 'test-admin-token', readTokenFile: 'read.token' }, relay: { dns: { servers: ['127.0.0.1:9'], timeout: '200ms' }, backoff: ['1h'] } } });
    readToken = (await fsp.readFile(path.join(gw.dir, 'read.token'), 'utf8')).trim();
  });
  after(() => gw.stop());

  const api = (token: string, method: string, p: string) => fetch(`http://127.0.0.1:${gw.app!.admin.port}${p}`, { method, headers: { authorization: `Bearer ${token}` } });

  it('an operator hold and a refused read-only release are on record; a view is not', async () => {
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.2' });
    await c.reply();
    await c.cmd('EHLO pc');
    await c.cmd('MAIL FROM:<me@home.test>');
    await c.cmd('RCPT TO:<you@dest.test>');
    const r = await c.data(message({ from: 'me@home.test', to: 'you@dest.test' }));
    await c.quit();
    const id = /queued as (\S+)/.exec(r.text)![1]!;
    assert.equal((await api('test-admin-token', 'GET', '/api/queue')).status, 200);
    assert.equal((await api('test-admin-token', 'POST', `/api/queue/${id}/hold`)).status, 200);
    assert.equal((await api(readToken, 'POST', `/api/queue/${id}/release`)).status, 403);
    const lines = (await fsp.readFile(path.join(gw.dir, 'spool', 'admin-audit.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.map((l) => [l.token, l.action, l.subject, l.ok, l.detail]),
      [
        ['operator', 'POST /api/queue/:id/:op', id, true, 'api hold: HTTP 200'],
        ['read', 'POST /api/queue/:id/:op', id, false, 'api release: HTTP 403'],
      ],
    );
    assert.ok(lines.every((l) => !String(l.action).startsWith('GET')), 'views are not logged');
    assert.ok(!JSON.stringify(lines).includes('test-admin-token') && !JSON.stringify(lines).includes(readToken), 'no token in the log');
    const metrics = await (await fetch(`http://127.0.0.1:${gw.app!.admin.port}/metrics`)).text();
    assert.match(metrics, /smarthost_admin_actions_total\{action="POST \/api\/queue\/:id\/:op",token="read"\} 1/);
  });
});
