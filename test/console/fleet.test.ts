/**
 * The senders page is fleet-wide where the state is shared: two gateways on
 * one (private) Redis, node b itself a primary with two worker processes.
 * Mail accepted only by node b's workers shows on node a's console: in the
 * senders by volume, in the senders by containment score (scored by b's
 * workers, re-assessed by a), and on the sender's page as its recipient
 * domains, never its addresses until the operator opens them (audited on a).
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startTestMx, type TestMx } from '../helpers/test-mx';
import { ADMIN_TOKEN, eventually, interceptClient, startNode, type FleetNode } from '../fleet/fleet-helpers';
import { startRedis, uniquePrefix, type PrivateRedis } from '../fleet/redis-server';
import { message } from '../helpers/smtp-client';
import { consoleLogin, section, type ConsoleSession } from './console-session';

// Two new recipients in an hour fire a signal (score 1) far below any response.
const CONTAINMENT = `
defaults: { newRecipientsPerHour: 2, responses: { throttle: 5, hold: 6, suspend: 7 } }
plans: { residential: {} }
defaultPlan: residential
`;

describe('the console across a fleet', { timeout: 90_000 }, () => {
  let redis: PrivateRedis;
  let dns: TestDns;
  let mx: TestMx;
  let a: FleetNode;
  let b: FleetNode;
  let desk: ConsoleSession;

  /** One message from `ip` through `node` to `rcpts`: its final reply. */
  async function submit(node: FleetNode, ip: string, rcpts: string[]): Promise<string> {
    const c = await interceptClient(node.intercept, ip);
    await c.cmd('MAIL FROM:<someone@home.test>');
    for (const r of rcpts) assert.match((await c.cmd(`RCPT TO:<${r}>`)).text, /^250 /);
    const d = await c.data(message({ from: 'someone@home.test', to: rcpts[0]! }));
    await c.quit();
    return d.text;
  }

  before(async () => {
    redis = await startRedis();
    dns = await startDnsServer();
    mx = await startTestMx({ host: '127.0.0.2' });
    for (const d of ['far.test', 'near.test']) {
      dns.set(d, 'MX', [{ exchange: `mx.${d}`, priority: 10 }]);
      dns.set(`mx.${d}`, 'A', ['127.0.0.2']);
    }
    const spec = (name: string, config?: Record<string, unknown>) => ({
      name,
      config,
      // Exact counts across the two gateways: on a loaded machine the default 250 ms command
      // timeout can flip a node to counting locally (its counts then missing from Redis, or
      // replayed twice), as in fleet/two-nodes. The outage below is a SIGKILL, seen at once.
      state: { backend: 'redis', failMode: 'open', keyPrefix: uniquePrefix('console'), redis: { url: redis.url, commandTimeout: '5s' } },
      policyFiles: { 'containment.yaml': CONTAINMENT },
      relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port },
    });
    const shared = spec('a');
    [a, b] = await Promise.all([startNode(shared), startNode({ ...spec('b', { process: { workers: 2 } }), state: shared.state })]);
    desk = await consoleLogin(`http://127.0.0.1:${a.adminPort}`, ADMIN_TOKEN);
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await mx?.close();
    await dns?.close();
    await redis?.close();
  });

  it('lists a sender seen only by the other gateway (by volume and by score), with its recipient domains', async () => {
    assert.match(await submit(b, '127.0.0.9', ['x1@far.test', 'x2@far.test', 'x3@far.test', 'y1@near.test']), /^250 /);
    assert.match(await submit(a, '127.0.0.8', ['z1@near.test']), /^250 /);
    const page = await desk.get('/console/senders');
    assert.equal(page.status, 200);
    const volume = section(page.html, 'Top by volume');
    assert.match(volume, /ip:127\.0\.0\.9 4 .*ip:127\.0\.0\.8 1/, 'b\'s sender, most recipients first');
    const score = section(page.html, 'Top by containment score now');
    assert.match(score, /ip:127\.0\.0\.9 1 none newRecipientsPerHour/, 'scored on b, re-assessed now on a');
    assert.doesNotMatch(score, /127\.0\.0\.8/, 'one new recipient scores nothing');
    // Nothing of it is in a's own hold queue or spool: the picture came from Redis.
    assert.match(section(page.html, 'Top by held messages'), /No held messages/);

    const sender = await desk.get('/console/sender?ip=127.0.0.9');
    assert.match(section(sender.html, 'Recipient domains'), /far\.test 3 near\.test 1/);
    assert.doesNotMatch(sender.html, /x1@far\.test/, 'domains, not addresses');
  });

  it('opens the addresses only on an explicit, audited request with a reason', async () => {
    assert.equal((await desk.post('/console/sender/recipients', { ip: '127.0.0.9', reason: '' })).status, 400);
    const opened = await desk.post('/console/sender/recipients', { ip: '127.0.0.9', reason: 'ticket 51: complaint from far.test' });
    assert.equal(opened.status, 200);
    const shown = section(opened.html, 'Recipient addresses');
    for (const r of ['x1@far.test', 'x2@far.test', 'x3@far.test', 'y1@near.test']) assert.ok(shown.includes(r), r);
    const audit = (await fsp.readFile(path.join(a.dir, 'spool', 'admin-audit.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(audit.some((l) => l.action === 'open-recipients' && l.subject === 'ip:127.0.0.9' && l.reason === 'ticket 51: complaint from far.test' && l.token === 'operator'));
  });

  it('reloads the policy of every gateway of the fleet from one console', async () => {
    assert.equal((await desk.post('/console/policy/reload', { reason: 'ticket 52: new netblocks' })).status, 303);
    const flash = /class="flash"[^>]*>Done: ([^<]*)</.exec((await desk.get('/console/policy')).html)?.[1] ?? '';
    assert.match(flash, /^reloaded: /);
    assert.equal(flash.match(/: version 2/g)?.length, 2, `both gateways answered with version 2: ${flash}`);
    const audit = (await fsp.readFile(path.join(a.dir, 'spool', 'admin-audit.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(audit.some((l) => l.action === 'reload' && l.ok && l.reason === 'ticket 52: new netblocks'));
  });

  it('says so when the shared state is away (fail open: this process\'s own counts), and held mail still works', async () => {
    await redis.kill();
    try {
      const page = await eventually(() => desk.get('/console/senders'), (p) => /unavailable/.test(p.html), 10_000, 'the outage note');
      assert.equal(page.status, 200);
      assert.match(page.html, /role="alert">The shared state store \(redis\) is unavailable since [^<]*only what this process counted meanwhile/);
      assert.equal((await desk.get('/console/held')).status, 200);
    } finally {
      await redis.start();
    }
  });
});
