/**
 * Scenario: containment finds a sender suspicious (a Reply-To it never
 * used: identityChange, weight 0.5) but not bad enough for any response
 * (throttle at 1): its message is accepted and sent, from the quarantine
 * pool, while a clean sender's leaves from its plan's pool. Seen at the
 * recipient's MX (127.0.0.2) by the client address and EHLO name. The pool
 * is decided at acceptance and kept in the envelope (read from the spool
 * while the MX defers). A sender the same signal throttles (plan strict) or
 * holds (plan holding) is treated as before, and the quarantined message,
 * which was sent, stays counted in the quotas.
 *
 *   residential  127.0.0.11   EHLO out-res.isp.test
 *   quarantine   127.0.0.12   EHLO out-q.isp.test
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { keys } from '../../src/state/keys';
import type { TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { startDestination, type TestMx } from '../helpers/test-mx';
import { waitUntil } from '../helpers/wait-until';
import { sendAs, twoSignalContainment } from '../containment/fixtures';

const HOUR = 3_600_000;

/** Only identityChange on (the shared fixture), at half weight: quarantine on residential, throttle on strict, hold on holding. */
const CONTAINMENT = (() => {
  const doc = YAML.parse(twoSignalContainment(0)) as { defaults: Record<string, unknown>; weights: Record<string, number>; plans?: unknown };
  doc.defaults.responses = { quarantine: 0.5, throttle: 1, hold: 2, suspend: 0 };
  doc.weights = { identityChange: 0.5 };
  doc.plans = {
    residential: {},
    strict: { responses: { quarantine: 0, throttle: 0.5, hold: 2, suspend: 0 } },
    holding: { responses: { quarantine: 0, throttle: 0, hold: 0.5, suspend: 0 } },
  };
  return YAML.stringify(doc);
})();

const QUOTAS = `
plans:
  residential: { messagesPerHour: 10, recipientsPerHour: 10 }
  strict: { messagesPerHour: 10, recipientsPerHour: 10 }
  holding: { messagesPerHour: 10, recipientsPerHour: 10 }
defaultPlan: residential
classPlans: {}
defaultClassPlan: residential
`;

const ACCOUNTS = [
  { name: 'ann@isp.test', password: 'ann-secret-10', plan: 'residential' },
  { name: 'sue@isp.test', password: 'sue-secret-11', plan: 'residential' },
  { name: 'tom@isp.test', password: 'tom-secret-12', plan: 'strict' },
  { name: 'hal@isp.test', password: 'hal-secret-13', plan: 'holding' },
];

const NEW_REPLY_TO = ['Reply-To: <payments@elsewhere.test>'];

describe('containment: a suspicious sender leaves from the quarantine pool', () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: TestGateway;

  before(async () => {
    ({ dns, mx } = await startDestination());
    gw = await startGateway({
      accounts: ACCOUNTS,
      policyFiles: { 'containment.yaml': CONTAINMENT, 'quotas.yaml': QUOTAS },
      config: {
        relay: {
          dns: { servers: [dns.server], timeout: '1s' },
          mxPort: mx.port,
          backoff: ['1s'],
          poolIdle: '0ms',
          pools: {
            residential: { addresses: ['127.0.0.11'], heloName: 'out-res.isp.test' },
            quarantine: { addresses: ['127.0.0.12'], heloName: 'out-q.isp.test' },
          },
          poolSelection: { byPlan: { residential: 'residential', strict: 'residential', holding: 'residential' }, quarantine: 'quarantine' },
        },
      },
    });
  });
  after(async () => {
    await gw?.stop();
    await mx?.close();
    await dns?.close();
  });

  const counted = async (account: string) => {
    const store = gw.app!.state.store;
    const s = { kind: 'a' as const, id: account };
    const now = Date.now();
    return { recipientsPerHour: await store.count(keys.quota(s, 'recipientsPerHour'), HOUR, now), messagesPerHour: await store.count(keys.quota(s, 'messagesPerHour'), HOUR, now) };
  };

  it('suspicious: sent from the quarantine pool, counted; clean: its plan pool; throttled and held as before', async () => {
    const app = gw.app!;
    // The MX defers at first: the accepted messages wait in the spool with the pool chosen at acceptance.
    mx.options.mailReply = [451, '4.3.0 Try again later'];

    const clean = await sendAs(gw, ACCOUNTS[0]!, 0, ['c@dest.test'], 'Lunch on Friday?');
    assert.equal(clean.data?.code, 250, clean.data?.text);
    const suspicious = await sendAs(gw, ACCOUNTS[1]!, 1, ['s1@dest.test', 's2@dest.test'], 'Please pay the attached invoice.', NEW_REPLY_TO);
    assert.equal(suspicious.data?.code, 250, suspicious.data?.text);
    const throttled = await sendAs(gw, ACCOUNTS[2]!, 2, ['t@dest.test'], 'Please pay the attached invoice.', NEW_REPLY_TO);
    assert.equal(throttled.data?.code, 451, throttled.data?.text);
    assert.match(throttled.data!.text, /4\.7\.1/);
    const held = await sendAs(gw, ACCOUNTS[3]!, 3, ['h@dest.test'], 'Please pay the attached invoice.', NEW_REPLY_TO);
    assert.equal(held.data?.code, 250, held.data?.text);

    // Sent, so counted: the quarantine verdict takes nothing back; throttled and held are taken back as before.
    assert.deepEqual(await counted('sue@isp.test'), { recipientsPerHour: 2, messagesPerHour: 1 });
    assert.deepEqual(await counted('ann@isp.test'), { recipientsPerHour: 1, messagesPerHour: 1 });
    assert.deepEqual(await counted('tom@isp.test'), { recipientsPerHour: 0, messagesPerHour: 0 });
    assert.deepEqual(await counted('hal@isp.test'), { recipientsPerHour: 0, messagesPerHour: 0 });

    await waitUntil('both sent messages deferred', async () => (await app.qmgr.list()).filter((e) => e.state !== 'hold' && e.attempts >= 1).length === 2);
    const queue = await app.qmgr.list();
    const heldEntry = queue.find((e) => e.state === 'hold');
    assert.equal(heldEntry?.holdReason, 'containment.hold');
    const byFrom = new Map<string, Awaited<ReturnType<typeof app.spool.read>>['envelope']>();
    for (const e of queue) byFrom.set(e.mailFrom, (await app.spool.read(e.id, e.state)).envelope);
    assert.deepEqual(byFrom.get('ann@isp.test')?.egress, { pool: 'residential', rule: 'relay.poolSelection.byPlan.residential' });
    assert.deepEqual(byFrom.get('sue@isp.test')?.egress, { pool: 'quarantine', rule: 'relay.poolSelection.quarantine (containment.quarantine)' });
    const verdict = byFrom.get('sue@isp.test')?.verdicts.find((v) => v.rule === 'containment.quarantine');
    assert.equal(verdict?.action, 'accept');
    assert.deepEqual([verdict?.values?.score, verdict?.values?.fired], [0.5, 'identityChange']);

    mx.options.mailReply = undefined;
    const got = await mx.waitFor(2);
    const seen = new Map(got.map((m) => [m.rcptTo.join(' '), `${m.remoteAddress} ${m.helo}`]));
    assert.equal(seen.get('c@dest.test'), '127.0.0.11 out-res.isp.test', 'clean sender: its plan pool');
    assert.equal(seen.get('s1@dest.test s2@dest.test'), '127.0.0.12 out-q.isp.test', 'suspicious sender: the quarantine pool');
    // The MX has both messages once it has read them; the gateway removes each from its queue after the 250 reaches it.
    await waitUntil('no delivery still in flight', async () => (await app.qmgr.list()).every((e) => e.state !== 'active'));
    const left = await app.qmgr.list();
    assert.deepEqual(left.map((e) => [e.mailFrom, e.state]), [['hal@isp.test', 'hold']], 'the held message waits for the abuse desk; the throttled one was never accepted');
    assert.ok(mx.messages.every((m) => !m.rcptTo.includes('t@dest.test') && !m.rcptTo.includes('h@dest.test')));
  });
});
