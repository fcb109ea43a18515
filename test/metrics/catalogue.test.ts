/**
 * The catalogue's label rules and the `metrics:` config section, without a
 * gateway: label values stay bounded whatever the stages report, and the
 * domain list is validated like the rest of the config.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { At, ConfigError } from '../../src/config/validate';
import { BoundedLabel, deferralStatusLabel, MetricsCatalogue, OTHER, safeLabel } from '../../src/metrics/catalogue';
import { MAX_LABELLED_DOMAINS, parseMetricsConfig } from '../../src/metrics/config';

const sample = (text: string, re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);

describe('metric labels are bounded', () => {
  it('safeLabel refuses addresses, IPs and odd strings', () => {
    assert.equal(safeLabel('zen'), 'zen');
    assert.equal(safeLabel('intercept.outside-netblocks'), 'intercept.outside-netblocks');
    for (const bad of ['alice@isp.test', '192.0.2.1', 'x192.0.2.10y', '2001:db8::1', 'a b', '', undefined, 'x'.repeat(65), '"quoted"']) {
      assert.equal(safeLabel(bad), OTHER, String(bad));
    }
  });

  it('BoundedLabel: an allow list, or the first N values, then "other"', () => {
    const allowed = new BoundedLabel(2, new Set(['a', 'b']));
    assert.deepEqual(['a', 'b', 'c'].map((v) => allowed.map(v)), ['a', 'b', OTHER]);
    const firstTwo = new BoundedLabel(2);
    assert.deepEqual(['x', 'y', 'z', 'x'].map((v) => firstTwo.map(v)), ['x', 'y', OTHER, 'x']);
  });

  it('a deferral status label is a class-4 code with subject 0–7 and detail 0–30, else "other"', () => {
    for (const ok of ['4.0.0', '4.4.1', '4.7.1', '4.7.28', '4.7.30']) assert.equal(deferralStatusLabel(ok), ok);
    for (const bad of ['4.7.31', '4.8.1', '4.7.999', '5.1.1', '2.0.0', '4.4', '4.4.1 ', '04.4.1', 'x', '']) assert.equal(deferralStatusLabel(bad), OTHER, bad);
  });

  it('observers turn whatever they are given into bounded labels', async () => {
    const m = new MetricsCatalogue({ domains: ['dest.test', 'bücher.example'], listeners: [{ name: 'submission', role: 'submission' }], defaultMetrics: false });
    m.session.rejected?.('submission', 'rcpt', 'not-a-reply-name');
    m.session.rejected?.('submission', 'rcpt', 'relay_denied');
    m.session.auth?.('submission', 'alice@isp.test', 'fail');
    m.policy.verdict?.({ stage: 'rcpt', rule: '10.0.0.1', action: 'reject' });
    const outcome = (address: string) => ({ outcome: { kind: 'delivered', address, response: '250 ok' }, delayMs: 1500 }) as never;
    m.queue.outcome?.(outcome('erin@DEST.test'));
    m.queue.outcome?.(outcome('x@bücher.example'));
    m.queue.outcome?.(outcome('y@elsewhere.test'));
    const deferral = (statusCode: string) => ({ outcome: { kind: 'deferred', address: 'z@dest.test', error: 'x', statusCode }, delayMs: 0 }) as never;
    for (const s of ['4.7.1', '4.7.1', '4.4.1', '4.9.123']) m.queue.outcome?.(deferral(s));
    m.onSigned('isp.test', 'rsa-sha256', 'ok');
    m.feeds.contained?.('throttle', 'mail');
    m.feeds.contained?.('quarantine', 'data');
    const text = (await m.render()).body;
    assert.equal(sample(text, /^smarthost_refusals_total\{listener="submission",stage="rcpt",reply="other"\} (\S+)$/m), 1);
    assert.equal(sample(text, /^smarthost_refusals_total\{listener="submission",stage="rcpt",reply="relay_denied"\} (\S+)$/m), 1);
    assert.equal(sample(text, /^smarthost_auth_attempts_total\{listener="submission",mechanism="other",result="fail"\} (\S+)$/m), 1);
    assert.equal(sample(text, /^smarthost_policy_verdicts_total\{stage="rcpt",rule="other",action="reject",via="native"\} (\S+)$/m), 1);
    assert.equal(sample(text, /^smarthost_delivery_attempts_total\{result="delivered",domain="dest.test"\} (\S+)$/m), 1);
    assert.equal(sample(text, /^smarthost_delivery_attempts_total\{result="delivered",domain="xn--bcher-kva.example"\} (\S+)$/m), 1);
    assert.equal(sample(text, /^smarthost_delivery_attempts_total\{result="delivered",domain="other"\} (\S+)$/m), 1);
    assert.equal(sample(text, /^smarthost_delivery_deferrals_total\{status="4.7.1"\} (\S+)$/m), 2);
    assert.equal(sample(text, /^smarthost_delivery_deferrals_total\{status="4.4.1"\} (\S+)$/m), 1);
    assert.equal(sample(text, /^smarthost_delivery_deferrals_total\{status="other"\} (\S+)$/m), 1);
    assert.equal(sample(text, /^smarthost_delivery_duration_seconds_sum\{domain="dest.test"\} (\S+)$/m), 1.5);
    assert.equal(sample(text, /^smarthost_dkim_signatures_total\{domain="other",algorithm="rsa-sha256",result="ok"\} (\S+)$/m), 1);
    assert.equal(sample(text, /^smarthost_containment_actions_total\{response="throttle",stage="mail"\} (\S+)$/m), 1);
    assert.equal(sample(text, /^smarthost_containment_actions_total\{response="quarantine",stage="data"\} (\S+)$/m), 1);
    assert.doesNotMatch(text, /alice|erin|elsewhere|10\.0\.0\.1/);
  });
});

describe('the metrics: config section', () => {
  const parse = (v: unknown) => parseMetricsConfig(v, new At('smarthost.yaml').child('metrics'));

  it('defaults to no labelled domains', () => {
    assert.deepEqual(parse(undefined), { domains: [] });
  });

  it('normalises (lower case, A-labels, no trailing dot) and removes duplicates', () => {
    assert.deepEqual(parse({ domains: ['Gmail.COM', 'gmail.com.', 'bücher.example'] }), { domains: ['gmail.com', 'xn--bcher-kva.example'] });
  });

  it('refuses what is not a domain, too many domains, unknown keys', () => {
    assert.throws(() => parse({ domains: ['alice@isp.test'] }), (e: Error) => e instanceof ConfigError && /metrics\.domains.*not a domain name/.test(e.message));
    assert.throws(() => parse({ domains: ['localhost'] }), ConfigError);
    const many = Array.from({ length: MAX_LABELLED_DOMAINS + 1 }, (_, i) => `d${i}.example`);
    assert.throws(() => parse({ domains: many }), /at most 50/);
    assert.throws(() => parse({ domain: ['x.example'] }), ConfigError);
  });
});
