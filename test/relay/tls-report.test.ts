/**
 * TLS-RPT https: rua (RFC 8460 §5.3.1) against real HTTPS servers on
 * loopback: the test DNS server answers the `_smtp._tls` TXT and the
 * endpoints' A records; each endpoint is a node HTTPS server with a
 * certificate from a private test CA (or from another CA, or for another
 * name). The collector is fed TLS policy events directly; the path from
 * real deliveries to a report is covered by the TLS-RPT test in
 * mta-sts.test.ts.
 *
 * The guarantees, as an attacker would try to break them: an endpoint
 * whose certificate does not verify receives nothing; a redirect is not
 * followed; a failing endpoint is retried a bounded number of times; an
 * endpoint that never answers or never ends its answer cannot hold the run;
 * a URL's path or query (a receiver's token) never reaches the log.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { gunzipSync } from 'node:zlib';
import { TlsReportCollector, TlsReporter, parseRua, MAX_POST_ATTEMPTS } from '../../src/relay/tls-report';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startTestCa, type TestCa } from '../helpers/test-ca';
import { captureLogger, relayConfig } from './fixtures';
import { startReportEndpoint, type ReportEndpoint } from './report-endpoint';

let dns: TestDns;
let ca: TestCa;
/** Endpoints by role; each serves one name at 127.0.0.1. */
const ep: Record<'good' | 'untrusted' | 'misnamed' | 'target', ReportEndpoint> = {} as never;

before(async () => {
  dns = await startDnsServer();
  ca = await startTestCa();
  const other = await startTestCa('Another CA');
  ep.good = await startReportEndpoint(await ca.leaf(['rua.reports.test']));
  ep.untrusted = await startReportEndpoint(await other.leaf(['untrusted.reports.test']));
  ep.misnamed = await startReportEndpoint(await ca.leaf(['elsewhere.test']));
  ep.target = await startReportEndpoint(await ca.leaf(['target.reports.test']));
  for (const name of ['rua', 'untrusted', 'misnamed', 'target']) dns.set(`${name}.reports.test`, 'A', ['127.0.0.1']);
});

after(async () => {
  await Promise.all(Object.values(ep).map((e) => e.close()));
  await dns?.close();
});

const DAY = Date.parse('2026-12-01T10:00:00Z');

/** A reporter with one finished day for `domain` (2 successes, 1 failure), whose TXT record names `rua`. */
function setup(domain: string, rua: string, postTimeoutMs = 5000) {
  let now = DAY;
  const collector = new TlsReportCollector(() => now);
  collector.onTlsPolicy({ domain, mechanism: 'mta-sts', mode: 'enforce', result: 'success' });
  collector.onTlsPolicy({ domain, mechanism: 'mta-sts', mode: 'enforce', result: 'success' });
  collector.onTlsPolicy({ domain, mechanism: 'mta-sts', mode: 'enforce', result: 'certificate-expired', mx: 'mx1.pol.test' });
  now += 86_400_000;
  dns.set(`_smtp._tls.${domain}`, 'TXT', [`v=TLSRPTv1; rua=${rua}`]);
  const log = captureLogger();
  const mailed: string[] = [];
  const reporter = new TlsReporter({
    cfg: { enabled: true, orgName: 'ISP Gateway', contact: 'postmaster@gw.test' },
    dns: relayConfig(dns, 25).dns,
    hostname: 'gw.test',
    collector,
    logger: log.logger,
    ca: ca.caPem,
    postTimeoutMs,
    now: () => now,
    submit: async (to) => {
      mailed.push(to);
    },
  });
  return { reporter, log, mailed };
}

const reportLines = (lines: Array<Record<string, unknown>>) => lines.filter((l) => l.evt === 'tls_report');

test('rua parsing: mailto and https kept, other schemes, credentials and a second record refused, at most 10 URIs', () => {
  const r = parseRua(['v=TLSRPTv1; rua=mailto:a@r.test, https://r.test/p?x=1,http://r.test/plain,https://u:p@r.test/,ftp://r.test/']);
  assert.deepEqual(r.mailto, ['a@r.test']);
  assert.deepEqual(r.https.map((u) => u.href), ['https://r.test/p?x=1']);
  assert.deepEqual(parseRua(['v=TLSRPTv1; rua=https://a.test/', 'v=TLSRPTv1; rua=https://b.test/']), { mailto: [], https: [] });
  const many = Array.from({ length: 15 }, (_, i) => `https://r${i}.test/`).join(',');
  assert.equal(parseRua([`v=TLSRPTv1; rua=${many}`]).https.length, 10);
});

test('https rua: the gzipped JSON is POSTed as application/tlsrpt+gzip; mailto in the same record is mailed too', { timeout: 20_000 }, async () => {
  const before = ep.good.received.length;
  const { reporter, log, mailed } = setup('both.test', `mailto:tls@reports.test,https://rua.reports.test:${ep.good.port}/v1/tlsrpt?token=s3cret`);
  try {
    assert.equal(await reporter.run(), 2, 'one mail queued, one POST accepted');
    assert.deepEqual(mailed, ['tls@reports.test']);
    const got = ep.good.received.slice(before);
    assert.equal(got.length, 1);
    assert.equal(got[0].method, 'POST');
    assert.equal(got[0].path, '/v1/tlsrpt?token=s3cret');
    assert.equal(got[0].headers['content-type'], 'application/tlsrpt+gzip');
    const report = JSON.parse(gunzipSync(got[0].body).toString());
    assert.deepEqual(report.policies, [
      {
        policy: { 'policy-type': 'sts', 'policy-domain': 'both.test' },
        summary: { 'total-successful-session-count': 2, 'total-failure-session-count': 1 },
        'failure-details': [{ 'result-type': 'certificate-expired', 'receiving-mx-hostname': 'mx1.pol.test', 'failed-session-count': 1 }],
      },
    ]);
    assert.equal(report['date-range']['start-datetime'], '2026-12-01T00:00:00Z');
    assert.equal(reporter.pendingPosts(), 0);
    assert.ok(reportLines(log.lines).some((l) => l.status === 200 && l.endpoint === `rua.reports.test:${ep.good.port}`));
    assert.ok(!log.raw.join('').includes('s3cret'), 'the URL query (a token) is not logged');
    assert.equal(await reporter.run(), 0, 'the day is reported once');
    assert.equal(ep.good.received.length, before + 1);
  } finally {
    reporter.cancel();
  }
});

test('an endpoint whose certificate comes from an untrusted CA, or is for another name, receives nothing', { timeout: 20_000 }, async () => {
  const { reporter, log } = setup('badcert.test', `https://untrusted.reports.test:${ep.untrusted.port}/r,https://misnamed.reports.test:${ep.misnamed.port}/r`);
  try {
    assert.equal(await reporter.run(), 0);
    assert.equal(ep.untrusted.received.length, 0, 'no request reached the untrusted endpoint');
    assert.equal(ep.misnamed.received.length, 0, 'no request reached the misnamed endpoint');
    const lines = reportLines(log.lines);
    assert.deepEqual(lines.map((l) => [l.endpoint, l.retry]), [[`untrusted.reports.test:${ep.untrusted.port}`, true], [`misnamed.reports.test:${ep.misnamed.port}`, true]]);
    assert.match(String(lines[0].result), /UNABLE_TO_VERIFY|SELF_SIGNED|CERT/);
    assert.equal(lines[1].result, 'ERR_TLS_CERT_ALTNAME_INVALID');
  } finally {
    reporter.cancel();
  }
});

test(`a 500 is retried at the next runs, ${MAX_POST_ATTEMPTS} attempts in all; a 500 then 200 stops at the success`, { timeout: 20_000 }, async () => {
  const start = ep.good.received.length;
  ep.good.answer = () => ({ status: 500 });
  const always = setup('fail500.test', `https://rua.reports.test:${ep.good.port}/always`);
  try {
    const runs: number[] = [];
    for (let i = 0; i < MAX_POST_ATTEMPTS + 2; i++) {
      assert.equal(await always.reporter.run(), 0);
      runs.push(ep.good.received.length - start);
    }
    assert.deepEqual(runs, [1, 2, 3, 3, 3], 'one attempt per run, then given up');
    assert.equal(always.reporter.pendingPosts(), 0);
    assert.deepEqual(reportLines(always.log.lines).map((l) => [l.result, l.retry]), [['HTTP 500', true], ['HTTP 500', true], ['HTTP 500', false]]);
  } finally {
    always.reporter.cancel();
  }
  const mid = ep.good.received.length;
  ep.good.answer = (n) => (n === mid ? { status: 500 } : { status: 202 });
  const flaky = setup('flaky.test', `https://rua.reports.test:${ep.good.port}/flaky`);
  try {
    assert.equal(await flaky.reporter.run(), 0);
    assert.equal(await flaky.reporter.run(), 1, 'accepted at the retry (202 is a 2xx)');
    assert.equal(await flaky.reporter.run(), 0);
    assert.equal(ep.good.received.length, mid + 2);
    const [first, second] = ep.good.received.slice(mid);
    assert.deepEqual(first.body, second.body, 'the retry sends the same report');
  } finally {
    ep.good.answer = () => ({ status: 200 });
    flaky.reporter.cancel();
  }
});

test('a redirect is not followed and not retried', { timeout: 20_000 }, async () => {
  const start = ep.good.received.length;
  ep.good.answer = () => ({ status: 307, headers: { location: `https://target.reports.test:${ep.target.port}/moved` } });
  const { reporter, log } = setup('redirect.test', `https://rua.reports.test:${ep.good.port}/old`);
  try {
    assert.equal(await reporter.run(), 0);
    assert.equal(await reporter.run(), 0);
    assert.equal(ep.good.received.length, start + 1, 'one attempt only');
    assert.equal(ep.target.received.length, 0, 'the redirect target got nothing');
    assert.deepEqual(reportLines(log.lines).map((l) => [l.result, l.retry]), [['HTTP 307', false]]);
  } finally {
    ep.good.answer = () => ({ status: 200 });
    reporter.cancel();
  }
});

test('an endpoint that never answers times out (retried later); one that never ends its answer is read only so far', { timeout: 20_000 }, async () => {
  ep.good.answer = () => 'hang';
  const hang = setup('hang.test', `https://rua.reports.test:${ep.good.port}/hang`, 1000);
  try {
    assert.equal(await hang.reporter.run(), 0);
    assert.deepEqual(reportLines(hang.log.lines).map((l) => [l.result, l.retry]), [['timeout', true]]);
  } finally {
    hang.reporter.cancel();
  }
  // 200 and 64 KiB of body, never ended: the status is known, the body is not waited for.
  ep.good.answer = () => 'trickle';
  const trickle = setup('trickle.test', `https://rua.reports.test:${ep.good.port}/trickle`, 3000);
  try {
    assert.equal(await trickle.reporter.run(), 1);
    assert.deepEqual(reportLines(trickle.log.lines).map((l) => l.status), [200]);
  } finally {
    ep.good.answer = () => ({ status: 200 });
    trickle.reporter.cancel();
  }
});
