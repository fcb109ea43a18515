/**
 * Journal settling (src/spool/journal-settle.ts) through a real gateway:
 * a journaled message delivered on its first attempt is settled with a
 * done record, so a restart does not send it again; one that defers is
 * made a queue file in deferred/ and stays exactly one message.
 * The guarantee removed (no done record at settling): the restart's
 * recovery puts the delivered messages back in incoming/ and the MX gets
 * them twice.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { build, type App } from '../../src/app';
import { loadConfigFile } from '../../src/config/load';
import { createLogger } from '../../src/log';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { prepareGateway } from '../helpers/gateway';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';

describe('journal settling', () => {
  let dns: TestDns;
  let mx: TestMx;
  let dir: string;
  let configFile: string;
  let app: App | undefined;

  before(async () => {
    dns = await startDnsServer();
    mx = await startTestMx({ host: '127.0.0.2', rcptReplies: new Map([['later@dest.test', [451, '4.2.0 try later']]]) });
    dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
    dns.set('mx.dest.test', 'A', ['127.0.0.2']);
    ({ dir, configFile } = await prepareGateway({
      config: { spool: { dir: 'spool', journal: true }, relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port, backoff: ['1h'] } },
    }));
  });
  after(async () => {
    await app?.stop();
    await mx.close();
    await dns.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  async function startApp(): Promise<App> {
    const cfg = loadConfigFile(configFile);
    const a = await build(cfg, { logger: createLogger({ level: cfg.log.level, pretty: false }), scanIntervalMs: 200 });
    await a.start();
    return a;
  }

  async function send(a: App, to: string, n: number): Promise<void> {
    const c = await RawSmtp.connect(a.port('intercept'), { localAddress: '127.0.0.5' });
    try {
      await c.reply();
      await c.cmd('EHLO home.test');
      await c.cmd('MAIL FROM:<me@home.test>');
      await c.cmd(`RCPT TO:<${to}>`);
      assert.match((await c.data(message({ from: 'me@home.test', to, body: `message ${n}\r\n` }))).text, /^250 /);
    } finally {
      c.close();
    }
  }

  it('delivered messages are not sent again after a restart; a deferred one is one queue file', async () => {
    app = await startApp();
    for (let n = 0; n < 3; n++) await send(app, 'ok@dest.test', n);
    await send(app, 'later@dest.test', 3);
    await mx.waitFor(3, 10_000);
    for (let i = 0; i < 200 && (await app.spool.list('deferred')).length < 1; i++) await new Promise((r) => setTimeout(r, 50));
    await app.qmgr.idle();
    assert.equal((await app.spool.list('deferred')).length, 1, 'the deferred message became a queue file');
    await app.stop();

    // Recovery runs inside start(); whatever it put back is tried at once, and idle() waits for it.
    app = await startApp();
    await app.qmgr.idle();
    assert.equal(mx.messages.length, 3, 'no delivered message was recovered from the journal and sent again');
    assert.deepEqual(await app.spool.list('incoming'), []);
    assert.equal((await app.spool.list('deferred')).length, 1, 'the deferred message is still one queue file');
  });
});
