/**
 * The signed reports the feedback tests send (arf-samples.ts signed()) must
 * verify whatever the machine's load: a report whose own signature is broken
 * counts as "unauthenticated", and the test that expected a complaint fails.
 * mailauth's dkimSign, given no signTime, reads the clock for t= twice (the
 * header it hashes, then the header it writes after the RSA signature), each
 * rounded to the second: when the two readings straddle a half second the
 * written t= is not the hashed one. A clock that moves a second at every
 * reading makes that happen on every signature.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it, mock } from 'node:test';
import { dkimVerify } from 'mailauth/lib/dkim/verify';
import type { TestDns } from '../helpers/dns-server';
import { arfReport, publishKey, signed } from './arf-samples';

describe('arf-samples: signed reports', () => {
  afterEach(() => mock.restoreAll());

  it('verify, even when the clock moves a second between two readings', async () => {
    const txt = new Map<string, string[]>();
    const key = publishKey({ set: (name: string, _type: string, values: string[]) => void txt.set(name, values) } as unknown as TestDns, 'yahoo.test');
    const report = arfReport({ from: 'feedback@arf.mail.yahoo.test', to: 'fbl@gw.isp.test', original: 'From: <a@isp.test>\r\nTo: <b@x.test>\r\nSubject: s\r\n\r\nbody\r\n' });
    let clock = Date.now();
    mock.method(Date, 'now', () => (clock += 1000));
    const msg = await signed(report, key);
    mock.restoreAll();
    const res = await dkimVerify(msg, {
      resolver: async (name: string) => {
        const v = txt.get(name);
        if (!v) throw Object.assign(new Error(`no ${name}`), { code: 'ENOTFOUND' });
        return [v];
      },
    });
    const r = res.results[0]!;
    assert.equal(r.status.result, 'pass', `${r.status.result} (${String(r.status.comment)}): ${/^DKIM-Signature:[^]*?(?=\r\n\S)/.exec(msg)?.[0]}`);
  });
});
