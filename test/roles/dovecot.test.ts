/**
 * Scenario: POP-before-SMTP with a real Dovecot (test/helpers/dovecot.ts):
 * a POP3 login from 127.0.0.11 makes that address relay as alice.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { popLogin, startDovecot, type TestDovecot } from '../helpers/dovecot';
import { RawSmtp } from '../helpers/smtp-client';
import { startPopGateway, waitUntil, type RoleGateway } from './helpers';

describe('POP-before-SMTP with a real Dovecot', { timeout: 30_000 }, () => {
  let dovecot: TestDovecot;
  let popPort: number;
  let gw: RoleGateway;

  before(async () => {
    dovecot = await startDovecot({ alice: 'pop-secret' });
    popPort = dovecot.popPort;
    gw = await startPopGateway(dovecot.logFile, 'dovecot');
  });
  after(async () => {
    await gw?.stop();
    await dovecot?.stop();
  });

  it('a POP3 login grants relay as the account to the address it came from', async () => {
    const mailFrom = async (ip: string, from: string) => {
      const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: ip });
      await c.reply();
      await c.cmd('EHLO legacy');
      const t = (await c.cmd(`MAIL FROM:<${from}>`)).text;
      await c.quit();
      return t;
    };
    assert.match(await mailFrom('127.0.0.11', 'bob@isp.test'), /^250 /);
    const pop = await popLogin(popPort, 'alice', 'pop-secret', '127.0.0.11');
    assert.match(pop[2]!, /^\+OK Logged in/);
    await waitUntil('the grant', async () => /^553 /.test(await mailFrom('127.0.0.11', 'bob@isp.test')), 5000);
    assert.match(await mailFrom('127.0.0.11', 'alice@isp.test'), /^250 /);
    assert.match(await mailFrom('127.0.0.12', 'bob@isp.test'), /^250 /);
    const log = await fsp.readFile(dovecot.logFile, 'utf8');
    assert.match(log, /pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=127\.0\.0\.11/);
  });
});
