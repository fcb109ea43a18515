/**
 * Scenario: messages go through a running gateway to a test MX and every
 * received signature is verified by mailauth's verifier against TXT
 * records served by a real DNS server: a customer domain with dual
 * signing (RSA + Ed25519), the ISP's fallback domain (RSA), 8-bit and
 * SMTPUTF8 messages, long header lines, dot-stuffed lines, and a key
 * rotation while the gateway runs. A body changed after signing fails.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { keyAndPublish, verify } from '../dkim/helpers';
import type { TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, RawSmtp } from '../helpers/smtp-client';
import { startDestination, type TestMx, type Received } from '../helpers/test-mx';

describe('DKIM signing through the gateway', () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: TestGateway;
  let keysDir: string;

  before(async () => {
    ({ dns, mx } = await startDestination());
    keysDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-e2e-dkim-'));
    await keyAndPublish(dns, { keysDir, domain: 'isp.test', selector: 's2026', algo: 'rsa' });
    await keyAndPublish(dns, { keysDir, domain: 'alice-bakery.test', selector: 'r1', algo: 'rsa' });
    await keyAndPublish(dns, { keysDir, domain: 'alice-bakery.test', selector: 'e1', algo: 'ed25519' });
    gw = await startGateway({
      config: {
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port },
        dkim: { keysDir, signingDomain: 'isp.test' },
      },
    });
  });
  after(async () => {
    await gw.stop();
    await mx.close();
    await dns.close();
    await fsp.rm(keysDir, { recursive: true, force: true });
  });

  async function submit(from: string, raw: string, opts: { smtpUtf8?: boolean; intercept?: boolean } = {}): Promise<Received> {
    const before = mx.messages.length;
    const c = await RawSmtp.connect(gw.port(opts.intercept ? 'intercept' : 'submission'), { localAddress: '127.0.0.3' });
    await c.reply();
    await c.cmd('EHLO pc.test');
    if (!opts.intercept) {
      await c.starttls();
      await c.cmd('EHLO pc.test');
      assert.match((await c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`)).text, /^235 /);
    }
    assert.match((await c.cmd(`MAIL FROM:<${from}>${opts.smtpUtf8 ? ' SMTPUTF8' : ''}`)).text, /^250 /);
    assert.match((await c.cmd('RCPT TO:<carol@dest.test>')).text, /^250 /);
    const r = await c.data(raw);
    assert.match(r.text, /^250 /);
    await c.quit();
    return (await mx.waitFor(before + 1))[before]!;
  }

  function passing(results: Awaited<ReturnType<typeof verify>>): string[] {
    return results
      .filter((r) => r.status.result === 'pass')
      .map((r) => `${r.signingDomain}/${(r as unknown as { algo?: string }).algo ?? r.status.aligned}`)
      .sort();
  }

  it('dual-signs for a customer domain that has keys (RSA + Ed25519), Received: under the signatures', async () => {
    const got = await submit('orders@alice-bakery.test', 'From: Orders <orders@alice-bakery.test>\r\nTo: carol@dest.test\r\nSubject: bread\r\n\r\nFresh bread.\r\n.\r\n');
    const text = got.data.toString();
    const firstTwo = text.split('\r\n').filter((l) => /^[A-Za-z-]+:/.test(l)).slice(0, 3).map((l) => l.split(':')[0]);
    assert.deepEqual(firstTwo, ['DKIM-Signature', 'DKIM-Signature', 'Received'], 'signatures on top of our Received:');
    assert.doesNotMatch(text, /\bl=\d/, 'no l= tag');
    assert.match(text, /h=[^;]*from[^;]*from/i, 'From over-signed');
    const results = await verify(got.data, dns);
    assert.deepEqual(passing(results), ['alice-bakery.test/ed25519-sha256', 'alice-bakery.test/rsa-sha256']);
  });

  it('signs with the fallback domain when the From domain has no key', async () => {
    const got = await submit('alice@isp.test', 'From: alice@isp.test\r\nTo: carol@dest.test\r\nSubject: hi\r\n\r\nHi.\r\n.\r\n');
    assert.deepEqual(passing(await verify(got.data, dns)), ['isp.test/rsa-sha256']);
    // Intercept traffic from an unknown domain is signed by the ISP too.
    const got2 = await submit('someone@home.test', 'From: someone@home.test\r\nTo: carol@dest.test\r\nSubject: hi\r\n\r\nHi.\r\n.\r\n', { intercept: true });
    assert.deepEqual(passing(await verify(got2.data, dns)), ['isp.test/rsa-sha256']);
  });

  it('keeps signatures valid for 8-bit, SMTPUTF8, long folded headers and dot-stuffed lines', async () => {
    const long = `Subject: ${'A very long subject line that goes on '.repeat(6)}\r\n\tand is folded`;
    const raw = [
      'From: "Bäckerei Jürgen" <orders@alice-bakery.test>',
      'To: carol@dest.test',
      long,
      `X-Long: ${'x'.repeat(900)}`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 8bit',
      '',
      'Grüße aus der Bäckerei — 8-bit body.',
      '..a line that starts with a dot (stuffed on the wire)',
      '...two dots',
      '.',
    ].join('\r\n');
    const got = await submit('orders@alice-bakery.test', `${raw}\r\n.\r\n`, { smtpUtf8: true });
    const text = got.data.toString('utf8');
    assert.match(text, /\r\n\.a line that starts with a dot/, 'dot-unstuffed on arrival');
    assert.match(text, /Grüße/);
    assert.deepEqual(passing(await verify(got.data, dns)), ['alice-bakery.test/ed25519-sha256', 'alice-bakery.test/rsa-sha256']);
  });

  it('fails verification when the body is modified after signing (the check can fail)', async () => {
    const got = await submit('alice@isp.test', 'From: alice@isp.test\r\nTo: carol@dest.test\r\nSubject: pay\r\n\r\nPay 10 EUR.\r\n.\r\n');
    const tampered = Buffer.from(got.data.toString().replace('Pay 10 EUR.', 'Pay 99 EUR.'));
    const results = await verify(tampered, dns);
    assert.equal(results.length, 1);
    assert.notEqual(results[0]!.status.result, 'pass');
  });

  it('rotates to a new selector while the gateway runs', async () => {
    // A new key, active now, published; the old one is retired by the new one's date.
    await keyAndPublish(dns, { keysDir, domain: 'isp.test', selector: 's2027', algo: 'rsa', activeFrom: new Date(Date.now() - 1000) });
    await gw.app!.dkim()!.reload();
    const got = await submit('alice@isp.test', 'From: alice@isp.test\r\nTo: carol@dest.test\r\nSubject: rotated\r\n\r\nHi.\r\n.\r\n');
    assert.match(got.data.toString(), /s=s2027/);
    assert.deepEqual(passing(await verify(got.data, dns)), ['isp.test/rsa-sha256']);
  });
});
