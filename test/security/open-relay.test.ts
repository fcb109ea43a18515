/**
 * Scenario: the open-relay battery. Classic relay tricks from a client
 * that may not relay are all refused, with a precise code:
 *   - intercept (port 25 redirect) outside the subscriber netblocks: 554
 *     5.7.1 at connect, whatever it says next;
 *   - submission without AUTH: 530 5.7.0 at MAIL, no recipient accepted;
 *   - the backup-MX listener (relayDomains: isp.test) from anywhere: only
 *     real recipients of isp.test; routed forms 553 5.1.3, the rest 550
 *     5.7.1 / 501 5.1.3;
 *   - an authenticated account cannot use another account's address (553
 *     5.7.1 at MAIL, 550 5.7.1 for the header From).
 * For a client that MAY relay, routed address forms (source route, %-hack,
 * bang path, quoted @) are refused at RCPT with 553 5.1.3 instead of being
 * routed oddly.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, message, RawSmtp } from '../helpers/smtp-client';

const HOST = 'gw.isp.test';
const OUTSIDE = '127.0.0.20';
const INSIDE = '127.0.0.5';

/** Recipient forms that try to make the gateway relay to outside.test (or route through us). */
const TRICKS = [
  'victim@outside.test',
  'VICTIM@OUTSIDE.TEST',
  'victim@outside.test.',
  'victim%outside.test@isp.test',
  'victim%outside.test@[127.0.0.1]',
  `victim%outside.test@${HOST}`,
  `victim%outside.test@${HOST.toUpperCase()}.`,
  'outside.test!victim@isp.test',
  'outside.test!victim',
  '@isp.test:victim@outside.test',
  `@${HOST},@isp.test:victim@outside.test`,
  '"victim@outside.test"@isp.test',
  '"victim%outside.test"@isp.test',
  'victim@outside.test@isp.test',
  'victim@[127.0.0.1]',
  'victim@[IPv6:::1]',
  'victim@[1.2.3.4]',
  `victim@${HOST}`,
  `victim@[${HOST}]`,
  'victim@isp.test.outside.test',
  'victim@outside.test\\@isp.test',
  'victim@localhost',
  'victim@outside.test%isp.test',
];

/** The replies the battery may see: all refusals with an enhanced status. */
const REFUSAL = /^(5\d\d) 5\.\d\.\d+ /;

describe('open-relay battery', () => {
  let gw: TestGateway;

  before(async () => {
    gw = await startGateway({
      policyFiles: { 'rules.yaml': 'relayDomains: [isp.test]\n' },
      config: {
        listeners: [
          { name: 'submission', role: 'submission', address: '127.0.0.1', port: 0, security: 'starttls' },
          { name: 'intercept', role: 'intercept', address: '127.0.0.1', port: 0, security: 'starttls', greetDelay: '0ms' },
          { name: 'mx', role: 'mx', address: '127.0.0.1', port: 0, security: 'starttls', greetDelay: '0ms' },
        ],
        limits: { maxConnectionsPerIp: 200 },
      },
    });
  });
  after(async () => {
    await gw.stop();
  });

  async function queued(): Promise<number> {
    const spool = gw.app!.spool;
    let n = 0;
    for (const s of ['incoming', 'active', 'deferred', 'hold'] as const) n += (await spool.list(s)).length;
    return n;
  }

  it('intercept: refuses every client outside the netblocks at connect (554 5.7.1), whatever HELO it gives', async () => {
    for (const helo of ['', HOST, `[127.0.0.1]`, 'localhost', 'isp.test', HOST.toUpperCase() + '.']) {
      for (const ip of [OUTSIDE, '127.0.1.1']) {
        const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: ip });
        const g = await c.reply();
        assert.match(g.text, /^554 5\.7\.1 /, `greeting for ${ip}`);
        // Whatever it says after the refusal, nothing is accepted.
        c.write(`EHLO ${helo}\r\nMAIL FROM:<a@outside.test>\r\nRCPT TO:<victim@outside.test>\r\n`);
        for (;;) {
          const r = await c.reply(300).catch(() => undefined);
          if (!r) break;
          assert.ok(r.code >= 500 || r.code === 221, `after refusal: ${r.text}`);
        }
        c.close();
      }
    }
    assert.equal(await queued(), 0);
  });

  it('submission without AUTH: 530 5.7.0 for every trick, no recipient accepted', async () => {
    // The library also cuts a client after 10 unauthenticated commands (421 4.4.2): a fresh
    // connection per trick.
    for (const rcpt of TRICKS) {
      const c = await RawSmtp.connect(gw.port('submission'), { localAddress: OUTSIDE });
      await c.reply();
      await c.cmd('EHLO outside.test');
      await c.starttls();
      await c.cmd(`EHLO ${HOST}`);
      const m = await c.cmd('MAIL FROM:<spammer@outside.test>');
      assert.match(m.text, /^530 5\.7\.0 /, `MAIL before AUTH (${rcpt})`);
      const r = await c.cmd(`RCPT TO:<${rcpt}>`);
      assert.ok(r.code >= 500, `RCPT ${rcpt} without AUTH: ${r.text}`);
      assert.ok((await c.cmd('DATA')).code >= 500, 'no DATA');
      c.close();
    }
    // In plain text (no STARTTLS) the answer is the same.
    const p = await RawSmtp.connect(gw.port('submission'), { localAddress: OUTSIDE });
    await p.reply();
    await p.cmd('HELO');
    await p.cmd('EHLO x');
    assert.match((await p.cmd('MAIL FROM:<spammer@outside.test>')).text, /^530 5\.7\.0 /);
    p.close();
    assert.equal(await queued(), 0);
  });

  it('backup MX from outside: every trick refused with a precise 5xx; a real local recipient accepted', async () => {
    for (const helo of [HOST, '', 'localhost', '[127.0.0.1]']) {
      const c = await RawSmtp.connect(gw.port('mx'), { localAddress: OUTSIDE });
      assert.equal((await c.reply()).code, 220);
      const h = await c.cmd(`EHLO ${helo}`);
      if (helo === '') assert.match(h.text, /^501 /, 'empty EHLO is a syntax error');
      if (helo === '') await c.cmd('EHLO outside.test');
      assert.equal((await c.cmd('MAIL FROM:<a@outside.test>')).code, 250);
      const seen: string[] = [];
      for (const rcpt of TRICKS) {
        const r = await c.cmd(`RCPT TO:<${rcpt}>`);
        assert.match(r.text, REFUSAL, `RCPT ${rcpt} (HELO "${helo}") must be refused: ${r.text}`);
        seen.push(`${r.text.slice(0, 9)} <${rcpt}>`);
      }
      if (helo === HOST) {
        // Routed forms get the precise routing refusal, not a generic one.
        for (const rcpt of ['victim%outside.test@isp.test', 'outside.test!victim@isp.test', '@isp.test:victim@outside.test']) {
          assert.ok(seen.includes(`553 5.1.3 <${rcpt}>`), `${rcpt}: ${seen.find((s) => s.endsWith(`<${rcpt}>`))}`);
        }
      }
      assert.ok((await c.cmd('DATA')).code >= 500, 'DATA without an accepted recipient is refused');
      // Positive control: a real recipient of the relay domain (in any case) is taken.
      assert.equal((await c.cmd('RCPT TO:<Postmaster@ISP.TEST>')).code, 250);
      await c.cmd('RSET');
      c.close();
    }
    assert.equal(await queued(), 0);
  });

  it('a client allowed to relay gets 553 5.1.3 for routed recipient forms', async () => {
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: INSIDE });
    assert.equal((await c.reply()).code, 220);
    await c.cmd('EHLO home.test');
    assert.equal((await c.cmd('MAIL FROM:<me@home.test>')).code, 250);
    for (const rcpt of ['victim%outside.test@dest.test', 'outside.test!victim@dest.test', 'victim!x@dest.test', '@relay.test:victim@dest.test', '@a.test,@b.test:victim@dest.test']) {
      const r = await c.cmd(`RCPT TO:<${rcpt}>`);
      assert.match(r.text, /^553 5\.1\.3 /, `${rcpt}: ${r.text}`);
    }
    for (const rcpt of ['"victim@outside.test"@dest.test', 'victim@outside.test@dest.test', 'victim@', '@dest.test', 'victim@[1.2.3.4.5]']) {
      const r = await c.cmd(`RCPT TO:<${rcpt}>`);
      assert.match(r.text, /^5(01|53) 5\.1\.3 /, `${rcpt}: ${r.text}`);
    }
    // A plain recipient still works for this client.
    assert.equal((await c.cmd('RCPT TO:<victim@dest.test>')).code, 250);
    c.close();
  });

  it('an authenticated account cannot send as another account', async () => {
    const c = await RawSmtp.connect(gw.port('submission'), { localAddress: INSIDE });
    await c.reply();
    await c.cmd('EHLO alice.test');
    await c.starttls();
    await c.cmd('EHLO alice.test');
    assert.equal((await c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`)).code, 235);
    for (const from of ['bob@isp.test', 'BOB@ISP.TEST', 'bob@isp.test.', 'alice%bob@isp.test', 'alice@isp.test.evil.test', 'postmaster@isp.test', 'bob@alice-bakery.test.evil.test']) {
      const r = await c.cmd(`MAIL FROM:<${from}>`);
      // 553 5.7.1 (not hers), or 501 5.1.7 where the library already finds the syntax bad.
      assert.match(r.text, /^(553 5\.7\.1|501 5\.1\.7) /, `MAIL FROM ${from}: ${r.text}`);
    }
    // Her own address works; a forged header From is refused at end of DATA.
    assert.equal((await c.cmd('MAIL FROM:<alice@isp.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<x@dest.test>')).code, 250);
    const d = await c.data(message({ from: 'bob@isp.test', to: 'x@dest.test' }));
    assert.match(d.text, /^550 5\.7\.1 /, `header From bob: ${d.text}`);
    c.close();
    assert.equal(await queued(), 0);
  });
});
