/**
 * Attack: lock a subscriber out of their own account. The per-account
 * lockout (quotas.yaml authFailures.perAccount) counts failures from
 * everywhere, so whoever knows an account name could fail logins for it
 * from a few addresses (~50 an hour from 3 addresses with the shipped
 * limits) and deny its owner service. The account's limits now penalise
 * the source, not the victim: an address that logged in to the account
 * before is "known", and the account lock does not apply to it.
 *
 * Real SMTP over loopback (submission, implicit TLS); lockout after 6
 * account failures, per-address limits high enough not to interfere.
 * alice logs in from 127.0.0.2 (now known); an attacker fails 9 times for
 * her from 127.0.0.5, .6 and .7 (never logged in to her account). Then:
 * alice from 127.0.0.2 logs in (235) and a wrong password there is only a
 * 535; from an address that never logged in, even the right password is
 * refused (454 4.7.0): the lock still stops a distributed guesser.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, RawSmtp } from '../helpers/smtp-client';

const QUOTAS = `
authFailures:
  perIp: { window: 15m, delayAfter: 0, lockoutAfter: 100, lockout: 15m }
  perAccount: { window: 1h, delayAfter: 0, lockoutAfter: 6, lockout: 10m, knownAddressesFor: 30d }
`;

describe('per-account lockout penalises the source, not the victim', { timeout: 60_000 }, () => {
  let gw: TestGateway;
  let port: number;

  before(async () => {
    gw = await startGateway({
      config: { listeners: [{ name: 'submissions', role: 'submission', address: '127.0.0.1', port: 0, security: 'implicit' }] },
      policyFiles: { 'quotas.yaml': QUOTAS },
    });
    port = gw.port('submissions');
  });
  after(async () => {
    await gw.stop();
  });

  async function auth(from: string, user: string, pass: string): Promise<string> {
    const c = await RawSmtp.connect(port, { localAddress: from, implicitTls: true });
    assert.equal((await c.reply()).code, 220);
    await c.cmd('EHLO client.test');
    const r = await c.cmd(`AUTH PLAIN ${authPlain(user, pass)}`);
    await c.quit();
    return r.text;
  }

  it('failures from addresses that never logged in lock out only such addresses', async () => {
    assert.match(await auth('127.0.0.2', 'alice@isp.test', 'alice-secret-1'), /^235 /);
    const replies: string[] = [];
    for (const from of ['127.0.0.5', '127.0.0.6', '127.0.0.7']) {
      for (let i = 0; i < 3; i++) replies.push((await auth(from, 'alice@isp.test', `guess-${from}-${i}`)).slice(0, 3));
    }
    // Six wrong passwords, then the account lock refuses the rest before the password check.
    assert.deepEqual(replies, ['535', '535', '535', '535', '535', '535', '454', '454', '454']);
    // The account is locked now, for addresses it was never used from.
    assert.match(await auth('127.0.0.8', 'alice@isp.test', 'alice-secret-1'), /^454 4\.7\.0 /);
    assert.match(await auth('127.0.0.5', 'alice@isp.test', 'alice-secret-1'), /^454 4\.7\.0 /);
    // Its owner, from where she logs in, is not locked out: a typo is a 535, the password works.
    assert.match(await auth('127.0.0.2', 'alice@isp.test', 'typo'), /^535 /);
    assert.match(await auth('127.0.0.2', 'ALICE@isp.test', 'alice-secret-1'), /^235 /);
    // Other accounts are untouched.
    assert.match(await auth('127.0.0.5', 'bob@isp.test', 'bob-secret-22'), /^235 /);
  });

  it('a known address is known for that account only', async () => {
    // 127.0.0.5 just logged in as bob: that does not make it known for alice.
    assert.match(await auth('127.0.0.5', 'alice@isp.test', 'alice-secret-1'), /^454 4\.7\.0 /);
  });
});
