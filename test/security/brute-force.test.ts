/**
 * Scenario: password guessing. 500 wrong passwords from one address, sent
 * over 20 parallel connections, reach the account store (a password hash
 * each) no more often than the per-address limit in quotas.yaml allows;
 * the rest are answered 454 4.7.0 without a hash. The right password from
 * the locked-out address is refused too, until the lockout ends; another
 * address is not affected.
 * Counting: AccountStore.authenticate of the running gateway is wrapped
 * with a counter (every call verifies a hash: the auth cache is off here).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, RawSmtp, tlsSessionFrom } from '../helpers/smtp-client';
import { sleep } from './util';

const LOCKOUT_AFTER = 10;
const LOCKOUT_MS = 4000;
const QUOTAS = `
authFailures:
  perIp: { window: 10m, delayAfter: 0, lockoutAfter: ${LOCKOUT_AFTER}, lockout: ${LOCKOUT_MS}ms }
  perAccount: { window: 10m, delayAfter: 0, lockoutAfter: 100000, lockout: 1s }
`;

describe('brute force', () => {
  let gw: TestGateway;
  let verifications = 0;

  before(async () => {
    gw = await startGateway({
      policyFiles: { 'quotas.yaml': QUOTAS },
      config: { accounts: { file: 'accounts.yaml', authCacheTtl: '0ms' }, limits: { maxConnectionsPerIp: 100 } },
    });
    const store = gw.app!.accounts;
    const orig = store.authenticate.bind(store);
    store.authenticate = async (name: string, password: string) => {
      verifications++;
      return orig(name, password);
    };
  });
  after(async () => {
    await gw.stop();
  });

  const session = (ip: string): Promise<RawSmtp> => tlsSessionFrom(gw.port('submissions'), ip, 'guesser.test');

  it('500 wrong passwords from one IP: at most the limit reach the account store; then 454 4.7.0', async () => {
    const IP = '127.0.0.7';
    const codes = new Map<string, number>();
    let sent = 0;
    const worker = async () => {
      let c = await session(IP);
      while (sent < 500) {
        const n = sent++;
        let r;
        try {
          r = await c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', `wrong-${n}`)}`);
        } catch {
          c.close();
          c = await session(IP);
          sent--;
          continue;
        }
        const key = r.text.slice(0, 9);
        codes.set(key, (codes.get(key) ?? 0) + 1);
        if (r.code === 421) {
          c.close();
          c = await session(IP);
        }
      }
      c.close();
    };
    await Promise.all(Array.from({ length: 20 }, worker));
    console.log(`# brute force: 500 guesses, ${verifications} password verifications, replies ${JSON.stringify(Object.fromEntries(codes))}`);
    assert.ok(verifications <= LOCKOUT_AFTER, `${verifications} verifications for a limit of ${LOCKOUT_AFTER}`);
    assert.equal(codes.get('535 5.7.8'), verifications, 'every verified guess was a 535');
    assert.ok((codes.get('454 4.7.0') ?? 0) >= 500 - LOCKOUT_AFTER - 30, 'the rest were refused as locked out');
  });

  it('the right password from the locked-out IP is refused until the lockout ends', async () => {
    const IP = '127.0.0.7';
    const before = verifications;
    const c = await session(IP);
    const r = await c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`);
    assert.match(r.text, /^454 4\.7\.0 /);
    c.close();
    assert.equal(verifications, before, 'a locked-out attempt costs no hash');
    // Another address is unaffected.
    const o = await session('127.0.0.8');
    assert.equal((await o.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`)).code, 235);
    o.close();
    await sleep(LOCKOUT_MS + 300);
    const d = await session(IP);
    assert.equal((await d.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`)).code, 235, 'after the lockout');
    d.close();
  });
});
