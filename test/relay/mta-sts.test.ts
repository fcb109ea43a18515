/**
 * MTA-STS (RFC 8461) against real parts on loopback: the test DNS server
 * answers the `_mta-sts` TXT, MX and A records; a node HTTPS server with a
 * certificate from a private test CA serves the policies; test MXes
 * (smtp-server) on 127.0.19.x present a CA-signed certificate for their
 * name, a CA-signed certificate for another name, or no STARTTLS at all.
 *
 * The guarantees, as an attacker would try to break them: under enforce no
 * message reaches an MX the policy does not list, an MX with a certificate
 * that does not verify for its name, or an MX without STARTTLS (the server
 * never sees MAIL FROM); testing mode delivers and reports; the policy
 * cache follows max_age and the TXT id, and survives fetch failures.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { createDeliveryAgent } from '../../src/relay/deliver';
import { createMxResolver } from '../../src/relay/mx';
import { MtaStsPolicies, mxMatches, parsePolicy } from '../../src/relay/mta-sts';
import type { RelayConfig } from '../../src/relay/config';
import type { TlsPolicyEvent } from '../../src/relay/secure-transport';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { MetricsCatalogue } from '../../src/metrics/catalogue';
import { TlsReportCollector, TlsReporter } from '../../src/relay/tls-report';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startTestCa, type TestCa } from '../helpers/test-ca';
import { captureLogger, job, relayConfig, startMxGroup, type CountedMx } from './fixtures';
import { startReportEndpoint } from './report-endpoint';

let dns: TestDns;
let ca: TestCa;
let web: https.Server;
let webPort: number;
/** Host header → policy body (absent: 404). */
const policies = new Map<string, string>();
const fetches: string[] = [];
let mxPort: number;
let good: CountedMx, wrongCert: CountedMx, plain: CountedMx, unlisted: CountedMx;
/** MAIL FROM commands each MX saw, in plaintext or not. */
const mailFroms = new Map<string, number>();

const IP = { good: '127.0.19.11', wrong: '127.0.19.12', plain: '127.0.19.13', unlisted: '127.0.19.14' };

function policy(mode: string, mx: string[], maxAge = 86400): string {
  return ['version: STSv1', `mode: ${mode}`, ...mx.map((m) => `mx: ${m}`), `max_age: ${maxAge}`, ''].join('\r\n');
}

/** A recipient domain with one or more MX hosts and (optionally) an MTA-STS policy. */
function domain(name: string, mxs: Array<[string, number]>, body?: string, id = '1'): void {
  dns.set(name, 'MX', mxs.map(([exchange, priority]) => ({ exchange, priority })));
  if (body === undefined) return;
  dns.set(`_mta-sts.${name}`, 'TXT', [`v=STSv1; id=${id};`]);
  dns.set(`mta-sts.${name}`, 'A', ['127.0.0.1']);
  policies.set(`mta-sts.${name}`, body);
}

const POLICY_DOMAINS = ['enf-good.test', 'enf-wrong.test', 'enf-plain.test', 'enf-unlisted.test', 'enf-mixed.test', 'testing-wrong.test', 'testing-plain.test', 'cache.test', 'down.test'];

before(async () => {
  dns = await startDnsServer();
  ca = await startTestCa();
  const policyHosts = await ca.leaf(POLICY_DOMAINS.map((d) => `mta-sts.${d}`));
  const mxCert = await ca.leaf(['mx-good.sts.test', 'mx-plain.sts.test', 'mx-unlisted.other.test']);
  const elsewhere = await ca.leaf(['elsewhere.test']);
  web = https.createServer({ key: policyHosts.key, cert: policyHosts.cert }, (req, res) => {
    const host = String(req.headers.host ?? '').replace(/:\d+$/, '');
    fetches.push(host);
    const body = policies.get(host);
    if (req.url !== '/.well-known/mta-sts.txt' || body === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' }).end(body);
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  webPort = (web.address() as AddressInfo).port;

  const watch = (ip: string) => ({
    onMailFrom(_a: unknown, _s: unknown, cb: () => void) {
      mailFroms.set(ip, (mailFroms.get(ip) ?? 0) + 1);
      cb();
    },
  });
  const g = await startMxGroup([
    { host: IP.good, starttls: true, extra: { key: mxCert.key, cert: mxCert.cert, ...watch(IP.good) } },
    { host: IP.wrong, starttls: true, extra: { key: elsewhere.key, cert: elsewhere.cert, ...watch(IP.wrong) } },
    // smtp-server still accepts a hidden STARTTLS: refuse it outright.
    { host: IP.plain, starttls: false, extra: { disabledCommands: ['AUTH', 'STARTTLS'], ...watch(IP.plain) } },
    { host: IP.unlisted, starttls: true, extra: { key: mxCert.key, cert: mxCert.cert, ...watch(IP.unlisted) } },
  ]);
  mxPort = g.port;
  [good, wrongCert, plain, unlisted] = g.mxs;
  dns.set('mx-good.sts.test', 'A', [IP.good]);
  dns.set('mx-wrong.sts.test', 'A', [IP.wrong]);
  dns.set('mx-plain.sts.test', 'A', [IP.plain]);
  dns.set('mx-unlisted.other.test', 'A', [IP.unlisted]);

  domain('enf-good.test', [['mx-good.sts.test', 10]], policy('enforce', ['*.sts.test']));
  domain('enf-wrong.test', [['mx-wrong.sts.test', 10]], policy('enforce', ['*.sts.test']));
  domain('enf-plain.test', [['mx-plain.sts.test', 10]], policy('enforce', ['*.sts.test']));
  domain('enf-unlisted.test', [['mx-unlisted.other.test', 10]], policy('enforce', ['mx-good.sts.test']));
  domain('enf-mixed.test', [['mx-unlisted.other.test', 5], ['mx-good.sts.test', 10]], policy('enforce', ['*.sts.test']));
  domain('testing-wrong.test', [['mx-wrong.sts.test', 10]], policy('testing', ['*.sts.test']));
  domain('testing-plain.test', [['mx-plain.sts.test', 10]], policy('testing', ['*.sts.test']));
  domain('nopolicy.test', [['mx-wrong.sts.test', 10]]);
});

after(async () => {
  await Promise.all([good, wrongCert, plain, unlisted].filter(Boolean).map((m) => m.close()));
  await new Promise<void>((resolve) => (web ? web.close(() => resolve()) : resolve()));
  await dns?.close();
});

function cfg(over: Partial<RelayConfig> = {}): RelayConfig {
  return relayConfig(dns, mxPort, {
    poolIdleMs: 0,
    mtaSts: { enabled: true, httpsPort: webPort, ca: ca.caPem, caFile: 'test-ca.pem', fetchTimeoutMs: 3000 },
    ...over,
  });
}

async function deliverTo(rcpt: string): Promise<{ outcome: Awaited<ReturnType<ReturnType<typeof createDeliveryAgent>['deliver']>>[number]; events: TlsPolicyEvent[]; lines: Array<Record<string, unknown>> }> {
  const events: TlsPolicyEvent[] = [];
  const log = captureLogger();
  const agent = createDeliveryAgent(cfg(), { hostname: 'gw.test', logger: log.logger, tlsObserver: { onTlsPolicy: (e) => events.push(e) } });
  try {
    const [outcome] = await agent.deliver(job([rcpt]));
    return { outcome, events, lines: log.lines };
  } finally {
    await agent.close();
  }
}

const seen = (ip: string): number => mailFroms.get(ip) ?? 0;

test('policy syntax: fields, mx patterns, max_age cap; invalid policies are refused', () => {
  assert.deepEqual(parsePolicy(policy('enforce', ['mx.a.test', '*.b.test'], 99999999999)), undefined, 'max_age over 10 digits is invalid');
  assert.deepEqual(parsePolicy(policy('enforce', ['mx.a.test', '*.b.test'], 999999999)), { mode: 'enforce', mx: ['mx.a.test', '*.b.test'], maxAgeS: 31_557_600 });
  assert.equal(parsePolicy('version: STSv1\nmode: enforce\nmax_age: 60\n'), undefined, 'enforce without mx');
  assert.equal(parsePolicy('version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 60\n'), undefined);
  assert.equal(parsePolicy('version: STSv1\nmode: strict\nmx: a.test\nmax_age: 60\n'), undefined);
  assert.equal(parsePolicy('<html>not a policy</html>'), undefined);
  assert.ok(mxMatches(['*.b.test'], 'mx1.b.test'));
  assert.ok(!mxMatches(['*.b.test'], 'a.mx1.b.test'), 'a wildcard stands for one label only');
  assert.ok(!mxMatches(['*.b.test'], 'b.test'));
  assert.ok(!mxMatches(['mx.a.test'], 'mx.a.test.evil.test'));
  assert.ok(mxMatches(['MX.A.test'.toLowerCase()], 'mx.a.TEST.'));
});

test('enforce: delivered over verified TLS to an MX the policy lists', { timeout: 20_000 }, async () => {
  const before = good.messages.length;
  const { outcome, events } = await deliverTo('a@enf-good.test');
  assert.equal(outcome.kind, 'delivered', JSON.stringify(outcome));
  assert.equal(good.messages.length, before + 1);
  assert.equal(good.messages.at(-1)?.secure, true);
  assert.deepEqual(events.map((e) => [e.mechanism, e.mode, e.result]), [['mta-sts', 'enforce', 'success']]);
});

test('enforce: a certificate for another name defers; the MX never sees MAIL FROM', { timeout: 20_000 }, async () => {
  const before = seen(IP.wrong);
  const { outcome, events } = await deliverTo('a@enf-wrong.test');
  assert.equal(outcome.kind, 'deferred', JSON.stringify(outcome));
  assert.match(outcome.kind === 'deferred' ? outcome.error : '', /certificate not verified for mx-wrong\.sts\.test/);
  assert.equal(outcome.kind === 'deferred' && outcome.statusCode, '4.7.5');
  assert.equal(seen(IP.wrong), before, 'no MAIL FROM reached the MX with the wrong certificate');
  assert.ok(events.some((e) => e.result === 'certificate-host-mismatch' && e.mode === 'enforce'), JSON.stringify(events));
});

test('enforce: an MX without STARTTLS defers; nothing goes in plaintext', { timeout: 20_000 }, async () => {
  const before = seen(IP.plain);
  const { outcome, events } = await deliverTo('a@enf-plain.test');
  assert.equal(outcome.kind, 'deferred', JSON.stringify(outcome));
  assert.equal(seen(IP.plain), before, 'no MAIL FROM in plaintext');
  assert.ok(events.some((e) => e.result === 'starttls-not-supported'), JSON.stringify(events));
  assert.equal(outcome.kind === 'deferred' && outcome.statusCode, '4.7.4');
});

test('enforce: an MX the policy does not list is never connected to', { timeout: 20_000 }, async () => {
  const connections = unlisted.connections.total;
  const { outcome, events } = await deliverTo('a@enf-unlisted.test');
  assert.equal(outcome.kind, 'deferred', JSON.stringify(outcome));
  assert.match(outcome.kind === 'deferred' ? outcome.error : '', /4\.7\.5 No usable MX host of enf-unlisted\.test: mx-unlisted\.other\.test \(not in the MTA-STS policy\)/);
  assert.equal(outcome.kind === 'deferred' && outcome.statusCode, '4.7.5');
  assert.equal(unlisted.connections.total, connections, 'no connection to the unlisted MX (its certificate would even verify)');
  assert.deepEqual(events.map((e) => e.result), ['validation-failure']);
});

test('enforce: the preferred but unlisted MX is skipped, the listed one gets the mail', { timeout: 20_000 }, async () => {
  const connections = unlisted.connections.total;
  const before = good.messages.length;
  const { outcome } = await deliverTo('b@enf-mixed.test');
  assert.equal(outcome.kind, 'delivered', JSON.stringify(outcome));
  assert.equal(unlisted.connections.total, connections);
  assert.equal(good.messages.length, before + 1);
});

test('testing: delivered despite a wrong certificate, and the failure is reported', { timeout: 20_000 }, async () => {
  const before = wrongCert.messages.length;
  const { outcome, events, lines } = await deliverTo('a@testing-wrong.test');
  assert.equal(outcome.kind, 'delivered', JSON.stringify(outcome));
  assert.equal(wrongCert.messages.length, before + 1);
  assert.deepEqual(events.map((e) => [e.mode, e.result]), [['testing', 'certificate-not-trusted']]);
  assert.ok(lines.some((l) => l.evt === 'tls_policy' && l.result === 'certificate-not-trusted'));
});

test('testing: delivered in plaintext to an MX without STARTTLS, reported as starttls-not-supported', { timeout: 20_000 }, async () => {
  const before = plain.messages.length;
  const { outcome, events } = await deliverTo('a@testing-plain.test');
  assert.equal(outcome.kind, 'delivered', JSON.stringify(outcome));
  assert.equal(plain.messages.length, before + 1);
  assert.equal(plain.messages.at(-1)?.secure, false);
  assert.deepEqual(events.map((e) => e.result), ['starttls-not-supported']);
});

test('no policy published: opportunistic delivery as before, nothing reported', { timeout: 20_000 }, async () => {
  const { outcome, events } = await deliverTo('a@nopolicy.test');
  assert.equal(outcome.kind, 'delivered', JSON.stringify(outcome));
  assert.deepEqual(events, []);
});

test('cache: max_age, refresh on id change, fetch failure keeps the cached policy', { timeout: 20_000 }, async () => {
  let now = 1_000_000;
  const c = cfg();
  const sts = new MtaStsPolicies(c.mtaSts!, c.dns, createMxResolver(c.dns), () => now);
  const count = () => fetches.filter((h) => h === 'mta-sts.cache.test').length;
  domain('cache.test', [['mx-good.sts.test', 10]], policy('enforce', ['mx-good.sts.test'], 600), 'v1');
  try {
    assert.equal((await sts.lookup('cache.test')).policy?.mode, 'enforce');
    assert.equal(count(), 1);
    // Same id, within max_age: the cached policy, no fetch.
    await sts.lookup('cache.test');
    assert.equal(count(), 1);
    // A new id: fetched again, the new policy is in force.
    domain('cache.test', [['mx-good.sts.test', 10]], policy('testing', ['mx-good.sts.test'], 600), 'v2');
    assert.equal((await sts.lookup('cache.test')).policy?.mode, 'testing');
    assert.equal(count(), 2);
    // A new id but the policy host fails (404): the cached policy stays, the failure is reported.
    dns.set('_mta-sts.cache.test', 'TXT', ['v=STSv1; id=v3;']);
    policies.delete('mta-sts.cache.test');
    const failed = await sts.lookup('cache.test');
    assert.equal(failed.policy?.mode, 'testing');
    assert.equal(failed.fetchError, 'sts-policy-fetch-error');
    // The TXT record removed (an attacker dropping it): the cached policy still holds.
    dns.remove('_mta-sts.cache.test');
    assert.equal((await sts.lookup('cache.test')).policy?.mode, 'testing');
    // After max_age, with no record and no policy: no policy any more.
    now += 601_000;
    assert.equal((await sts.lookup('cache.test')).policy, undefined);
  } finally {
    sts.cancel();
  }
});

test('a policy host whose certificate does not chain to a trusted CA gives no policy (sts-webpki-invalid)', { timeout: 20_000 }, async () => {
  const other = await startTestCa('Another CA');
  const c = cfg();
  const sts = new MtaStsPolicies({ ...c.mtaSts!, ca: other.caPem }, c.dns, createMxResolver(c.dns));
  domain('down.test', [['mx-good.sts.test', 10]], policy('enforce', ['mx-good.sts.test']));
  try {
    const r = await sts.lookup('down.test');
    assert.equal(r.policy, undefined);
    assert.equal(r.fetchError, 'sts-webpki-invalid');
  } finally {
    sts.cancel();
  }
});

test('metrics: outcomes are counted with bounded labels (unlisted domains are "other")', { timeout: 20_000 }, async () => {
  const m = new MetricsCatalogue({ domains: ['enf-wrong.test'], listeners: [], defaultMetrics: false });
  const agent = createDeliveryAgent(cfg(), { hostname: 'gw.test', logger: captureLogger().logger, tlsObserver: m.outboundTls });
  try {
    await agent.deliver(job(['m@enf-wrong.test', 'm@testing-plain.test']));
  } finally {
    await agent.close();
  }
  const text = (await m.render()).body;
  assert.match(text, /smarthost_outbound_tls_policy_total\{mechanism="mta-sts",mode="enforce",result="certificate-host-mismatch",domain="enf-wrong.test"\} 1/);
  assert.match(text, /smarthost_outbound_tls_policy_total\{mechanism="mta-sts",mode="testing",result="starttls-not-supported",domain="other"\} 1/);
  assert.doesNotMatch(text, /127\.0\.19|mx-wrong/);
});

test('TLS-RPT: a finished day is mailed to the policy domain\'s mailto: rua and POSTed to its https: rua as gzipped RFC 8460 JSON', { timeout: 30_000 }, async () => {
  let now = Date.parse('2026-12-01T10:00:00Z');
  const collector = new TlsReportCollector(() => now);
  const c = cfg();
  const agent = createDeliveryAgent(c, { hostname: 'gw.test', logger: captureLogger().logger, tlsObserver: collector });
  const endpoint = await startReportEndpoint(await ca.leaf(['reports.test']));
  dns.set('_smtp._tls.enf-wrong.test', 'TXT', [`v=TLSRPTv1; rua=mailto:tls-reports@reports.test,https://reports.test:${endpoint.port}/post`]);
  dns.set('reports.test', 'MX', [{ exchange: 'mx-good.sts.test', priority: 10 }]);
  dns.set('reports.test', 'A', ['127.0.0.1']);
  const submitted: string[] = [];
  const reporter = new TlsReporter({
    cfg: { enabled: true, orgName: 'ISP Gateway', contact: 'postmaster@gw.test' },
    dns: c.dns,
    hostname: 'gw.test',
    collector,
    logger: captureLogger().logger,
    ca: ca.caPem,
    now: () => now,
    submit: async (to, message) => {
      submitted.push(to);
      const [o] = await agent.deliver(job([to], { mailFrom: '', open: () => Readable.from([message]), size: message.length }));
      assert.equal(o.kind, 'delivered', JSON.stringify(o));
    },
  });
  try {
    for (const r of ['r1@enf-wrong.test', 'r2@enf-wrong.test', 'r@enf-good.test']) await agent.deliver(job([r]));
    assert.equal(await reporter.run(), 0, 'the day is not over yet');
    now += 86_400_000;
    // enf-good.test publishes no TLSRPT record: only enf-wrong.test is reported, to its mailto: and its https: rua.
    assert.equal(await reporter.run(), 2);
    assert.deepEqual(submitted, ['tls-reports@reports.test']);
    assert.equal(endpoint.received.length, 1);
    assert.equal(endpoint.received[0].headers['content-type'], 'application/tlsrpt+gzip');
    const mail = good.messages.at(-1)!;
    assert.deepEqual(mail.rcptTo, ['tls-reports@reports.test']);
    assert.equal(mail.mailFrom, '');
    const text = mail.data.toString();
    assert.match(text, /^TLS-Report-Domain: enf-wrong\.test\r$/m);
    assert.match(text, /Content-Type: multipart\/report; report-type="tlsrpt"/);
    const b64 = /Content-Type: application\/tlsrpt\+gzip[^]*?\r\n\r\n([A-Za-z0-9+/=\r\n]+?)\r\n\r\n--/.exec(text)?.[1] ?? '';
    const report = JSON.parse(gunzipSync(Buffer.from(b64.replace(/\s+/g, ''), 'base64')).toString());
    assert.equal(report['organization-name'], 'ISP Gateway');
    assert.deepEqual(report['date-range'], { 'start-datetime': '2026-12-01T00:00:00Z', 'end-datetime': '2026-12-01T23:59:59Z' });
    assert.deepEqual(report.policies, [
      {
        policy: { 'policy-type': 'sts', 'policy-domain': 'enf-wrong.test' },
        summary: { 'total-successful-session-count': 0, 'total-failure-session-count': 2 },
        'failure-details': [{ 'result-type': 'certificate-host-mismatch', 'receiving-mx-hostname': 'mx-wrong.sts.test', 'failed-session-count': 2 }],
      },
    ]);
    assert.deepEqual(JSON.parse(gunzipSync(endpoint.received[0].body).toString()), report, 'the POSTed report is the mailed one');
    assert.equal(await reporter.run(), 0, 'a day is reported once');
    assert.equal(endpoint.received.length, 1);
  } finally {
    reporter.cancel();
    await agent.close();
    await endpoint.close();
  }
});
