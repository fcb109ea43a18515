/**
 * `admin.console: false` takes the console off the admin listener (404, the
 * API still answers); on, a page without a session goes to the login form.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startGateway } from '../helpers/gateway';

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
});
