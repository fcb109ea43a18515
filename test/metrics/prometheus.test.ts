/**
 * Scenario: a real Prometheus scrapes a running gateway (every second)
 * while a small bounded load goes through it, then every PromQL expression
 * of the Grafana dashboards and of the alert rules is asked through
 * Prometheus' HTTP API: each must parse and return data. The load:
 *   accepted   alice (submissions, AUTH) → dest.test, delivered; intercept
 *              subscribers (127.0.0.6, .7, .33) with DKIM signing
 *   refused    127.0.0.20 outside the netblocks; 127.0.0.3 XBL-listed; a
 *              wrong password (bob); a suspended account (mallory); a quota
 *   deferred   later.test, whose MX is down
 *   bounced    ghost@strict.test, whose MX answers 550
 *   held       a business line over its recipient quota (onExceed: hold)
 * It also checks the exposition carries no user, address or IP as a label
 * value (alice@isp.test from 127.0.0.5 went through).
 *
 *   127.0.0.0/28   residential-dynamic     127.0.0.32/29  business
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { build } from '../../src/app';
import { loadConfigFile } from '../../src/config/load';
import { dkimKeygen } from '../../src/dkim/cli';
import { createLogger } from '../../src/log';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { prepareGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, message, RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';
import { promises as fsp } from 'node:fs';
import { alertRules, dashboardExprs, startPrometheus, stripComparisons, substituteGrafanaVars, type Prometheus } from './promql';
import { waitUntil } from '../helpers/wait-until';

const DNSBL = (server: string) => `
resolver: { servers: ["${server}"], timeout: 300ms, tries: 1 }
queryPrivate: true
zones:
  - name: zen
    zone: zen.test
    codes: { 127.0.0.2: sbl, 127.0.0.4-127.0.0.7: xbl, 127.0.0.10-127.0.0.11: pbl }
    actions:
      xbl: { intercept: { action: reject, reply: dnsbl_listed }, submission: hold }
      pbl: ignore
    onError: accept
`;

const QUOTAS = `
plans:
  residential: { messagesPerHour: 2 }
  business: { recipientsPerHour: 1, onExceed: hold }
defaultPlan: residential
classPlans: { residential-dynamic: residential, business: business }
`;

/** How long a wait here may take (a bounded poll, test/helpers/wait-until). */
const WAIT_MS = 60_000;

/** One message over the intercept listener from `ip`; the first non-2xx/3xx reply's code, or 250. */
async function intercept(gw: TestGateway, ip: string, from: string, to: string): Promise<number> {
  const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: ip });
  try {
    const greet = await c.reply();
    if (greet.code !== 220) return greet.code;
    for (const line of ['EHLO client.test', `MAIL FROM:<${from}>`, `RCPT TO:<${to}>`]) {
      const r = await c.cmd(line);
      if (r.code >= 400) return r.code;
    }
    return (await c.data(message({ from, to }))).code;
  } finally {
    await c.quit();
  }
}

async function submit(gw: TestGateway, ip: string, user: string, pass: string, to?: string): Promise<number> {
  const c = await RawSmtp.connect(gw.port('submissions'), { localAddress: ip, implicitTls: true });
  try {
    assert.equal((await c.reply()).code, 220);
    await c.cmd('EHLO laptop.test');
    const auth = await c.cmd(`AUTH PLAIN ${authPlain(user, pass)}`);
    if (auth.code !== 235 || !to) return auth.code;
    assert.equal((await c.cmd(`MAIL FROM:<${user}>`)).code, 250);
    assert.equal((await c.cmd(`RCPT TO:<${to}>`)).code, 250);
    return (await c.data(message({ from: user, to }))).code;
  } finally {
    await c.quit();
  }
}

// Bounded: a setup that cannot finish fails the file (after() stops what started) instead of hanging the run.
describe('metrics through a real Prometheus', { timeout: 240_000 }, () => {
  let dns: TestDns;
  let mx: TestMx;
  let strict: TestMx;
  let gw: TestGateway;
  let prom: Prometheus;
  let exposition = '';

  before(async () => {
    dns = await startDnsServer();
    mx = await startTestMx({ host: '127.0.0.2' });
    strict = await startTestMx({ host: '127.0.0.11', port: mx.port, rcptReplies: new Map([['ghost@strict.test', [550, '5.1.1 No such user here']]]) });
    dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
    dns.set('mx.dest.test', 'A', ['127.0.0.2']);
    dns.set('sender.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
    dns.set('later.test', 'MX', [{ exchange: 'mx.later.test', priority: 10 }]);
    dns.set('mx.later.test', 'A', ['127.0.0.10']); // nothing listens there: deferred
    dns.set('strict.test', 'MX', [{ exchange: 'mx.strict.test', priority: 10 }]);
    dns.set('mx.strict.test', 'A', ['127.0.0.11']);
    dns.set('3.0.0.127.zen.test', 'A', ['127.0.0.4']); // XBL
    dns.behave('6.0.0.127.zen.test', 'drop'); // the DNSBL times out for .6 (onError: accept)

    // The admin API on a port of its own choosing (0): a port probed free beforehand can be
    // taken by another test file before the gateway binds it. Prometheus is told the port after.
    const { dir, configFile } = await prepareGateway({
      netblocks: [
        { cidr: '127.0.0.0/28', class: 'residential-dynamic' },
        { cidr: '127.0.0.32/29', class: 'business' },
      ],
      policyFiles: { 'dnsbl.yaml': DNSBL(dns.server), 'quotas.yaml': QUOTAS },
      config: {
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port, backoff: ['30s'], connectTimeout: '1s' },
        dkim: { keysDir: 'dkim', signingDomain: 'isp.test' },
        metrics: { domains: ['dest.test'] },
        admin: { address: '127.0.0.1', port: 0, token: 'test-admin-token' },
      },
    });
    await dkimKeygen({ keysDir: path.join(dir, 'dkim'), domain: 'isp.test', selector: 's1', algo: 'ed25519' });
    const cfg = loadConfigFile(configFile);
    const app = await build(cfg, { logger: createLogger({ level: cfg.log.level, pretty: false }), scanIntervalMs: 200 });
    // Assigned before start(), so after() stops it whatever fails from here on.
    gw = {
      dir,
      configFile,
      app,
      port: (n) => app.port(n),
      async stop() {
        await app.stop();
        await fsp.rm(dir, { recursive: true, force: true });
      },
    };
    await app.start();
    prom = await startPrometheus([`127.0.0.1:${app.admin.port}`]);
    await waitUntil('the first scrape', async () => (await prom.query('up{job="smarthost"} == 1')).result.length > 0, WAIT_MS);

    // ---- the load ----
    assert.equal(await submit(gw, '127.0.0.5', 'alice@isp.test', 'alice-secret-1', 'erin@dest.test'), 250);
    assert.equal(await submit(gw, '127.0.0.5', 'bob@isp.test', 'not-bobs-password'), 535);
    assert.equal(await submit(gw, '127.0.0.5', 'mallory@isp.test', 'mallory-pw-333'), 535);
    assert.equal(await intercept(gw, '127.0.0.20', 'x@sender.test', 'erin@dest.test'), 554, 'outside the netblocks');
    assert.equal(await intercept(gw, '127.0.0.3', 'x@sender.test', 'erin@dest.test'), 554, 'XBL-listed');
    assert.equal(await intercept(gw, '127.0.0.6', 'x@sender.test', 'user@later.test'), 250, 'DNSBL timeout → accept; MX down → deferred');
    assert.equal(await intercept(gw, '127.0.0.7', 'x@sender.test', 'ghost@strict.test'), 250);
    assert.equal(await intercept(gw, '127.0.0.7', 'x@sender.test', 'ghost@strict.test'), 250);
    assert.ok((await intercept(gw, '127.0.0.7', 'x@sender.test', 'ghost@strict.test')) >= 400, 'third message over messagesPerHour: 2');
    assert.equal(await intercept(gw, '127.0.0.33', 'x@sender.test', 'erin@dest.test'), 250);
    assert.equal(await intercept(gw, '127.0.0.33', 'x@sender.test', 'erin@dest.test'), 250, 'over the business quota: held');
    assert.equal((await app.reload()).ok, true);

    await mx.waitFor(2);
    await waitUntil('a deferral and two bounces', async () => {
      const list = await app.qmgr.list();
      const body = (await app.metrics.render()).body;
      return list.some((e) => e.state === 'deferred') && /smarthost_delivery_attempts_total\{result="bounced",domain="other"\} 2/.test(body);
    }, WAIT_MS);
    exposition = (await app.metrics.render()).body;
    // Two scrapes after the load, so every rate() window holds two samples of every series.
    const scrapes = async () => Number(((await prom.query('count_over_time(up{job="smarthost"}[1m])')).result[0] as { value: [number, string] }).value[1]);
    const n0 = await scrapes();
    await waitUntil('two scrapes after the load', async () => (await scrapes()) >= n0 + 2, WAIT_MS);
  });

  after(async () => {
    // Each one stopped even if another fails to (a half-started gateway): nothing left holding the run open.
    const stops = await Promise.allSettled([prom?.stop(), gw?.stop(), strict?.close(), mx?.close(), dns?.close()]);
    const failed = stops.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  });

  it('the load shows in the metrics (accepted, refused, deferred, bounced, held)', async () => {
    const value = async (q: string) => {
      const r = await prom.query(q);
      assert.equal(r.status, 'success', `${q}: ${r.error}`);
      assert.ok(r.result.length > 0, `no data: ${q}`);
      return Number((r.result[0] as { value: [number, string] }).value[1]);
    };
    assert.equal(await value('up{job="smarthost"}'), 1);
    assert.ok((await value('sum(smarthost_messages_accepted_total)')) >= 6);
    assert.ok((await value('sum(smarthost_delivery_attempts_total{result="delivered",domain="dest.test"})')) >= 2);
    assert.ok((await value('sum(smarthost_delivery_attempts_total{result="deferred"})')) >= 1);
    assert.equal(await value('sum(smarthost_delivery_attempts_total{result="bounced"})'), 2);
    assert.ok((await value('sum(smarthost_refusals_total{reply="relay_denied"})')) >= 1);
    assert.ok((await value('sum(smarthost_refusals_total{reply="dnsbl_listed"})')) >= 1);
    assert.equal(await value('sum(smarthost_auth_attempts_total{result="fail"})'), 1);
    assert.equal(await value('sum(smarthost_auth_attempts_total{result="suspended"})'), 1);
    assert.ok((await value('sum(smarthost_quota_hits_total)')) >= 2, 'the residential refusal and the business hold');
    assert.equal(await value('sum(smarthost_messages_held_total)'), 1);
    assert.equal(await value('sum(smarthost_queue_messages{state="hold"})'), 1);
    assert.ok((await value('sum(smarthost_dnsbl_lookups_total{zone="zen",result="timeout"})')) >= 1);
    assert.ok((await value('sum(smarthost_dnsbl_lookups_total{zone="zen",result="listed"})')) >= 1);
    assert.ok((await value('sum(smarthost_intercept_messages_total{netblock_class="business"})')) >= 2);
    assert.ok((await value('sum(smarthost_dkim_signatures_total{algorithm="ed25519-sha256",result="ok"})')) >= 1);
    assert.equal(await value('sum(smarthost_policy_reloads_total{result="ok"})'), 1);
    assert.equal(await value('max(smarthost_accounts_suspended)'), 1, 'mallory');
  });

  it('every dashboard expression parses and returns data', async () => {
    const exprs = dashboardExprs();
    assert.ok(exprs.length >= 30, `found ${exprs.length} expressions`);
    const failures: string[] = [];
    for (const { where, expr } of exprs) {
      const q = substituteGrafanaVars(expr);
      const r = await prom.query(q);
      if (r.status !== 'success') failures.push(`${where}: does not parse: ${r.error}\n  ${q}`);
      else if (r.result.length === 0) failures.push(`${where}: no data\n  ${q}`);
    }
    assert.deepEqual(failures, []);
  });

  it('every alert rule parses, and the series it compares exist', async () => {
    const rules = alertRules();
    assert.ok(rules.length >= 7);
    const failures: string[] = [];
    for (const { alert, expr } of rules) {
      const full = await prom.query(expr);
      if (full.status !== 'success') failures.push(`${alert}: does not parse: ${full.error}`);
      const base = stripComparisons(expr);
      assert.notEqual(base, expr, `${alert}: no comparison found to strip`);
      const r = await prom.query(base);
      if (r.status !== 'success') failures.push(`${alert}: underlying expression does not parse: ${r.error}\n  ${base}`);
      else if (r.result.length === 0) failures.push(`${alert}: no data for\n  ${base}`);
    }
    assert.deepEqual(failures, []);
    // A healthy gateway under this load pages nobody for being down.
    const firing = await prom.query('ALERTS{alertname="SmarthostDown"}');
    assert.equal(firing.result.length, 0);
  });

  it('no label value is a user, an address or an IP', () => {
    assert.match(exposition, /smarthost_auth_attempts_total\{listener="submissions",mechanism="PLAIN",result="ok"\} 1/);
    const values: string[] = [];
    for (const line of exposition.split('\n')) {
      if (line.startsWith('#') || !line.includes('{')) continue;
      const labels = line.slice(line.indexOf('{') + 1, line.lastIndexOf('}'));
      for (const m of labels.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) values.push(`${m[1]}=${m[2]}`);
    }
    assert.ok(values.length > 100, `only ${values.length} label values`);
    for (const v of values) {
      const value = v.slice(v.indexOf('=') + 1);
      assert.doesNotMatch(value, /alice|bob|mallory|erin|ghost|isp\.test|sender\.test|strict\.test|later\.test/i, v);
      assert.doesNotMatch(value, /@/, v);
      assert.doesNotMatch(value, /\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}/, v);
      assert.doesNotMatch(value, /:.*:/, `${v} (an IPv6 address?)`);
    }
    // Bounded names from the policy files, not "other".
    assert.match(exposition, /smarthost_quota_hits_total\{limit="messagesPerHour"\} 1/);
    assert.match(exposition, /smarthost_quota_hits_total\{limit="recipientsPerHour"\} 1/);
    assert.match(exposition, /smarthost_policy_verdicts_total\{stage="connect",rule="[a-z.-]+",action="reject",via="native"\}/);
    // Destination domains: the configured one, everything else "other".
    assert.match(exposition, /domain="dest\.test"/);
    assert.match(exposition, /domain="other"/);
  });
});
