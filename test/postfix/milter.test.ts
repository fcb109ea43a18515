/**
 * Scenario: a real Postfix (private instance on loopback) runs every SMTP
 * session through smarthost's milter (smtpd_milters, no policy service: the
 * milter owns every stage) and relays to a test sink, where dkimpy checks
 * the signatures. Signed only as the client is authorised: the business
 * netblock 127.0.0.16/29 may sign as bakery.test (identity.yaml); a
 * residential subscriber claiming bakery.test gets the ISP's unaligned
 * fallback signature. Postfix's milter_default_action = tempfail when the
 * milter is down.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SenderTokens } from '../../src/feedback/token';
import { dkimpyVerify } from '../dkim/dkimpy';
import { keyAndPublish } from '../dkim/helpers';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { startPostfix, type TestPostfix } from '../helpers/postfix';
import { RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type Received, type TestMx } from '../helpers/test-mx';
import { DNSBL, FEEDBACK, IDENTITY, NETBLOCKS, QUOTAS } from './fixtures';

describe('Postfix smtpd_milters', () => {
  let dns: TestDns;
  let sink: TestMx;
  let gw: TestGateway;
  let pf: TestPostfix;
  let keysDir: string;
  const records: Record<string, string> = {};

  before(async () => {
    dns = await startDnsServer();
    dns.set('3.0.0.127.zen.test', 'A', ['127.0.0.4']);
    sink = await startTestMx({ host: '127.0.0.1' });
    keysDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-milter-keys-'));
    for (const [domain, selector, algo] of [['bakery.test', 'r1', 'rsa'], ['bakery.test', 'e1', 'ed25519'], ['isp.test', 's1', 'rsa'], ['alice-bakery.test', 'a1', 'rsa']] as const) {
      const k = await keyAndPublish(dns, { keysDir, domain, selector, algo });
      records[k.dnsName] = k.txtRecord;
    }
    gw = await startGateway({
      netblocks: NETBLOCKS,
      policyFiles: {
        'dnsbl.yaml': DNSBL(dns.server),
        'quotas.yaml': QUOTAS,
        'identity.yaml': IDENTITY,
        'feedback.yaml': FEEDBACK,
      },
      config: {
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: sink.port },
        dkim: { keysDir, signingDomain: 'isp.test' },
        postfix: { milter: { address: '127.0.0.1', port: 0 } },
      },
    });
    pf = await startPostfix({
      relayPort: sink.port,
      main: `smtpd_milters = inet:127.0.0.1:${gw.app!.postfix!.milter!.port}
milter_default_action = tempfail
milter_protocol = 6
smtpd_authorized_xclient_hosts = 127.0.0.0/8`,
    });
  });
  after(async () => {
    await pf?.stop();
    await gw?.stop();
    await sink?.close();
    await dns?.close();
    await fsp.rm(keysDir, { recursive: true, force: true });
  });

  /** `login`: a client Postfix authenticated, played with XCLIENT LOGIN= (the milter gets {auth_authen}). */
  async function send(ip: string, from: string, rcpts: string[], raw: string | Buffer, login?: string): Promise<{ replies: string[] }> {
    const c = await RawSmtp.connect(pf.port, { localAddress: ip });
    const replies = [(await c.reply()).text];
    replies.push((await c.cmd('EHLO pc.home.test')).text.split('\n')[0]!);
    if (login) {
      assert.match((await c.cmd(`XCLIENT LOGIN=${login}`)).text, /^220 /);
      await c.cmd('EHLO pc.home.test');
    }
    replies.push((await c.cmd(`MAIL FROM:<${from}>`)).text);
    for (const r of rcpts) replies.push((await c.cmd(`RCPT TO:<${r}>`)).text);
    if (replies.every((r) => /^2/.test(r))) replies.push((await c.data(raw)).text);
    await c.quit();
    return { replies };
  }

  async function arrived(n: number): Promise<Received> {
    return (await sink.waitFor(n, 30_000))[n - 1]!;
  }

  const msg = (from: string, subject: string, body = 'Fresh bread.\r\n') =>
    `From: Orders <${from}>\r\nTo: carol@dest.test\r\nSubject: ${subject}\r\nX-Folded: one\r\n\ttwo  three\r\n\r\n${body}.\r\n`;

  it('signs as the authorised customer domain (RSA + Ed25519); dkimpy verifies at the sink', async () => {
    const r = await send('127.0.0.17', 'orders@bakery.test', ['carol@dest.test'], msg('orders@bakery.test', 'bread'));
    assert.match(r.replies.at(-1)!, /^250 /, r.replies.join(' | '));
    const got = await arrived(1);
    const sigs = dkimpyVerify(got.data, records);
    assert.deepEqual(sigs, [{ d: 'bakery.test', ok: true }, { d: 'bakery.test', ok: true }], got.data.toString().slice(0, 2000));
    // The sender token a complaint report maps back with: this intercept address, Postfix's queue id.
    const token = /^X-Smarthost-Sender: (\S+)\r$/m.exec(got.data.toString())?.[1];
    assert.ok(token, got.data.toString().slice(0, 2000));
    const opened = SenderTokens.fromFile(path.join(gw.dir, 'sender-token.key'), 86_400_000).open(token) as { kind: string; id: string; queueId: string };
    assert.deepEqual([opened.kind, opened.id], ['ip', '127.0.0.17']);
    assert.match(pf.log(), new RegExp(`${opened.queueId}: client=`));
  });

  it('streams a large body (4 MB, long and dot-leading lines) and the signature still verifies', async () => {
    const line = `${'x'.repeat(990)}\r\n.leading dot\r\n  spaced   words \t\r\n`;
    const body = line.repeat(Math.ceil((4 * 1024 * 1024) / line.length));
    const stuffed = body.replace(/^\./gm, '..');
    const before = sink.messages.length;
    const r = await send('127.0.0.19', 'big@bakery.test', ['carol@dest.test'], msg('big@bakery.test', 'big', stuffed));
    assert.match(r.replies.at(-1)!, /^250 /, r.replies.join(' | '));
    const got = await arrived(before + 1);
    assert.ok(got.data.length > 4 * 1024 * 1024);
    assert.deepEqual(dkimpyVerify(got.data, records).map((s) => `${s.d}:${s.ok}`), ['bakery.test:true', 'bakery.test:true']);
  });

  it('never signs as a domain the client is not authorised for: the unaligned fallback instead', async () => {
    const before = sink.messages.length;
    const r = await send('127.0.0.2', 'me@home.test', ['carol@dest.test'], msg('ceo@bakery.test', 'spoof'));
    assert.match(r.replies.at(-1)!, /^250 /, r.replies.join(' | '));
    const got = await arrived(before + 1);
    assert.deepEqual(dkimpyVerify(got.data, records), [{ d: 'isp.test', ok: true }]);
  });

  it('signs for a client Postfix authenticated as its account allows, from any address', async () => {
    // 127.0.0.40 is outside every subscriber netblock: the account, not the address, decides.
    let before = sink.messages.length;
    const a = await send('127.0.0.40', 'orders@alice-bakery.test', ['carol@dest.test'], msg('orders@alice-bakery.test', 'roaming'), 'alice@isp.test');
    assert.match(a.replies.at(-1)!, /^250 /, a.replies.join(' | '));
    assert.deepEqual(dkimpyVerify((await arrived(before + 1)).data, records), [{ d: 'alice-bakery.test', ok: true }]);
    // bob's account has no alice-bakery.test sender entry (and identity refuses the header From).
    before = sink.messages.length;
    const b = await send('127.0.0.40', 'bob@isp.test', ['carol@dest.test'], msg('orders@alice-bakery.test', 'not bob'), 'bob@isp.test');
    assert.ok(b.replies.some((t) => /^550 5\.7\.1 .*Header From not owned by authenticated user.*\(rule /.test(t)), b.replies.join(' | '));
    assert.equal(sink.messages.length, before);
  });

  it('refuses with the reply table code and the rule (DNSBL-listed client, identity)', async () => {
    const x = await send('127.0.0.3', 'me@home.test', ['carol@dest.test'], '');
    assert.ok(x.replies.some((t) => /^554 5\.7\.1 .*\(rule dnsbl:zen\.xbl\)/.test(t)), x.replies.join(' | '));
    const i = await send('127.0.0.20', 'someone@elsewhere.test', ['carol@dest.test'], '');
    assert.ok(i.replies.some((t) => /^553 5\.7\.1 .*Sender domain not permitted from this network.*\(rule /.test(t)), i.replies.join(' | '));
  });

  it('quarantines (Postfix hold queue) what the policy holds; nothing is relayed', async () => {
    const before = sink.messages.length;
    const r = await send('127.0.0.18', 'orders@bakery.test', ['one@dest.test', 'two@dest.test'], msg('orders@bakery.test', 'held'));
    assert.match(r.replies.at(-1)!, /^250 /, r.replies.join(' | '));
    for (let i = 0; i < 50 && pf.held().length === 0; i++) await new Promise((res) => setTimeout(res, 100));
    assert.equal(pf.held().length, 1, pf.log());
    assert.match(pf.log(), /milter-hold: END-OF-MESSAGE from unknown\[127\.0\.0\.18\]: milter triggers HOLD action/);
    assert.equal(sink.messages.length, before);
  });

  it('metrics count the milter\'s verdicts with via="milter"', async () => {
    const text = await (await fetch(`http://127.0.0.1:${gw.app!.admin.port}/metrics`)).text();
    assert.match(text, /^smarthost_policy_verdicts_total\{stage="data",rule="[^"]+",action="accept",via="milter"\} [1-9]/m);
    assert.match(text, /^smarthost_policy_verdicts_total\{stage="connect",rule="[^"]+",action="reject",via="milter"\} 1$/m);
  });

  it('with the milter down, Postfix tempfails (milter_default_action = tempfail) and relays nothing', async () => {
    const before = sink.messages.length;
    await gw.app!.postfix!.milter!.close();
    const r = await send('127.0.0.21', 'orders@bakery.test', ['carol@dest.test'], msg('orders@bakery.test', 'down'));
    assert.ok(r.replies.some((t) => /^4\d\d 4\.7\.1 /.test(t)), r.replies.join(' | '));
    assert.ok(!r.replies.some((t) => /^250 2\.0\.0 Ok: queued/.test(t)), r.replies.join(' | '));
    await new Promise((res) => setTimeout(res, 300));
    assert.equal(sink.messages.length, before);
  });
});
