/**
 * Scenario: content verdicts from a real rspamd (a private instance, see
 * test/helpers/rspamd.ts) at end of DATA, over real SMTP:
 *   GTUBE on intercept → 554 5.7.1 (reject); on submission → held;
 *   a clean message → 250 and relayed;
 *   rspamd down → submission fails open (250, an error metric),
 *                 intercept fails closed (451 4.7.1);
 *   rspamd hung (its worker stopped) → the deadline passes: 451 on
 *                 intercept, well before the client's own timeout;
 *   warnOnly → GTUBE accepted, counted as "warn";
 *   content.yaml is reloaded with the policy, and an invalid one is refused.
 * Scan latencies are printed as test diagnostics.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { freePort } from '../helpers/process';
import { startRspamd, type TestRspamd } from '../helpers/rspamd';
import { authPlain, message, RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';

const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

const CONTENT = (url: string, extra = '') => `
rspamd: { url: "${url}", timeout: 5s }
listeners: [submission, intercept]
actions:
  reject: { intercept: reject, submission: hold }
onError: { intercept: tempfail, submission: accept }
${extra}`;

interface Reply {
  code: number;
  text: string;
}

async function viaIntercept(gw: TestGateway, ip: string, body: string): Promise<Reply> {
  const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: ip });
  try {
    assert.equal((await c.reply()).code, 220);
    await c.cmd('EHLO pc.home.test');
    assert.equal((await c.cmd('MAIL FROM:<someone@home.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<friend@recipient.test>')).code, 250);
    const r = await c.data(message({ from: 'someone@home.test', to: 'friend@recipient.test', body, headers: ['Message-ID: <m1@home.test>', 'Date: Mon, 1 Jan 2024 00:00:00 +0000'] }));
    return { code: r.code, text: r.text };
  } finally {
    await c.quit();
  }
}

async function viaSubmission(gw: TestGateway, body: string): Promise<Reply> {
  const c = await RawSmtp.connect(gw.port('submissions'), { localAddress: '127.0.0.5', implicitTls: true });
  try {
    assert.equal((await c.reply()).code, 220);
    await c.cmd('EHLO laptop.test');
    assert.equal((await c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`)).code, 235);
    assert.equal((await c.cmd('MAIL FROM:<alice@isp.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<friend@recipient.test>')).code, 250);
    const r = await c.data(message({ from: 'alice@isp.test', to: 'friend@recipient.test', body }));
    return { code: r.code, text: r.text };
  } finally {
    await c.quit();
  }
}

describe('content verdicts from a real rspamd', () => {
  let dns: TestDns;
  let mx: TestMx;
  let rspamd: TestRspamd;
  let gw: TestGateway;

  const body = async () => (await gw.app!.metrics.render()).body;
  const metric = async (re: RegExp): Promise<number> => Number(re.exec(await body())?.[1] ?? 0);
  const scans = (action: string, outcome: string) => metric(new RegExp(`^smarthost_content_scans_total\\{action="${action}",outcome="${outcome}"\\} (\\S+)$`, 'm'));
  const setContent = async (text: string) => {
    await fsp.writeFile(path.join(gw.dir, 'policies', 'content.yaml'), text);
    return gw.app!.reload();
  };

  before(async () => {
    dns = await startDnsServer();
    mx = await startTestMx({ host: '127.0.0.2' });
    dns.set('recipient.test', 'MX', [{ exchange: 'mx.recipient.test', priority: 10 }]);
    dns.set('mx.recipient.test', 'A', ['127.0.0.2']);
    rspamd = await startRspamd({ dns: dns.server });
    gw = await startGateway({
      policyFiles: { 'content.yaml': CONTENT(rspamd.url), 'containment.yaml': 'enabled: true\n' },
      config: { relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port, backoff: ['1s'] } },
    });
  });

  after(async () => {
    await gw?.stop();
    await rspamd?.stop();
    await mx?.close();
    await dns?.close();
  });

  it('GTUBE is refused on intercept and held on submission; a clean message passes', async (t) => {
    const spam = await viaIntercept(gw, '127.0.0.6', GTUBE);
    assert.equal(spam.code, 554);
    assert.match(spam.text, /^554 5\.7\.1 Message content rejected as spam/);
    assert.equal((await viaSubmission(gw, GTUBE)).code, 250);
    const held = await gw.app!.spool.list('hold');
    assert.equal(held.length, 1, 'the submission GTUBE is in the hold queue');
    const clean = await viaIntercept(gw, '127.0.0.7', 'Hi Bob, see you at lunch tomorrow. Anna');
    assert.equal(clean.code, 250);
    await mx.waitFor(1);
    assert.equal(mx.messages.length, 1, 'only the clean message left');
    assert.equal(await scans('reject', 'reject'), 1);
    assert.equal(await scans('reject', 'hold'), 1);
    assert.ok((await scans('no_action', 'accept')) + (await scans('add_header', 'accept')) >= 1);
    assert.equal(await metric(/^smarthost_containment_external_signals_total\{signal="contentSpam"\} (\S+)$/m), 2, 'both GTUBEs raise contentSpam');
    assert.match(await body(), /smarthost_policy_verdicts_total\{stage="data",rule="content.rspamd.reject",action="reject",via="native"\} 1/);
    const sum = await metric(/^smarthost_content_scan_duration_seconds_sum (\S+)$/m);
    const count = await metric(/^smarthost_content_scan_duration_seconds_count (\S+)$/m);
    t.diagnostic(`rspamd scans: ${count}, mean latency ${((sum / count) * 1000).toFixed(1)} ms`);
  });

  it('rspamd down: submission fails open, intercept fails closed (451 4.7.1)', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    assert.equal((await setContent(CONTENT(dead))).ok, true);
    assert.equal((await viaSubmission(gw, 'Hello again')).code, 250, 'fail-open');
    const r = await viaIntercept(gw, '127.0.0.6', 'Hello from the intercept side');
    assert.equal(r.code, 451);
    assert.match(r.text, /^451 4\.7\.1 Content scanner unavailable/);
    assert.equal(await metric(/^smarthost_content_scan_errors_total\{error="unavailable"\} (\S+)$/m), 2);
    assert.equal(await scans('error', 'accept'), 1);
    assert.equal(await scans('error', 'tempfail'), 1);
  });

  it('rspamd hung: the deadline passes and the intercept message is deferred', async (t) => {
    assert.equal((await setContent(CONTENT(rspamd.url).replace('timeout: 5s', 'timeout: 300ms'))).ok, true);
    rspamd.pause();
    try {
      const r = await viaIntercept(gw, '127.0.0.6', 'Anyone there?');
      assert.equal(r.code, 451);
    } finally {
      rspamd.resume();
    }
    assert.equal(await metric(/^smarthost_content_scan_errors_total\{error="timeout"\} (\S+)$/m), 1);
    t.diagnostic('deadline 300 ms: deferred with 451 4.7.1');
  });

  it('warnOnly: GTUBE is accepted and counted as "warn"; an invalid content.yaml is refused and the old one kept', async () => {
    assert.equal((await setContent(CONTENT(rspamd.url, 'warnOnly: true'))).ok, true);
    assert.equal((await viaIntercept(gw, '127.0.0.8', GTUBE)).code, 250);
    assert.equal(await scans('reject', 'warn'), 1);
    const bad = await setContent(CONTENT(rspamd.url, 'actions2: {}'));
    assert.equal(bad.ok, false);
    assert.match(bad.policy.error ?? '', /content\.yaml: actions2: unknown key/);
    assert.equal((await viaIntercept(gw, '127.0.0.9', GTUBE)).code, 250, 'the warnOnly content.yaml stays in force');
  });
});
