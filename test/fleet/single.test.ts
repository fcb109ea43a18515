/**
 * A gateway on its own (state.backend: memory, the default) is a fleet of
 * one: /api/fleet describes it, quota clears and reload act on it, a
 * fleet-wide suspension is refused with 409 (the CLI suspends in the
 * accounts file), and /readyz has nothing to say about the state store.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { message, RawSmtp } from '../helpers/smtp-client';

const QUOTAS = `
plans:
  residential: { messagesPerHour: 1 }
classPlans: { residential-dynamic: residential }
`;

describe('fleet routes on a single gateway (memory state)', { timeout: 30_000 }, () => {
  let gw: TestGateway;
  const api = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(`http://127.0.0.1:${gw.app!.admin.port}${path}`, {
      method,
      headers: { authorization: 'Bearer test-admin-token', 'content-type': 'application/json' },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  };

  before(async () => {
    gw = await startGateway({ policyFiles: { 'quotas.yaml': QUOTAS }, config: { relay: { dns: { servers: ['127.0.0.1:9'], timeout: '200ms' } } } });
  });
  after(async () => {
    await gw.stop();
  });

  async function sendFrom(ip: string): Promise<string> {
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: ip });
    await c.reply();
    await c.cmd('EHLO x.test');
    await c.starttls();
    await c.cmd('EHLO x.test');
    const m = await c.cmd('MAIL FROM:<a@home.test>');
    if (m.code !== 250) {
      await c.quit();
      return m.text;
    }
    await c.cmd('RCPT TO:<b@dest.test>');
    const r = await c.data(message({ from: 'a@home.test', to: 'b@dest.test' }));
    await c.quit();
    return r.text;
  }

  it('describes itself and the state store', async () => {
    const r = await api('GET', '/api/fleet');
    assert.equal(r.status, 200);
    assert.equal(r.body.shared, false);
    assert.equal((r.body.nodes as unknown[]).length, 1);
    assert.deepEqual(r.body.state, { backend: 'memory', failMode: 'open', degraded: false, journal: 0, dropped: 0, outages: 0 });
    const ready = await fetch(`http://127.0.0.1:${gw.app!.admin.port}/readyz`);
    assert.deepEqual(await ready.json(), { ready: true });
    assert.equal(gw.app!.state.degraded(), false);
  });

  it('clears a quota here', async () => {
    assert.match(await sendFrom('127.0.0.5'), /^250 /);
    assert.match(await sendFrom('127.0.0.5'), /^451 4\.7\.1 /);
    const r = await api('POST', '/api/fleet/quotas/clear', { ip: '127.0.0.5', limits: ['messagesPerHour'] });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.cleared, ['sh:q:{ip:127.0.0.5}:messagesPerHour']);
    assert.match(await sendFrom('127.0.0.5'), /^250 /);
    assert.equal((await api('POST', '/api/fleet/quotas/clear', { ip: '127.0.0.5', limits: ['maxMessageSize'] })).status, 400);
    assert.equal((await api('POST', '/api/fleet/quotas/clear', { account: 'a', ip: '127.0.0.5' })).status, 400);
  });

  it('refuses a fleet-wide suspension without a shared store, and reloads itself', async () => {
    const s = await api('POST', '/api/fleet/accounts/alice@isp.test/suspend', {});
    assert.equal(s.status, 409);
    assert.match(String(s.body.error), /state\.backend: redis/);
    const r = await api('POST', '/api/fleet/reload', {});
    assert.equal(r.status, 200);
    assert.equal((r.body.results as Array<{ ok: boolean; version: number }>)[0]!.version, 2);
  });
});
