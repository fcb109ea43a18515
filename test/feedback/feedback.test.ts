/**
 * Scenario: complaint feedback loops over real SMTP. Alice and Bob send
 * mail through the gateway (submission) to a test MX, which keeps what it
 * received: each message carries the sealed X-Smarthost-Sender token. Two
 * providers' feedback loops (a Yahoo-style one, yahoo.test, and a
 * Microsoft-style one, hotmail.test: header section only) send ARF reports
 * about them, DKIM-signed with keys published on the test DNS server, to
 * fbl@gw.isp.test on the gateway's public mx listener. The attacker's side:
 * an unsigned report, one signed with another d=, one signed by a domain no
 * provider lists, one signed by the other provider, one altered after
 * signing, a report with a forged token: none counts, none touches Dave,
 * whose mail they all quote. An authentic report whose original carries no
 * token is counted as unmapped and kept. The address is local: nothing
 * else is accepted on the mx listener and no report is ever relayed.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, RawSmtp, message } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';
import { arfReport, forData, publishKey, signed, type SigningKey } from './arf-samples';

const FEEDBACK = (dns: string) => `
address: fbl@gw.isp.test
listeners: [mx]
dns: { servers: ["${dns}"], timeout: 2s }
providers:
  - name: yahoo
    domains: [yahoo.test]
  - name: microsoft
    domains: [hotmail.test, outlook.test]
keep: { dir: kept, max: 3 }
senderToken: { keyFile: sender-token.key }
`;

const ACCOUNTS = ['alice', 'bob', 'dave'].map((n, i) => ({ name: `${n}@isp.test`, password: `${n}-secret-${i}`, plan: 'residential' }));

async function submit(gw: TestGateway, user: string, pass: string, to: string, subject: string): Promise<void> {
  const c = await RawSmtp.connect(gw.port('submissions'), { localAddress: '127.0.0.5', implicitTls: true });
  try {
    assert.equal((await c.reply()).code, 220);
    await c.cmd('EHLO laptop.test');
    assert.equal((await c.cmd(`AUTH PLAIN ${authPlain(user, pass)}`)).code, 235);
    assert.equal((await c.cmd(`MAIL FROM:<${user}>`)).code, 250);
    assert.equal((await c.cmd(`RCPT TO:<${to}>`)).code, 250);
    assert.equal((await c.data(message({ from: user, to, subject, body: 'Lunch tomorrow?' }))).code, 250);
  } finally {
    await c.quit();
  }
}

/** Reports accepted with 250 so far. */
let sent = 0;

/** One report over SMTP to the mx listener from a provider's address; the DATA reply code. */
async function report(gw: TestGateway, from: string, msg: string, rcpt = 'fbl@gw.isp.test'): Promise<number> {
  const c = await RawSmtp.connect(gw.port('mx'), { localAddress: '127.0.0.77' });
  try {
    assert.equal((await c.reply()).code, 220);
    await c.cmd('EHLO mta.provider.test');
    assert.equal((await c.cmd(`MAIL FROM:<${from}>`)).code, 250);
    const r = await c.cmd(`RCPT TO:<${rcpt}>`);
    if (r.code !== 250) return r.code;
    const d = (await c.data(forData(msg))).code;
    if (d === 250) sent++;
    return d;
  } finally {
    await c.quit();
  }
}

describe('complaint feedback loops (ARF over SMTP)', () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: TestGateway;
  let yahoo: SigningKey;
  let hotmail: SigningKey;
  let evil: SigningKey;
  const originals = new Map<string, string>();

  const api = async (p: string): Promise<{ response: string; assessment: { score: number; fired: string[] } }> => {
    const r = await fetch(`http://127.0.0.1:${gw.app!.admin.port}${p}`, { headers: { authorization: 'Bearer test-admin-token' } });
    assert.equal(r.status, 200);
    return (await r.json()) as never;
  };
  const metric = async (re: RegExp): Promise<number> => Number(re.exec((await gw.app!.metrics.render()).body)?.[1] ?? 0);
  const reports = (provider: string, result: string) => metric(new RegExp(`^smarthost_feedback_reports_total\\{provider="${provider}",result="${result}"\\} (\\S+)$`, 'm'));
  /** Every result counted so far ("yahoo/unauthenticated 4, ..."): a failing count says what the report got instead. */
  const results = async () =>
    [...(await gw.app!.metrics.render()).body.matchAll(/^smarthost_feedback_reports_total\{provider="([^"]*)",result="([^"]*)"\} (\S+)$/gm)]
      .filter((m) => m[3] !== '0')
      .map((m) => `${m[1]}/${m[2]} ${m[3]}`)
      .join(', ');
  /** Wait until the gateway has consumed every report accepted so far (the metric counts each once). */
  const drained = async () => {
    const total = async () => {
      let sum = 0;
      for (const m of (await gw.app!.metrics.render()).body.matchAll(/^smarthost_feedback_reports_total\{[^}]*result="(?!retry)[^"]*"\} (\S+)$/gm)) sum += Number(m[1]);
      return sum;
    };
    const end = Date.now() + 20_000;
    while ((await total()) < sent) {
      if (Date.now() > end) throw new Error(`only ${await total()} of ${sent} reports consumed`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  before(async () => {
    dns = await startDnsServer();
    mx = await startTestMx({ host: '127.0.0.2' });
    dns.set('recipient.test', 'MX', [{ exchange: 'mx.recipient.test', priority: 10 }]);
    dns.set('mx.recipient.test', 'A', ['127.0.0.2']);
    yahoo = publishKey(dns, 'yahoo.test');
    hotmail = publishKey(dns, 'hotmail.test');
    evil = publishKey(dns, 'evil.test');
    dns.set('_dmarc.yahoo.test', 'TXT', ['v=DMARC1; p=reject']);
    dns.set('_dmarc.hotmail.test', 'TXT', ['v=DMARC1; p=reject']);
    gw = await startGateway({
      accounts: ACCOUNTS,
      policyFiles: { 'feedback.yaml': FEEDBACK(dns.server), 'containment.yaml': 'enabled: true\n' },
      config: {
        listeners: [
          { name: 'submissions', role: 'submission', address: '127.0.0.1', port: 0, security: 'implicit' },
          { name: 'mx', role: 'mx', address: '127.0.0.1', port: 0, security: 'starttls', greetDelay: '0ms' },
        ],
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port, backoff: ['1s'] },
      },
    });
    for (const a of ACCOUNTS) await submit(gw, a.name, a.password, 'user@recipient.test', `from ${a.name}`);
    for (const m of await mx.waitFor(3)) {
      const text = m.data.toString();
      const from = /^From: <([^>]+)>/m.exec(text)![1]!;
      originals.set(from, text);
    }
  });

  after(async () => {
    await gw?.stop();
    await mx?.close();
    await dns?.close();
  });

  it('every relayed message carries an opaque sender token, not the account name', () => {
    for (const [from, text] of originals) {
      const token = /^X-Smarthost-Sender: (\S+)\r$/m.exec(text)?.[1];
      assert.match(token ?? '', /^t1\.[A-Za-z0-9_-]{40,}$/, from);
      assert.doesNotMatch(token!, /alice|bob|dave|isp/);
    }
    const a = /^X-Smarthost-Sender: (\S+)/m.exec(originals.get('alice@isp.test')!)![1];
    const b = /^X-Smarthost-Sender: (\S+)/m.exec(originals.get('bob@isp.test')!)![1];
    assert.notEqual(a, b);
  });

  it('forged complaints do not count and leave the account alone', async () => {
    const dave = originals.get('dave@isp.test')!;
    const base = { to: 'fbl@gw.isp.test', original: dave };
    const yahooReport = arfReport({ ...base, from: 'feedback@arf.mail.yahoo.test' });
    // unsigned
    assert.equal(await report(gw, 'feedback@arf.mail.yahoo.test', yahooReport), 250);
    // signed by evil.test but claiming to be Yahoo (wrong d=)
    assert.equal(await report(gw, 'feedback@arf.mail.yahoo.test', await signed(yahooReport, evil)), 250);
    // From an unlisted domain, properly signed by it
    assert.equal(await report(gw, 'abuse@evil.test', await signed(arfReport({ ...base, from: 'abuse@evil.test' }), evil)), 250);
    // signed by the other provider (d=hotmail.test on a yahoo.test report)
    assert.equal(await report(gw, 'feedback@arf.mail.yahoo.test', await signed(yahooReport, hotmail)), 250);
    // a genuine Yahoo signature, then the report altered (another original swapped in)
    const genuine = await signed(arfReport({ ...base, from: 'feedback@arf.mail.yahoo.test', original: originals.get('bob@isp.test')! }), yahoo);
    const tampered = genuine.replace(/^X-Smarthost-Sender: \S+/m, `X-Smarthost-Sender: ${/^X-Smarthost-Sender: (\S+)/m.exec(dave)![1]}`);
    assert.notEqual(tampered, genuine);
    assert.equal(await report(gw, 'feedback@arf.mail.yahoo.test', tampered), 250);
    // outlook.test publishes no DMARC record: only the DKIM rule stands between this and a complaint
    assert.equal(await report(gw, 'staff@outlook.test', arfReport({ ...base, from: 'staff@outlook.test' })), 250);
    await drained();
    assert.equal(await reports('microsoft', 'unauthenticated'), 1, await results());
    assert.equal(await reports('yahoo', 'unauthenticated'), 4, await results());
    assert.equal(await reports('none', 'unknown_provider'), 1, await results());
    assert.equal(await reports('yahoo', 'counted'), 0, await results());
    const d = await api('/api/containment?account=dave@isp.test');
    assert.equal(d.response, 'none');
    assert.equal(d.assessment.fired.includes('complaints'), false);
    assert.equal(await metric(/^smarthost_containment_external_signals_total\{signal="complaint"\} (\S+)$/m), 0);
    // Kept for the abuse desk, bounded (keep.max: 3 per kind).
    assert.equal(readdirSync(path.join(gw.dir, 'kept', 'unauthenticated')).filter((n) => n.endsWith('.eml')).length, 3);
    assert.equal(readdirSync(path.join(gw.dir, 'kept', 'unknown_provider')).length, 1);
  });

  it('an authenticated Yahoo-style report holds the account that sent the original', async () => {
    const r = await signed(arfReport({ from: 'feedback@arf.mail.yahoo.test', to: 'fbl@gw.isp.test', original: originals.get('alice@isp.test')!, userAgent: 'Yahoo!-Mail-Feedback/2.0' }), yahoo);
    assert.equal(await report(gw, 'feedback@arf.mail.yahoo.test', r), 250);
    await drained();
    assert.equal(await reports('yahoo', 'counted'), 1, await results());
    const a = await api('/api/containment?account=alice@isp.test');
    assert.equal(a.response, 'hold', 'one complaint holds a residential account (containment.yaml defaults)');
    assert.ok(a.assessment.fired.includes('complaints'));
    assert.equal(await metric(/^smarthost_containment_external_signals_total\{signal="complaint"\} (\S+)$/m), 1);
    assert.equal(await metric(/^smarthost_containment_responses_total\{response="hold"\} (\S+)$/m), 1);
  });

  it('a Microsoft-style report with the header section only counts too; not-spam does not', async () => {
    const bob = originals.get('bob@isp.test')!;
    const ns = await signed(arfReport({ from: 'staff@hotmail.test', to: 'fbl@gw.isp.test', original: bob, headersOnly: true, feedbackType: 'not-spam', userAgent: 'Microsoft JMRP' }), hotmail);
    assert.equal(await report(gw, 'staff@hotmail.test', ns), 250);
    await drained();
    assert.equal(await reports('microsoft', 'not_complaint'), 1, await results());
    assert.equal((await api('/api/containment?account=bob@isp.test')).response, 'none');
    const r = await signed(arfReport({ from: 'staff@hotmail.test', to: 'fbl@gw.isp.test', original: bob, headersOnly: true, userAgent: 'Microsoft JMRP' }), hotmail);
    assert.equal(await report(gw, 'staff@hotmail.test', r), 250);
    await drained();
    assert.equal(await reports('microsoft', 'counted'), 1, await results());
    assert.equal((await api('/api/containment?account=bob@isp.test')).response, 'hold');
  });

  it('an authentic report that cannot be mapped is counted and kept', async () => {
    const noToken = 'From: <someone@elsewhere.test>\r\nTo: <user@recipient.test>\r\nSubject: not ours\r\nMessage-ID: <x1@elsewhere.test>\r\n\r\nBuy now\r\n';
    const forgedToken = `X-Smarthost-Sender: t1.${'A'.repeat(60)}\r\n${noToken}`;
    for (const original of [noToken, forgedToken]) {
      assert.equal(await report(gw, 'feedback@arf.mail.yahoo.test', await signed(arfReport({ from: 'feedback@arf.mail.yahoo.test', to: 'fbl@gw.isp.test', original }), yahoo)), 250);
    }
    await drained();
    assert.equal(await reports('yahoo', 'unmapped'), 2, await results());
    assert.equal(readdirSync(path.join(gw.dir, 'kept', 'unmapped')).filter((n) => n.endsWith('.eml')).length, 2);
  });

  it('the address is local: nothing else is accepted on the mx listener, no report is relayed', async () => {
    assert.equal(await report(gw, 'x@provider.test', 'Subject: x\r\n\r\nx\r\n', 'someone@recipient.test'), 550, 'not an open relay');
    assert.equal(await report(gw, 'x@provider.test', 'Subject: x\r\n\r\nx\r\n', 'postmaster@gw.isp.test'), 550, 'only the configured address');
    assert.equal(mx.messages.length, 3, 'the test MX got the three subscriber messages and no report');
  });
});
