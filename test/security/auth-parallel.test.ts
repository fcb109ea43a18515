/**
 * Scenario: many users behind one address (an office NAT, a CGNAT pool).
 * While the address has no AUTH failures, their AUTHs run side by side, up
 * to the policy's headroom (min of delayAfter and lockoutAfter, less the
 * failures in the window); once it has failed that often, AUTHs from it run
 * one at a time again, so a guesser cannot run the delays in parallel (the
 * lockout bound itself: brute-force.test.ts).
 * Observation: AccountStore.authenticate of the running gateway is wrapped;
 * calls can be held (a slow password hash, on demand) and the calls in
 * flight are counted. No wall-clock thresholds: a serialised AUTH shows up
 * as a reply that never comes while another is held (10 s reply timeout).
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, RawSmtp, tlsSessionFrom } from '../helpers/smtp-client';
import { accountSubject } from '../../src/policy/checks/common';
import { keys } from '../../src/state/keys';
import { waitUntil } from '../helpers/wait-until';
import { sleep } from './util';

const DELAY_AFTER = 3;
/** bob's open connections are limited (so a successful AUTH counts one); alice's are not. */
const BOB_CONNECTIONS = 2;
const QUOTAS = `
authFailures:
  perIp: { window: 10m, delayAfter: ${DELAY_AFTER}, delay: 20ms, maxDelay: 20ms, lockoutAfter: 100, lockout: 1s }
  perAccount: { window: 10m, delayAfter: 0, lockoutAfter: 100000, lockout: 1s }
overrides:
  accounts:
    bob@isp.test: { concurrentConnections: ${BOB_CONNECTIONS} }
`;

describe('AUTH from one address', () => {
  let gw: TestGateway;
  let inFlight = 0;
  let maxInFlight = 0;
  let started = 0;
  /** When set, called at the start of every password check; the check waits for what it returns. */
  let hold: ((n: number) => Promise<void>) | undefined;

  before(async () => {
    gw = await startGateway({
      policyFiles: { 'quotas.yaml': QUOTAS },
      config: { accounts: { file: 'accounts.yaml', authCacheTtl: '0ms' }, limits: { maxConnectionsPerIp: 100 } },
    });
    const store = gw.app!.accounts;
    const orig = store.authenticate.bind(store);
    store.authenticate = async (name: string, password: string) => {
      const n = ++started;
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        if (hold) await hold(n);
        return await orig(name, password);
      } finally {
        inFlight--;
      }
    };
  });
  after(async () => {
    await gw.stop();
  });
  beforeEach(() => {
    inFlight = 0;
    maxInFlight = 0;
    started = 0;
    hold = undefined;
  });

  const session = (ip: string): Promise<RawSmtp> => tlsSessionFrom(gw.port('submissions'), ip, 'office.test');

  it('a second user logs in while the first one\'s password check is held', async () => {
    const IP = '127.0.0.11';
    let releaseFirst!: () => void;
    const firstHeld = new Promise<void>((r) => (releaseFirst = r));
    let firstStarted!: () => void;
    const firstIsIn = new Promise<void>((r) => (firstStarted = r));
    hold = async (n) => {
      if (n !== 1) return;
      firstStarted();
      await firstHeld;
    };
    const a = await session(IP);
    const b = await session(IP);
    a.write(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}\r\n`);
    await firstIsIn;
    // Serialised, this reply would wait for the held check (and time out).
    const rb = await b.cmd(`AUTH PLAIN ${authPlain('bob@isp.test', 'bob-secret-22')}`);
    assert.equal(rb.code, 235, rb.text);
    assert.equal(inFlight, 1, 'the first check is still held');
    releaseFirst();
    assert.equal((await a.reply()).code, 235);
    a.close();
    b.close();
  });

  it(`runs up to delayAfter (${DELAY_AFTER}) AUTHs from a clean address in parallel, the rest one at a time`, async () => {
    const IP = '127.0.0.12';
    // Hold each check until DELAY_AFTER of them are in flight together (or the rest are queued).
    let releaseAll!: () => void;
    const together = new Promise<void>((r) => (releaseAll = r));
    hold = async () => {
      if (inFlight >= DELAY_AFTER) releaseAll();
      await together;
    };
    const N = 8;
    const clients = await Promise.all(Array.from({ length: N }, () => session(IP)));
    const replies = await Promise.all(clients.map((c) => c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`)));
    assert.deepEqual(replies.map((r) => r.code), Array(N).fill(235));
    assert.equal(maxInFlight, DELAY_AFTER, 'parallel up to the headroom, never beyond');
    for (const c of clients) c.close();
  });

  it('once the address has failed delayAfter times, its AUTHs run one at a time', async () => {
    const IP = '127.0.0.13';
    const c = await session(IP);
    for (let i = 0; i < DELAY_AFTER; i++) assert.equal((await c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', `wrong-${i}`)}`)).code, 535);
    c.close();
    // A slow hash each: parallel checks would overlap.
    hold = () => sleep(30);
    const N = 6;
    const clients = await Promise.all(Array.from({ length: N }, () => session(IP)));
    maxInFlight = 0;
    const replies = await Promise.all(clients.map((k) => k.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`)));
    assert.deepEqual(replies.map((r) => r.code), Array(N).fill(235));
    assert.equal(maxInFlight, 1, 'one password check at a time');
    // Another (clean) address is not held up by it.
    hold = undefined;
    maxInFlight = 0;
    const others = await Promise.all(Array.from({ length: 2 }, () => session('127.0.0.14')));
    const r2 = await Promise.all(others.map((k) => k.cmd(`AUTH PLAIN ${authPlain('bob@isp.test', 'bob-secret-22')}`)));
    assert.deepEqual(r2.map((r) => r.code), [235, 235]);
    for (const k of [...clients, ...others]) k.close();
  });

  /**
   * Fails DELAY_AFTER times from `ip` (its AUTHs run one at a time from then on), then N clients
   * each send AUTH as `user` and leave: the first one's check is held until every client has
   * gone (it leaves mid-hash), the rest wait in the queue behind it. Returns once every check ran.
   */
  async function leaveWhileQueued(ip: string, user: string, password: string, n: number): Promise<void> {
    const c = await session(ip);
    for (let i = 0; i < DELAY_AFTER; i++) assert.equal((await c.cmd(`AUTH PLAIN ${authPlain(user, `wrong-${i}`)}`)).code, 535);
    c.close();
    let releaseFirst!: () => void;
    const allGone = new Promise<void>((r) => (releaseFirst = r));
    hold = async (k) => {
      if (k === DELAY_AFTER + 1) await allGone;
    };
    const clients = await Promise.all(Array.from({ length: n }, () => session(ip)));
    for (const k of clients) {
      await k.writeNow(`AUTH PLAIN ${authPlain(user, password)}\r\n`);
      k.close();
    }
    await sleep(200);
    releaseFirst();
    await waitUntil('every queued password check ran', () => started === DELAY_AFTER + n && inFlight === 0, 10_000);
    await sleep(100);
  }

  it('a client that leaves while its AUTH waits in the queue leaves no session state behind', async () => {
    const IP = '127.0.0.15';
    await leaveWhileQueued(IP, 'alice@isp.test', 'wrong-again', 4);
    const listener = gw.app!.listeners.find((l) => l.cfg.name === 'submissions')!;
    // The session's per-connection state (private): what an attacker could make pile up.
    const states = (listener.handlers as unknown as { conns: Map<string, { client: { ip: string } }> }).conns;
    const left = [...states.values()].filter((st) => st.client.ip === IP).length;
    assert.equal(left, 0, `${left} sessions of clients that left still hold state`);
  });

  it('clients that leave with the right password while their AUTH waits do not use up the account\'s connections', async () => {
    const store = gw.app!.state.store;
    const open = () => store.get(keys.connections(accountSubject('bob@isp.test')), Date.now());
    // bob's sessions of the tests before have closed (given back at close, asynchronously).
    await waitUntil('bob has no open connection', async () => (await open()) === 0);
    // More of them than bob's limit, as an attacker who knows his password would send.
    await leaveWhileQueued('127.0.0.10', 'bob@isp.test', 'bob-secret-22', BOB_CONNECTIONS + 2);
    const counted = await open();
    assert.equal(counted, 0, `${counted} connections of clients that left still counted against bob's limit`);
    // The real subscriber still gets every connection his limit allows.
    const own = await Promise.all(Array.from({ length: BOB_CONNECTIONS }, () => session('127.0.0.9')));
    for (const k of own) {
      assert.equal((await k.cmd(`AUTH PLAIN ${authPlain('bob@isp.test', 'bob-secret-22')}`)).code, 235);
      const mail = await k.cmd('MAIL FROM:<bob@isp.test>');
      assert.equal(mail.code, 250, mail.text);
    }
    for (const k of own) k.close();
  });
});
