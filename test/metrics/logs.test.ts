/**
 * Scenario: the logs of a real `smarthost start` (a child process, stdout).
 * With `log.level: info` every line is one JSON object; the session's lines
 * carry its session id (sid), the reception line the queue id, and the
 * delivery line of the same message the same queue id, so one grep follows
 * a message from the 250 to the remote MX. Debug lines stay out (the level
 * comes from the config) and a password never reaches the log. With
 * `log.pretty: true` the same events come out readable (pino-pretty).
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { TestDns } from '../helpers/dns-server';
import { prepareGateway } from '../helpers/gateway';
import { freePort, spawnGateway, type GatewayProcess } from '../helpers/process';
import { authPlain, message, RawSmtp } from '../helpers/smtp-client';
import { startDestination, type TestMx } from '../helpers/test-mx';

type Line = Record<string, unknown> & { level: number; msg: string };

async function gatewayConfig(log: Record<string, unknown>, dnsServer: string, mxPort: number) {
  const intercept = await freePort();
  const submissions = await freePort();
  const admin = await freePort();
  const prepared = await prepareGateway({
    config: {
      log,
      listeners: [
        { name: 'intercept', role: 'intercept', address: '127.0.0.1', port: intercept, security: 'none', greetDelay: '0ms' },
        { name: 'submissions', role: 'submission', address: '127.0.0.1', port: submissions, security: 'implicit' },
      ],
      admin: { address: '127.0.0.1', port: admin, token: 'test-admin-token' },
      relay: { dns: { servers: [dnsServer], timeout: '1s' }, mxPort, backoff: ['30s'] },
      dkim: { enabled: false },
    },
  });
  return { ...prepared, ports: { intercept, submissions, admin } };
}

describe('logs: JSON lines with sid and queueId, level from config, pretty mode', () => {
  let dns: TestDns;
  let mx: TestMx;
  const dirs: string[] = [];
  const children: GatewayProcess[] = [];

  before(async () => {
    ({ dns, mx } = await startDestination());
  });
  after(async () => {
    for (const c of children) await c.kill();
    await mx?.close();
    await dns?.close();
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  });

  it('JSON lines: sid on session events, the same queueId on reception and delivery, no debug, no password', async () => {
    const g = await gatewayConfig({ level: 'info', pretty: false }, dns.server, mx.port);
    dirs.push(g.dir);
    const gw = await spawnGateway(g.configFile, g.ports.admin);
    children.push(gw);

    // Accepted and delivered.
    let c = await RawSmtp.connect(g.ports.intercept, { localAddress: '127.0.0.5' });
    assert.equal((await c.reply()).code, 220);
    await c.cmd('EHLO home.test');
    assert.equal((await c.cmd('MAIL FROM:<a@home.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<erin@dest.test>')).code, 250);
    assert.equal((await c.data(message({ from: 'a@home.test', to: 'erin@dest.test' }))).code, 250);
    await c.quit();
    // Refused: outside the netblocks.
    c = await RawSmtp.connect(g.ports.intercept, { localAddress: '127.0.0.20' });
    const greet = await c.reply();
    if (greet.code === 220) {
      await c.cmd('EHLO elsewhere.test');
      await c.cmd('MAIL FROM:<x@elsewhere.test>');
      await c.cmd('RCPT TO:<erin@dest.test>');
    }
    await c.quit();
    // A wrong password.
    c = await RawSmtp.connect(g.ports.submissions, { localAddress: '127.0.0.5', implicitTls: true });
    assert.equal((await c.reply()).code, 220);
    await c.cmd('EHLO laptop.test');
    assert.equal((await c.cmd(`AUTH PLAIN ${authPlain('bob@isp.test', 'Wrong-Secret-4711')}`)).code, 535);
    await c.quit();

    await mx.waitFor(1);
    await gw.waitForOutput(/"evt":"delivery"/);
    await gw.waitForOutput(/"evt":"auth"/);
    await gw.waitForOutput(/"evt":"rejection"/);

    const text = gw.output();
    const lines: Line[] = text
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => {
        try {
          return JSON.parse(l) as Line;
        } catch {
          assert.fail(`not a JSON line: ${l}`);
        }
      });
    for (const l of lines) {
      assert.equal(typeof l.time, 'number');
      assert.equal(typeof l.pid, 'number');
      assert.ok(l.level >= 30, `a line below info: ${JSON.stringify(l)}`);
    }
    const reception = lines.find((l) => l.evt === 'reception');
    assert.ok(reception, text);
    assert.match(String(reception.sid), /\S/);
    assert.match(String(reception.queueId), /\S/);
    const delivery = lines.find((l) => l.evt === 'delivery');
    assert.ok(delivery, text);
    assert.equal(delivery.queueId, reception.queueId, 'reception and delivery carry the same queue id');
    for (const evt of ['rejection', 'auth']) {
      const l = lines.find((x) => x.evt === evt);
      assert.ok(l, `${evt}: ${text}`);
      assert.match(String(l.sid), /\S/, `${evt} without sid`);
    }
    assert.notEqual(lines.find((l) => l.evt === 'rejection')!.sid, reception.sid, 'one sid per session');
    assert.doesNotMatch(text, /Wrong-Secret-4711/);
  });

  it('log.pretty: true gives readable lines (pino-pretty)', async () => {
    const g = await gatewayConfig({ level: 'info', pretty: true }, dns.server, mx.port);
    dirs.push(g.dir);
    const gw = await spawnGateway(g.configFile, g.ports.admin);
    children.push(gw);
    await gw.waitForOutput(/smarthost started/);
    const text = gw.output().replace(/\x1b\[[0-9;]*m/g, ''); // colours, when stdout is a terminal
    const line = text.split('\n').find((l) => l.includes('smarthost started'))!;
    assert.ok(!line.trimStart().startsWith('{'), `still JSON: ${line}`);
    assert.match(line, /INFO/);
    assert.match(line, /\d{2}:\d{2}:\d{2}/, 'a human-readable time');
    await gw.kill('SIGTERM');
  });
});
