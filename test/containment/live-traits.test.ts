/**
 * The live session hands containment the message's traits (body
 * fingerprint, link domains, Reply-To, display name) over real SMTP: one
 * campaign through three accounts (rotating text, one landing site) is held
 * on the third account, fleet-wide through the state store; a new Reply-To
 * is an identity change (451 4.7.1 at end of DATA here).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { twoSignalContainment } from './fixtures';
import { authPlain, message, RawSmtp } from '../helpers/smtp-client';

const CONTAINMENT = twoSignalContainment(3);

const ACCOUNTS = ['ann', 'ben', 'cat', 'dan'].map((n, i) => ({ name: `${n}@isp.test`, password: `${n}-secret-${i}0`, plan: 'residential' }));

describe('containment reads the live message', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startGateway({ accounts: ACCOUNTS, policyFiles: { 'containment.yaml': CONTAINMENT }, config: { relay: { dns: { servers: ['127.0.0.1:9'], timeout: '300ms', tries: 1 }, backoff: ['1h'] } } });
  });
  after(async () => gw?.stop());

  const send = async (i: number, body: string, headers: string[] = []) => {
    const acc = ACCOUNTS[i]!;
    const c = await RawSmtp.connect(gw.port('submissions'), { localAddress: `127.0.0.${2 + i}`, implicitTls: true });
    await c.reply();
    await c.cmd('EHLO laptop.test');
    assert.equal((await c.cmd(`AUTH PLAIN ${authPlain(acc.name, acc.password)}`)).code, 235);
    assert.equal((await c.cmd(`MAIL FROM:<${acc.name}>`)).code, 250);
    assert.equal((await c.cmd(`RCPT TO:<friend${i}@mail.test>`)).code, 250);
    const r = await c.data(message({ from: acc.name, to: `friend${i}@mail.test`, body, headers }));
    await c.quit();
    return r;
  };
  const status = async (account: string) => {
    const res = await fetch(`http://127.0.0.1:${gw.app!.admin.port}/api/containment?account=${encodeURIComponent(account)}`, { headers: { authorization: 'Bearer test-admin-token' } });
    return ((await res.json()) as { response: string }).response;
  };

  it('one landing site from three accounts: the third is held (fleet-wide campaign)', async () => {
    const lure = ['Your parcel is waiting', 'Invoice attached', 'Account notice'];
    for (let i = 0; i < 3; i++) assert.equal((await send(i, `${lure[i]}, see https://track-parcel-now.test/${'xyz'.slice(i)}\r\nkind regards`)).code, 250);
    assert.equal(await status('ann@isp.test'), 'none');
    assert.equal(await status('ben@isp.test'), 'none');
    assert.equal(await status('cat@isp.test'), 'hold');
  });

  it('a Reply-To the account never used is an identity change', async () => {
    const r = await send(3, 'Please pay the attached invoice today.', ['Reply-To: <dan.payments@elsewhere.test>']);
    assert.equal(r.code, 451, r.text);
    assert.match(r.text, /4\.7\.1/);
  });
});
