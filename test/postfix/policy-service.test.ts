/**
 * Scenario: a real Postfix (private instance on loopback) asks smarthost's
 * policy service at RCPT and at end of message (check_policy_service), and
 * relays what it accepts to a test sink. Clients bind 127.0.0.x addresses to
 * play subscribers. One quota: recipients counted through the gateway's own
 * intercept listener and through Postfix are the same counter.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import path from 'node:path';
import { SenderTokens } from '../../src/feedback/token';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { startPostfix, type TestPostfix } from '../helpers/postfix';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';
import { DNSBL, FEEDBACK, IDENTITY, NETBLOCKS, QUOTAS } from './fixtures';

describe('Postfix check_policy_service', () => {
  let dns: TestDns;
  let sink: TestMx;
  let gw: TestGateway;
  let pf: TestPostfix;
  let policyPort: number;

  before(async () => {
    dns = await startDnsServer();
    dns.set('3.0.0.127.zen.test', 'A', ['127.0.0.4']); // XBL: an infected subscriber
    sink = await startTestMx({ host: '127.0.0.1' });
    dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
    dns.set('mx.dest.test', 'A', ['127.0.0.1']);
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
        postfix: { policyService: { address: '127.0.0.1', port: 0 } },
      },
    });
    policyPort = gw.app!.postfix!.policyService!.port;
    const svc = `{ inet:127.0.0.1:${policyPort}, default_action=DEFER_IF_PERMIT }`;
    pf = await startPostfix({
      relayPort: sink.port,
      main: `smtpd_recipient_restrictions = check_policy_service ${svc}, permit_mynetworks, reject
smtpd_end_of_data_restrictions = check_policy_service ${svc}
smtpd_data_restrictions = check_policy_service ${svc}
smtpd_authorized_xclient_hosts = 127.0.0.0/8`,
    });
  });
  after(async () => {
    await pf?.stop();
    await gw?.stop();
    await sink?.close();
    await dns?.close();
  });

  async function session(ip: string, from: string): Promise<RawSmtp> {
    const c = await RawSmtp.connect(pf.port, { localAddress: ip });
    assert.match((await c.reply()).text, /^220 /);
    await c.cmd('EHLO pc.home.test');
    assert.match((await c.cmd(`MAIL FROM:<${from}>`)).text, /^250 /);
    return c;
  }

  /** A client Postfix authenticated, played with XCLIENT LOGIN= (Postfix then reports sasl_username). */
  async function authenticated(login: string, from: string): Promise<RawSmtp> {
    const c = await RawSmtp.connect(pf.port, { localAddress: '127.0.0.40' });
    assert.match((await c.reply()).text, /^220 /);
    await c.cmd('EHLO laptop');
    assert.match((await c.cmd(`XCLIENT LOGIN=${login}`)).text, /^220 /);
    await c.cmd('EHLO laptop');
    assert.match((await c.cmd(`MAIL FROM:<${from}>`)).text, /^250 /);
    return c;
  }

  it('judges a client Postfix authenticated as that account (sender entries, unknown login, suspension)', async () => {
    // 127.0.0.40 is in no subscriber netblock: only the account makes it acceptable.
    const ok = await authenticated('alice@isp.test', 'orders@alice-bakery.test');
    assert.match((await ok.cmd('RCPT TO:<you@dest.test>')).text, /^250 /);
    await ok.quit();
    const spoof = await authenticated('alice@isp.test', 'ceo@bank.test');
    assert.match((await spoof.cmd('RCPT TO:<you@dest.test>')).text, /^553 5\.7\.1 .*Sender address not owned by authenticated user.*\(rule /);
    await spoof.quit();
    const ghost = await authenticated('ghost@isp.test', 'ghost@isp.test');
    assert.match((await ghost.cmd('RCPT TO:<you@dest.test>')).text, /^530 5\.7\.0 .*Authentication required \(rule relay\.auth-required\)/);
    await ghost.quit();
    const suspended = await authenticated('mallory@isp.test', 'mallory@isp.test');
    assert.match((await suspended.cmd('RCPT TO:<you@dest.test>')).text, /^550 5\.7\.1 .*Account suspended/);
    await suspended.quit();
  });

  it('accepts a clean subscriber: Postfix relays to the sink', async () => {
    const c = await session('127.0.0.2', 'me@home.test');
    assert.match((await c.cmd('RCPT TO:<you@dest.test>')).text, /^250 /);
    assert.match((await c.data(message({ from: 'me@home.test', to: 'you@dest.test', subject: 'clean' }))).text, /^250 /);
    await c.quit();
    const got = await sink.waitFor(1, 20_000);
    assert.equal(got[0]!.rcptTo[0], 'you@dest.test');
    // PREPENDed at DATA: the sender token a complaint report maps back with (this address, Postfix's queue id).
    const token = /^X-Smarthost-Sender: (\S+)\r$/m.exec(got[0]!.data.toString())?.[1];
    assert.ok(token, got[0]!.data.toString().slice(0, 1500));
    const opened = SenderTokens.fromFile(path.join(gw.dir, 'sender-token.key'), 86_400_000).open(token) as { kind: string; id: string; queueId: string };
    assert.deepEqual([opened.kind, opened.id], ['ip', '127.0.0.2']);
    assert.match(pf.log(), new RegExp(`${opened.queueId}: client=.*\\[127\\.0\\.0\\.2\\]`));
  });

  it('refuses a DNSBL-listed subscriber at RCPT with the reply table code, text and rule', async () => {
    const c = await session('127.0.0.3', 'me@home.test');
    const r = await c.cmd('RCPT TO:<you@dest.test>');
    assert.match(r.text, /^554 5\.7\.1 .*Service unavailable; client host .*https:\/\/help\.isp\.test\/infected\?ip=127\.0\.0\.3 \(rule dnsbl:zen\.xbl\)$/);
    await c.quit();
  });

  it('refuses a sender domain the netblock may not use (identity) at RCPT', async () => {
    const c = await session('127.0.0.17', 'someone@elsewhere.test');
    const r = await c.cmd('RCPT TO:<you@dest.test>');
    assert.match(r.text, /^553 5\.7\.1 .*Sender domain not permitted from this network.*\(rule /);
    await c.quit();
  });

  it('counts one recipient quota across the native listener and Postfix', async () => {
    // Two recipients through the gateway's own intercept listener...
    const n = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.5' });
    await n.reply();
    await n.cmd('EHLO pc');
    await n.cmd('MAIL FROM:<me@home.test>');
    assert.match((await n.cmd('RCPT TO:<a@dest.test>')).text, /^250 /);
    assert.match((await n.cmd('RCPT TO:<b@dest.test>')).text, /^250 /);
    await n.quit();
    // ...leave one of the three an hour for the same subscriber through Postfix.
    const c = await session('127.0.0.5', 'me@home.test');
    assert.match((await c.cmd('RCPT TO:<c@dest.test>')).text, /^250 /);
    const r = await c.cmd('RCPT TO:<d@dest.test>');
    assert.match(r.text, /^451 4\.7\.1 .*Sending rate limit exceeded, try again later .*\(rule quota\.recipients:recipientsPerHour\)/);
    await c.quit();
  });

  it('holds a message when the policy says hold (Postfix hold queue, nothing relayed)', async () => {
    const before = sink.messages.length;
    const c = await session('127.0.0.18', 'orders@bakery.test');
    assert.match((await c.cmd('RCPT TO:<one@dest.test>')).text, /^250 /);
    assert.match((await c.cmd('RCPT TO:<two@dest.test>')).text, /^250 /); // over the business quota: hold
    assert.match((await c.data(message({ from: 'orders@bakery.test', to: 'one@dest.test', subject: 'held' }))).text, /^250 /);
    await c.quit();
    for (let i = 0; i < 50 && pf.held().length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(pf.held().length, 1, pf.log());
    assert.match(pf.log(), /hold: .*held by policy \(rule quota/);
    assert.equal(sink.messages.length, before);
  });

  it('metrics and policy explain show verdicts made through Postfix like native ones (via label)', async () => {
    const text = await (await fetch(`http://127.0.0.1:${gw.app!.admin.port}/metrics`)).text();
    assert.match(text, /^smarthost_policy_verdicts_total\{stage="connect",rule="[^"]+",action="reject",via="policy-service"\} 1$/m);
    assert.match(text, /^smarthost_policy_verdicts_total\{stage="rcpt",rule="[^"]+",action="tempfail",via="policy-service"\} 1$/m);
    assert.match(text, /^smarthost_policy_verdicts_total\{stage="rcpt",rule="[^"]+",action="accept",via="native"\} 2$/m);
    const vias = [...text.matchAll(/^smarthost_policy_verdicts_total\{[^}]*via="([^"]*)"/gm)].map((m) => m[1]);
    assert.deepEqual([...new Set(vias)].sort(), ['native', 'policy-service']);
    const res = await fetch(`http://127.0.0.1:${gw.app!.admin.port}/api/policy/explain?${new URLSearchParams({ listener: 'postfix', ip: '127.0.0.3', from: 'me@home.test', rcpt: 'you@dest.test' })}`, {
      method: 'POST',
      headers: { authorization: 'Bearer test-admin-token' },
    });
    assert.equal(res.status, 200);
    const r = (await res.json()) as { listener: string; role: string; final: { rule: string; reply: string } };
    assert.equal(r.listener, 'postfix');
    assert.equal(r.role, 'intercept');
    assert.equal(r.final.rule, 'dnsbl:zen.xbl');
    assert.match(r.final.reply, /^554 5\.7\.1 /);
  });

  it('answers malformed requests with 451 4.3.0 and stays in step; never crashes', async () => {
    const s = net.connect(policyPort, '127.0.0.1');
    let buf = '';
    s.on('data', (d) => (buf += d.toString()));
    await new Promise((r) => s.once('connect', r));
    const answers = async (n: number) => {
      for (let i = 0; i < 200 && buf.split('\n\n').length - 1 < n; i++) await new Promise((r) => setTimeout(r, 20));
      return buf.split('\n\n').filter(Boolean);
    };
    s.write('no equals sign here\n\n');
    s.write(`request=smtpd_access_policy\nx=${'y'.repeat(10_000)}\n\n`);
    s.write(`${Array.from({ length: 150 }, (_, i) => `a${i}=1`).join('\n')}\n\n`);
    s.write('request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=not-an-ip\n\n');
    s.write('request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=127.0.0.2\nsender=a@home.test\nrecipient=b@dest.test\ninstance=x1\n\n');
    const got = await answers(5);
    s.destroy();
    assert.equal(got.length, 5, buf);
    assert.match(got[0]!, /^action=451 4\.3\.0 .*malformed policy request: a line without name=value/);
    assert.match(got[1]!, /^action=451 4\.3\.0 .*line longer than 4096 bytes/);
    assert.match(got[2]!, /^action=451 4\.3\.0 .*more than 100 attributes/);
    assert.match(got[3]!, /^action=451 4\.3\.0 .*client_address is not an IP address/);
    assert.equal(got[4], 'action=DUNNO');
  });
});
