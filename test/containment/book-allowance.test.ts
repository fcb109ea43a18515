/**
 * containment.yaml bookAllowance over real SMTP: the static recipientsPerHour
 * of quotas.yaml defers a greeting to a whole address book; an account in
 * good standing writing to its own correspondents may go over it by the size
 * of its address book. As the attacker: the same account shape writing to
 * strangers is still deferred at the hourly limit, and recipientsPerDay still
 * holds over the allowance.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Signals } from '../../src/containment/signals';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { sendAs } from './fixtures';

const QUOTAS = `
plans:
  residential: { messagesPerHour: 20, recipientsPerHour: 4, recipientsPerDay: 100, recipientsPerMessage: 10 }
  tight: { messagesPerHour: 20, recipientsPerHour: 4, recipientsPerDay: 6, recipientsPerMessage: 10 }
defaultPlan: residential
classPlans: {}
defaultClassPlan: residential
`;

// Nothing fires on this traffic: only the allowance is under test.
const CONTAINMENT = `
defaults:
  bookAllowance: 0.9
  volumeFloor: 0
  volumeDayFloor: 0
  newRecipientsPerHour: 0
  newRecipientsPerDay: 0
  newDomainsPerHour: 0
  strangerHours: 0
  addressBookShare: 0
`;

const ACCOUNTS = [
  { name: 'greta@isp.test', password: 'greta-secret-10', plan: 'residential' },
  { name: 'sam@isp.test', password: 'sam-secret-20', plan: 'residential' },
  { name: 'tina@isp.test', password: 'tina-secret-30', plan: 'tight' },
];
const BOOK = Array.from({ length: 12 }, (_, i) => `friend${i}@mail.test`);

describe('containment: over recipientsPerHour for the address book only', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startGateway({ accounts: ACCOUNTS, policyFiles: { 'containment.yaml': CONTAINMENT, 'quotas.yaml': QUOTAS }, config: { relay: { dns: { servers: ['127.0.0.1:9'], timeout: '300ms', tries: 1 }, backoff: ['1h'] } } });
    // Each account's correspondents of the last weeks (as a migration imports them).
    const signals = new Signals(gw.app!.state.store);
    for (const a of ACCOUNTS) await signals.learnRecipients({ kind: 'a', id: a.name }, BOOK, Date.now());
  });
  after(async () => gw?.stop());

  const send = async (i: number, rcpts: readonly string[]) => {
    const r = await sendAs(gw, ACCOUNTS[i]!, i, rcpts, 'Happy holidays to all of you!');
    if (r.data) assert.equal(r.data.code, 250, r.data.text);
    return r.rcpt;
  };

  it('a greeting to the whole address book goes over the hourly limit of 4', async () => {
    assert.deepEqual(await send(0, BOOK.slice(0, 4)), [250, 250, 250, 250]);
    assert.deepEqual(await send(0, BOOK.slice(4, 8)), [250, 250, 250, 250]);
    assert.deepEqual(await send(0, BOOK.slice(8, 12)), [250, 250, 250, 250]);
  });

  it('the same account shape writing to strangers is deferred at 4', async () => {
    const strangers = Array.from({ length: 8 }, (_, i) => `someone${i}@far.test`);
    assert.deepEqual(await send(1, strangers.slice(0, 4)), [250, 250, 250, 250]);
    assert.deepEqual(await send(1, strangers.slice(4, 8)), [451, 451, 451, 451]);
  });

  it('recipientsPerDay still holds over the allowance', async () => {
    assert.deepEqual(await send(2, BOOK.slice(0, 4)), [250, 250, 250, 250]);
    assert.deepEqual(await send(2, BOOK.slice(4, 8)), [250, 250, 451, 451]);
  });
});
