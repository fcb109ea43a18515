/**
 * Scenario: a client that may relay (an intercept subscriber, an account on
 * submission) gives an address-literal recipient, user@[192.0.2.1] or
 * user@[IPv6:...]. The relay never delivers to one (src/relay/mx.ts), and
 * handing it to an upstream would let the client aim mail at any address:
 * the built-in rule relay.address-literal refuses it at RCPT with 550
 * 5.1.2, in every spelling, on every listener, while the other recipients
 * of the same transaction are taken and delivered without it. A literal in
 * MAIL FROM is not this rule's business. Real SMTP over loopback to a
 * gateway in this process, relaying to a test MX found through a test DNS.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, message, RawSmtp } from '../helpers/smtp-client';
import { startDestination, type TestMx } from '../helpers/test-mx';
import { formatReply } from '../../src/replies';

const SUBSCRIBER = '127.0.0.5';
const REFUSED = formatReply('literal_recipient');

/** Every spelling the parser accepts as an address literal. */
const LITERALS = [
  'x@[127.0.0.1]',
  'x@[192.0.2.1]',
  'postmaster@[127.0.0.1]',
  'x@[IPv6:::1]',
  'x@[ipv6:::1]',
  'x@[IPV6:0:0:0:0:0:0:0:1]',
  'X@[IPv6:2001:DB8::25]',
  'x@[IPv6:::ffff:127.0.0.1]',
  '"x"@[127.0.0.1]',
  '"x.y"@[IPv6:::1]',
];

describe('address-literal recipients', () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: TestGateway;

  before(async () => {
    ({ dns, mx } = await startDestination());
    gw = await startGateway({
      policyFiles: { 'rules.yaml': 'relayDomains: [dest.test]\n' },
      config: {
        listeners: [
          { name: 'submission', role: 'submission', address: '127.0.0.1', port: 0, security: 'starttls' },
          { name: 'intercept', role: 'intercept', address: '127.0.0.1', port: 0, security: 'starttls', greetDelay: '0ms' },
          { name: 'mx', role: 'mx', address: '127.0.0.1', port: 0, security: 'starttls', greetDelay: '0ms' },
        ],
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port },
      },
    });
  });
  after(async () => {
    await gw.stop();
    await mx.close();
    await dns.close();
  });

  async function intercept(from = 'me@home.test'): Promise<RawSmtp> {
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: SUBSCRIBER });
    assert.equal((await c.reply()).code, 220);
    await c.cmd('EHLO home.test');
    assert.equal((await c.cmd(`MAIL FROM:<${from}>`)).code, 250);
    return c;
  }

  it('intercept: every literal spelling is refused at RCPT with 550 5.1.2; the good recipient alone is delivered', async () => {
    const before = mx.messages.length;
    const c = await intercept();
    assert.equal((await c.cmd('RCPT TO:<erin@dest.test>')).text, formatReply('recipient_ok'));
    for (const rcpt of LITERALS) assert.equal((await c.cmd(`RCPT TO:<${rcpt}>`)).text, REFUSED, rcpt);
    // After the refusals the transaction goes on: a second good recipient, then the message.
    assert.equal((await c.cmd('RCPT TO:<frank@dest.test>')).code, 250);
    const d = await c.data(message({ from: 'me@home.test', to: 'erin@dest.test', subject: 'literal test' }));
    assert.match(d.text, /^250 2\.0\.0 Ok: queued as /);
    await c.quit();
    const got = await mx.waitFor(before + 1);
    assert.deepEqual(got[before]!.rcptTo, ['erin@dest.test', 'frank@dest.test']);
    assert.equal(mx.messages.length, before + 1);
    // Nothing left behind to bounce: the queue empties (no DSN for the refused recipients).
    for (let i = 0; i < 50 && (await gw.app!.qmgr.list()).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await gw.app!.qmgr.list(), []);
  });

  it('submission: an authenticated account is refused the same way', async () => {
    const c = await RawSmtp.connect(gw.port('submission'), { localAddress: SUBSCRIBER });
    await c.reply();
    await c.cmd('EHLO alice.test');
    await c.starttls();
    await c.cmd('EHLO alice.test');
    assert.equal((await c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`)).code, 235);
    assert.equal((await c.cmd('MAIL FROM:<alice@isp.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<x@[192.0.2.1]>')).text, REFUSED);
    assert.equal((await c.cmd('RCPT TO:<x@[IPv6:2001:db8::1]>')).text, REFUSED);
    assert.equal((await c.cmd('RCPT TO:<grace@dest.test>')).code, 250);
    await c.quit();
  });

  it('the mx listener refuses a literal with the same reply, before its relayDomains gate', async () => {
    const c = await RawSmtp.connect(gw.port('mx'), { localAddress: '127.0.0.20' });
    assert.equal((await c.reply()).code, 220);
    await c.cmd('EHLO outside.test');
    assert.equal((await c.cmd('MAIL FROM:<a@outside.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<postmaster@[127.0.0.1]>')).text, REFUSED);
    assert.equal((await c.cmd('RCPT TO:<x@elsewhere.test>')).text, formatReply('recipient_relay_denied'));
    assert.equal((await c.cmd('RCPT TO:<x@dest.test>')).code, 250);
    c.close();
  });

  it('routed forms that end in a literal get the routing refusal (553 5.1.3), checked first; bad literals stay syntax errors', async () => {
    const c = await intercept();
    for (const rcpt of ['@relay.test:x@[1.2.3.4]', '@a.test,@b.test:x@[IPv6:::1]', 'x%dest.test@[127.0.0.1]', 'dest.test!x@[127.0.0.1]']) {
      assert.equal((await c.cmd(`RCPT TO:<${rcpt}>`)).text, formatReply('routed_recipient'), rcpt);
    }
    for (const rcpt of ['x@[ipv4:1.2.3.4]', 'x@[1.2.3]', 'x@[IPv6:1.2.3.4]', 'x@[dest.test]', 'x@[]', 'x@[IPv6:::1']) {
      assert.match((await c.cmd(`RCPT TO:<${rcpt}>`)).text, /^501 5\.1\.3 /, rcpt);
    }
    assert.equal((await c.cmd('RCPT TO:<erin@dest.test>')).code, 250);
    c.close();
  });

  it('a literal in MAIL FROM is not refused by this rule: the message to a good recipient is delivered', async () => {
    const before = mx.messages.length;
    const c = await intercept('me@[127.0.0.5]');
    assert.equal((await c.cmd('RCPT TO:<erin@dest.test>')).code, 250);
    assert.match((await c.data(message({ from: 'me@home.test', to: 'erin@dest.test' }))).text, /^250 /);
    await c.quit();
    const got = await mx.waitFor(before + 1);
    assert.equal(got[before]!.mailFrom, 'me@[127.0.0.5]');
  });

  it('each refusal is a policy verdict of relay.address-literal (metrics)', async () => {
    const text = await (await fetch(`http://127.0.0.1:${gw.app!.admin.port}/metrics`)).text();
    // intercept 10, submission 2, mx 1.
    assert.match(text, /^smarthost_policy_verdicts_total\{stage="rcpt",rule="relay\.address-literal",action="reject",via="native"\} 13$/m);
  });
});
