/**
 * Scenario: a residential subscriber on the intercept listener (127.0.0.3,
 * netblock class residential-dynamic) and a business account on submission
 * send to the same domain; they must leave from different egress pools, as
 * seen by the recipient's MX (127.0.0.2): the client address and the EHLO
 * name. The pool is chosen at acceptance and kept with the message: after a
 * deferral and a restart with the selection swapped, each message still
 * leaves from the pool it was accepted for.
 *
 * A message a policy rule held at acceptance leaves, once the abuse desk
 * releases it, from the quarantine pool.
 *
 *   business     127.0.0.10   EHLO out-biz.isp.test
 *   residential  127.0.0.11   EHLO out-res.isp.test
 *   quarantine   127.0.0.12   EHLO out-q.isp.test
 */
import path from 'node:path';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { build, type App } from '../../src/app';
import { loadConfigFile } from '../../src/config/load';
import { createLogger } from '../../src/log';
import type { TestDns } from '../helpers/dns-server';
import { DEFAULT_ACCOUNTS, prepareGateway } from '../helpers/gateway';
import { authPlain, message, RawSmtp } from '../helpers/smtp-client';
import { startDestination, type TestMx } from '../helpers/test-mx';
import { waitUntil } from '../helpers/wait-until';

const POOLS = {
  business: { addresses: ['127.0.0.10'], heloName: 'out-biz.isp.test' },
  residential: { addresses: ['127.0.0.11'], heloName: 'out-res.isp.test' },
  quarantine: { addresses: ['127.0.0.12'], heloName: 'out-q.isp.test' },
};

/** Mail from suspect@home.test is accepted into the hold queue (rule sender.suspect). */
const RULES = `stages:
  mail:
    - id: sender.suspect
      check: sender-list
      file: lists/suspects.txt
      onMatch: hold
`;

describe('egress pools by subscriber class and plan', () => {
  let dns: TestDns;
  let mx: TestMx;
  let dir: string;
  let configFile: string;
  let app: App | undefined;

  async function start(): Promise<App> {
    const cfg = loadConfigFile(configFile);
    const a = await build(cfg, { logger: createLogger({ level: cfg.log.level, pretty: false }), scanIntervalMs: 200 });
    await a.start();
    return a;
  }

  before(async () => {
    ({ dns, mx } = await startDestination());
    ({ dir, configFile } = await prepareGateway({
      accounts: [...DEFAULT_ACCOUNTS, { name: 'shop@biz.test', password: 'shop-secret-77', senders: ['shop@biz.test'], plan: 'business' }],
      config: {
        relay: {
          dns: { servers: [dns.server], timeout: '1s' },
          mxPort: mx.port,
          backoff: ['1s'],
          poolIdle: '0ms',
          pools: POOLS,
          poolSelection: { byPlan: { business: 'business' }, byClass: { 'residential-dynamic': 'residential' }, quarantine: 'quarantine' },
        },
      },
    }));
    await fsp.mkdir(path.join(dir, 'policies', 'lists'));
    await fsp.writeFile(path.join(dir, 'policies', 'lists', 'suspects.txt'), 'suspect@home.test\n');
    await fsp.writeFile(path.join(dir, 'policies', 'rules.yaml'), RULES);
  });
  after(async () => {
    await app?.stop();
    await mx.close();
    await dns.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('residential intercept and business submission leave from different pools, also after a restart', async () => {
    app = await start();
    // The MX tempfails at first: both messages are deferred with their pool recorded.
    mx.options.mailReply = [451, '4.3.0 Try again later'];

    const home = await RawSmtp.connect(app.port('intercept'), { localAddress: '127.0.0.3' });
    await home.reply();
    await home.cmd('EHLO home.test');
    assert.match((await home.cmd('MAIL FROM:<someone@home.test>')).text, /^250 /);
    assert.match((await home.cmd('RCPT TO:<res@dest.test>')).text, /^250 /);
    assert.match((await home.data(message({ from: 'someone@home.test', to: 'res@dest.test' }))).text, /^250 /);
    await home.quit();

    const shop = await RawSmtp.connect(app.port('submission'));
    await shop.reply();
    await shop.cmd('EHLO shop.test');
    await shop.starttls();
    await shop.cmd('EHLO shop.test');
    assert.match((await shop.cmd(`AUTH PLAIN ${authPlain('shop@biz.test', 'shop-secret-77')}`)).text, /^235 /);
    assert.match((await shop.cmd('MAIL FROM:<shop@biz.test>')).text, /^250 /);
    assert.match((await shop.cmd('RCPT TO:<biz@dest.test>')).text, /^250 /);
    assert.match((await shop.data(message({ from: 'shop@biz.test', to: 'biz@dest.test' }))).text, /^250 /);
    await shop.quit();

    const running = app;
    await waitUntil('both messages deferred', async () => {
      const q = await running.qmgr.list();
      return q.length === 2 && q.every((e) => e.attempts >= 1);
    });
    await app.stop();
    app = undefined;

    // Swap the selection: were the pool chosen again at delivery, each message would now leave from the other pool.
    const doc = YAML.parse(await fsp.readFile(configFile, 'utf8')) as { relay: Record<string, unknown> };
    doc.relay.poolSelection = { byPlan: { business: 'residential' }, byClass: { 'residential-dynamic': 'business' }, quarantine: 'quarantine' };
    await fsp.writeFile(configFile, YAML.stringify(doc));
    mx.options.mailReply = undefined;
    app = await start();

    const got = await mx.waitFor(2);
    const seen = new Map(got.map((m) => [m.rcptTo[0], `${m.remoteAddress} ${m.helo}`]));
    assert.equal(seen.get('res@dest.test'), '127.0.0.11 out-res.isp.test', 'residential intercept client');
    assert.equal(seen.get('biz@dest.test'), '127.0.0.10 out-biz.isp.test', 'business account on submission');
  });

  it('a held message, once released, leaves from the quarantine pool', async () => {
    assert.ok(app, 'gateway running (previous test)');
    const running = app;
    const before = mx.messages.length;
    const home = await RawSmtp.connect(running.port('intercept'), { localAddress: '127.0.0.3' });
    await home.reply();
    await home.cmd('EHLO home.test');
    assert.match((await home.cmd('MAIL FROM:<suspect@home.test>')).text, /^250 /);
    assert.match((await home.cmd('RCPT TO:<held@dest.test>')).text, /^250 /);
    assert.match((await home.data(message({ from: 'suspect@home.test', to: 'held@dest.test' }))).text, /^250 /);
    await home.quit();
    const held = (await running.qmgr.list()).find((e) => e.state === 'hold');
    assert.ok(held, 'the message is in the hold queue');
    assert.equal(held.holdReason, 'sender.suspect');
    assert.equal(mx.messages.length, before, 'nothing delivered while held');

    assert.ok(await running.qmgr.release(held.id));
    const got = await mx.waitFor(before + 1);
    const m = got.at(-1)!;
    assert.deepEqual([m.rcptTo[0], m.remoteAddress, m.helo], ['held@dest.test', '127.0.0.12', 'out-q.isp.test']);
  });
});
