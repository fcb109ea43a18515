/**
 * `admin.console: false` takes the console off the admin listener (404, the
 * API still answers); on, a page without a session goes to the login form;
 * over TLS the session cookie is also Secure.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { describe, it } from 'node:test';
import { startGateway } from '../helpers/gateway';
import { freePort } from '../helpers/process';
import { consoleLogin, section } from './console-session';

async function get(port: number, p: string): Promise<Response> {
  return fetch(`http://127.0.0.1:${port}${p}`, { redirect: 'manual', headers: { authorization: 'Bearer test-admin-token' } });
}

describe('admin.console', () => {
  it('false: no console pages, the API as before', async () => {
    const gw = await startGateway({ config: { admin: { address: '127.0.0.1', port: 0, token: 'test-admin-token', console: false } } });
    try {
      for (const p of ['/console', '/console/login', '/console/held']) assert.equal((await get(gw.app!.admin.port, p)).status, 404, p);
      assert.equal((await get(gw.app!.admin.port, '/api/queue')).status, 200);
    } finally {
      await gw.stop();
    }
  });

  it('on by default: without a session every page leads to the login form, even with the API bearer token', async () => {
    const gw = await startGateway();
    try {
      const r = await get(gw.app!.admin.port, '/console/held');
      assert.equal(r.status, 303);
      assert.equal(r.headers.get('location'), '/console/login');
      const login = await get(gw.app!.admin.port, '/console/login');
      assert.equal(login.status, 200);
      assert.match(login.headers.get('content-security-policy') ?? '', /script-src 'none'/);
    } finally {
      await gw.stop();
    }
  });

  it('over TLS the session cookie is Secure (and HttpOnly, SameSite=Strict, Path=/console)', async () => {
    const gw = await startGateway({ config: { admin: { address: '127.0.0.1', port: 0, token: 'test-admin-token', tls: { cert: 'tls.crt', key: 'tls.key' } } } });
    try {
      const ca = await fsp.readFile(path.join(gw.dir, 'tls.crt'));
      const request = (method: string, headers: Record<string, string>, body = '') =>
        new Promise<{ status: number; cookies: string[]; text: string }>((resolve, reject) => {
          const req = https.request({ host: '127.0.0.1', port: gw.app!.admin.port, method, path: '/console/login', ca, servername: 'localhost', headers }, (res) => {
            let text = '';
            res.on('data', (d: Buffer) => (text += d.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, cookies: [res.headers['set-cookie'] ?? []].flat(), text }));
          });
          req.once('error', reject);
          req.end(body);
        });
      // The login form first: its CSRF value, in the form and in a cookie (double submit).
      const form = await request('GET', {});
      const csrf = /name="_csrf" value="([\w-]+)"/.exec(form.text)![1]!;
      const loginCookie = form.cookies.find((c) => c.startsWith('smarthost_console_login='))!;
      assert.ok(loginCookie.split('; ').includes('Secure') && loginCookie.split('; ').includes('SameSite=Strict'), loginCookie);
      const { status, cookies } = await request(
        'POST',
        { 'content-type': 'application/x-www-form-urlencoded', cookie: loginCookie.split(';')[0]! },
        `token=test-admin-token&_csrf=${csrf}`,
      );
      const cookie = cookies.find((c) => c.startsWith('smarthost_console=')) ?? '';
      assert.equal(status, 303);
      assert.match(cookie, /^smarthost_console=[\w-]{43};/);
      for (const attr of ['Secure', 'HttpOnly', 'SameSite=Strict', 'Path=/console']) assert.ok(cookie.split('; ').includes(attr), `${attr} in ${cookie}`);
    } finally {
      await gw.stop();
    }
  });

  it('empty and error states: a fresh gateway\'s pages say there is nothing yet; Redis away with failMode closed is a clear 503 on the senders pages, held mail still works', async () => {
    const fresh = await startGateway();
    try {
      const desk = await consoleLogin(`http://127.0.0.1:${fresh.app!.admin.port}`, 'test-admin-token');
      const senders = await desk.get('/console/senders');
      assert.match(section(senders.html, 'Top by containment score now'), /No sender has a containment score above zero/);
      assert.match(section(senders.html, 'Top by volume'), /No mail accepted in the last hour/);
      assert.match(section(senders.html, 'Top by held messages'), /No held messages/);
      assert.match((await desk.get('/console/sender?account=nobody%40isp.test')).html, /no such account[\s\S]*No mail accepted from this sender in the last 24 hours/);
      assert.match((await desk.get('/console/audit')).html, /No actions yet/);
      const noSubject = await desk.get('/console/sender');
      assert.equal(noSubject.status, 400);
      assert.match(noSubject.html, /role="alert">give an account or an address/);
      assert.equal((await desk.post('/console/sender', { account: 'alice@isp.test', op: 'suspend', reason: ' ' })).status, 400, 'a suspension needs a reason');
    } finally {
      await fresh.stop();
    }
    const port = await freePort(); // nothing listens: Redis is away from the start
    const closed = await startGateway({ config: { state: { backend: 'redis', failMode: 'closed', redis: { url: `redis://127.0.0.1:${port}`, connectTimeout: '200ms' } } } });
    try {
      const desk = await consoleLogin(`http://127.0.0.1:${closed.app!.admin.port}`, 'test-admin-token');
      const senders = await desk.get('/console/senders');
      assert.equal(senders.status, 503);
      assert.match(senders.html, /role="alert">The shared state store is unavailable \(state\.failMode: closed\)/);
      assert.equal((await desk.get('/console/held')).status, 200);
    } finally {
      await closed.stop();
    }
  });
});
