/**
 * Scenario: DNSBL polling of active intercept addresses, with the real test
 * DNS server flipping listings. Three subscribers send through the
 * intercept listener while clean; then 127.0.0.6 gets an XBL listing
 * (refused on intercept: it counts), 127.0.0.7 a PBL listing (ignore in
 * dnsbl.yaml: it does not), and the poller must raise containment's
 * dnsblListed signal for .6 only, which holds the address. Delisting clears
 * it. The tracked set is bounded (maxAddresses: 3, a fourth address pushes
 * out the least recently seen).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';

const DNSBL = (server: string) => `
resolver: { servers: ["${server}"], timeout: 300ms, tries: 1 }
queryPrivate: true
cache: { negativeTtl: 1s, minTtl: 1s, maxTtl: 2s }
poll: { every: 1s, activeFor: 1h, maxAddresses: 3, perSecond: 50 }
zones:
  - name: zen
    zone: zen.test
    codes: { 127.0.0.4-127.0.0.7: xbl, 127.0.0.10-127.0.0.11: pbl }
    actions:
      xbl: { intercept: reject, submission: hold }
      pbl: ignore
    onError: accept
`;

async function send(gw: TestGateway, ip: string): Promise<number> {
  const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: ip });
  try {
    const g = await c.reply();
    if (g.code !== 220) return g.code;
    await c.cmd('EHLO pc.home.test');
    for (const line of ['MAIL FROM:<me@home.test>', 'RCPT TO:<friend@recipient.test>']) {
      const r = await c.cmd(line);
      if (r.code !== 250) return r.code;
    }
    return (await c.data(message({ from: 'me@home.test', to: 'friend@recipient.test' }))).code;
  } finally {
    await c.quit();
  }
}

describe('DNSBL polling of active intercept addresses', () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: TestGateway;
  const metrics = async () => (await gw.app!.metrics.render()).body;
  const value = async (re: RegExp) => Number(re.exec(await metrics())?.[1] ?? NaN);
  const status = async (ip: string) => {
    const r = await fetch(`http://127.0.0.1:${gw.app!.admin.port}/api/containment?ip=${ip}`, { headers: { authorization: 'Bearer test-admin-token' } });
    return (await r.json()) as { response: string; assessment: { fired: string[] } };
  };
  const until = async (what: string, cond: () => Promise<boolean>) => {
    const end = Date.now() + 15_000;
    while (!(await cond())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  before(async () => {
    dns = await startDnsServer();
    mx = await startTestMx({ host: '127.0.0.2' });
    dns.set('recipient.test', 'MX', [{ exchange: 'mx.recipient.test', priority: 10 }]);
    dns.set('mx.recipient.test', 'A', ['127.0.0.2']);
    gw = await startGateway({
      policyFiles: { 'dnsbl.yaml': DNSBL(dns.server), 'containment.yaml': 'enabled: true\n' },
      config: { relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port, backoff: ['1s'] } },
    });
  });

  after(async () => {
    await gw?.stop();
    await mx?.close();
    await dns?.close();
  });

  it('a newly listed address raises dnsblListed (XBL counts, PBL does not); delisting clears it', async () => {
    for (const ip of ['127.0.0.6', '127.0.0.7', '127.0.0.8']) assert.equal(await send(gw, ip), 250);
    assert.equal(await value(/^smarthost_dnsbl_poll_addresses (\S+)$/m), 3);
    dns.set('6.0.0.127.zen.test', 'A', ['127.0.0.4'], 1); // XBL
    dns.set('7.0.0.127.zen.test', 'A', ['127.0.0.10'], 1); // PBL: ignore
    await until('the XBL listing of .6 to be polled', async () => (await status('127.0.0.6')).response === 'hold');
    assert.ok((await status('127.0.0.6')).assessment.fired.includes('dnsblListed'));
    assert.equal(await value(/^smarthost_dnsbl_poll_changes_total\{change="listed"\} (\S+)$/m), 1);
    assert.equal(await value(/^smarthost_containment_external_signals_total\{signal="dnsblListed"\} (\S+)$/m), 1);
    const seven = await status('127.0.0.7');
    assert.equal(seven.response, 'none');
    assert.equal(seven.assessment.fired.includes('dnsblListed'), false);
    dns.remove('6.0.0.127.zen.test');
    await until('the delisting of .6', async () => (await value(/^smarthost_dnsbl_poll_changes_total\{change="delisted"\} (\S+)$/m)) === 1);
    assert.equal((await status('127.0.0.6')).assessment.fired.includes('dnsblListed'), false);
  });

  it('the tracked set is bounded', async () => {
    dns.remove('7.0.0.127.zen.test');
    assert.equal(await send(gw, '127.0.0.9'), 250);
    assert.equal(await value(/^smarthost_dnsbl_poll_addresses (\S+)$/m), 3, 'maxAddresses: 3');
  });
});
