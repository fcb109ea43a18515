/**
 * A message containment throttles or holds was not sent, so it is not
 * counted against the sender's quotas: neither its recipients
 * (recipientsPerHour/Day, counted at RCPT) nor the message
 * (messagesPerHour, counted at end of DATA). Over real SMTP, read from the
 * state store the quota checks use, and shown by behaviour: after the abuse
 * desk releases the account, its whole hourly quota is still there.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { keys } from '../../src/state/keys';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { sendAs, twoSignalContainment } from './fixtures';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const QUOTAS = `
plans:
  residential: { messagesPerHour: 10, recipientsPerHour: 4, recipientsPerDay: 100, recipientsPerMessage: 10 }
defaultPlan: residential
classPlans: {}
defaultClassPlan: residential
`;

const CONTAINMENT = twoSignalContainment(2);

const ACCOUNTS = ['ann', 'ben', 'cat'].map((n, i) => ({ name: `${n}@isp.test`, password: `${n}-secret-${i}0`, plan: 'residential' }));

describe('containment: a throttled or held message is not counted against the quotas', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startGateway({ accounts: ACCOUNTS, policyFiles: { 'containment.yaml': CONTAINMENT, 'quotas.yaml': QUOTAS }, config: { relay: { dns: { servers: ['127.0.0.1:9'], timeout: '300ms', tries: 1 }, backoff: ['1h'] } } });
  });
  after(async () => gw?.stop());

  const send = (i: number, rcpts: string[], body: string, headers: string[] = []) => sendAs(gw, ACCOUNTS[i]!, i, rcpts, body, headers);
  const counted = async (account: string) => {
    const store = gw.app!.state.store;
    const s = { kind: 'a' as const, id: account };
    const now = Date.now();
    return {
      recipientsPerHour: await store.count(keys.quota(s, 'recipientsPerHour'), HOUR, now),
      recipientsPerDay: await store.count(keys.quota(s, 'recipientsPerDay'), DAY, now),
      messagesPerHour: await store.count(keys.quota(s, 'messagesPerHour'), HOUR, now),
    };
  };
  const admin = async (method: string, p: string) => {
    const res = await fetch(`http://127.0.0.1:${gw.app!.admin.port}${p}`, { method, headers: { authorization: 'Bearer test-admin-token' } });
    return (await res.json()) as { response: string };
  };

  it('throttled at end of DATA: its recipients are taken back, and the whole hourly quota is there after release', async () => {
    const friends = ['f1@mail.test', 'f2@mail.test', 'f3@mail.test'];
    const r = await send(0, friends, 'Please pay the attached invoice today.', ['Reply-To: <ann.payments@elsewhere.test>']);
    assert.deepEqual(r.rcpt, [250, 250, 250], 'the quota let the three recipients in');
    assert.equal(r.data?.code, 451, r.data?.text);
    assert.match(r.data!.text, /4\.7\.1/);
    assert.deepEqual(await counted('ann@isp.test'), { recipientsPerHour: 0, recipientsPerDay: 0, messagesPerHour: 0 });

    await admin('POST', '/api/containment/release?account=ann%40isp.test');
    const four = ['g1@mail.test', 'g2@mail.test', 'g3@mail.test', 'g4@mail.test'];
    const again = await send(0, four, 'See you on Sunday.');
    assert.deepEqual(again.rcpt, [250, 250, 250, 250], 'recipientsPerHour 4 is whole after the throttled message');
    assert.equal(again.data?.code, 250, again.data?.text);
    assert.deepEqual(await counted('ann@isp.test'), { recipientsPerHour: 4, recipientsPerDay: 4, messagesPerHour: 1 });
  });

  it('held at end of DATA (a campaign from a second account): accepted into hold, counted nowhere', async () => {
    const lure = 'Your parcel is waiting, see https://track-parcel-now.test/abc';
    const first = await send(1, ['x1@mail.test', 'x2@mail.test'], lure);
    assert.equal(first.data?.code, 250);
    assert.deepEqual(await counted('ben@isp.test'), { recipientsPerHour: 2, recipientsPerDay: 2, messagesPerHour: 1 });
    const second = await send(2, ['y1@mail.test', 'y2@mail.test'], `${lure}\r\nregards`);
    assert.equal(second.data?.code, 250, second.data?.text);
    assert.equal((await admin('GET', '/api/containment?account=cat%40isp.test')).response, 'hold');
    assert.deepEqual(await counted('cat@isp.test'), { recipientsPerHour: 0, recipientsPerDay: 0, messagesPerHour: 0 });
  });
});
