/**
 * DNSBL lookups against a real DNS server over UDP on loopback: IPv4 and
 * IPv6 (nibble) listings with several return codes, 127.255.255.x and
 * non-127 answers as errors, a dropped query as a timeout within the
 * deadline, SERVFAIL, caching by TTL and of negative answers (counted in the
 * server's query log, clock injected), parallel zones, shared in-flight
 * queries, and private addresses not queried.
 */
import assert from 'node:assert/strict';
import YAML from 'yaml';
import { after, before, describe, it } from 'node:test';
import { DnsblCache, DnsblClient, parseDnsblConfig, type DnsblConfig } from '../../src/policy/dnsbl';
import { reverseName } from '../../src/policy/ip';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { T0 } from './fixtures';

function config(server: string, extra = ''): DnsblConfig {
  const yaml = `
resolver: { servers: ["${server}"], timeout: 300ms, tries: 1 }
cache: { negativeTtl: 5m, minTtl: 1s, maxTtl: 1h }
queryPrivate: true
zones:
  - name: zen
    zone: zen.test
    codes:
      127.0.0.2: sbl
      127.0.0.3: css
      127.0.0.4-127.0.0.7: xbl
      127.0.0.10-127.0.0.11: pbl
  - name: slow
    zone: slow.test
${extra}`;
  return parseDnsblConfig(YAML.parse(yaml), 'dnsbl.yaml', ['submission', 'intercept']);
}

describe('DNSBL lookups', () => {
  let dns: TestDns;
  let cfg: DnsblConfig;
  const clock = { now: T0 };
  let client: DnsblClient;
  const observed: string[] = [];

  before(async () => {
    dns = await startDnsServer();
    cfg = config(dns.server);
    client = new DnsblClient(cfg, new DnsblCache(), { clock: () => clock.now, observer: (z, r) => observed.push(`${z}:${r}`) });
    dns.set('2.0.0.127.zen.test', 'A', ['127.0.0.4', '127.0.0.10'], 120);
    dns.set(`${reverseName('2001:db8::99')}.zen.test`, 'A', ['127.0.0.2'], 60);
    dns.set('5.0.0.127.zen.test', 'A', ['127.255.255.254']);
    dns.set('6.0.0.127.zen.test', 'A', ['10.1.2.3']);
    dns.set('7.0.0.127.zen.test', 'A', ['127.0.0.99']);
    dns.set('8.0.0.127.zen.test', 'A', ['127.0.0.3']);
    dns.behave('8.0.0.127.zen.test', 'servfail');
    dns.behave('9.0.0.127.slow.test', 'drop');
  });
  after(async () => {
    await dns.close();
  });

  const zen = () => cfg.zones[0]!;
  const slow = () => cfg.zones[1]!;

  it('reads an IPv4 listing with several codes through the code table', async () => {
    const a = await client.checkZone('127.0.0.2', zen());
    assert.equal(a.result, 'listed');
    assert.equal(a.query, '2.0.0.127.zen.test');
    assert.deepEqual([...a.codes].sort(), ['127.0.0.10', '127.0.0.4']);
    assert.deepEqual([...a.meanings].sort(), ['pbl', 'xbl']);
    assert.equal(a.ttlMs, 120_000);
  });

  it('queries IPv6 clients by reversed nibbles, and IPv4-mapped ones as IPv4', async () => {
    const a = await client.checkZone('2001:db8::99', zen());
    assert.equal(a.result, 'listed');
    assert.deepEqual(a.meanings, ['sbl']);
    assert.match(a.query, /^9\.9\.0\.0(\.0){20}\.8\.b\.d\.0\.1\.0\.0\.2\.zen\.test$/);
    const m = await client.checkZone('::ffff:127.0.0.2', zen());
    assert.equal(m.query, '2.0.0.127.zen.test');
    assert.equal(m.result, 'listed');
  });

  it('reads 127.255.255.x and answers outside 127/8 as errors, never listings', async () => {
    const refused = await client.checkZone('127.0.0.5', zen());
    assert.equal(refused.result, 'error');
    assert.match(refused.error!, /refused the query \(127\.255\.255\.254\)/);
    const foreign = await client.checkZone('127.0.0.6', zen());
    assert.equal(foreign.result, 'error');
    assert.match(foreign.error!, /outside 127\.0\.0\.0\/8/);
    const servfail = await client.checkZone('127.0.0.8', zen());
    assert.equal(servfail.result, 'error');
    // An unknown code in 127/8 is a listing with the zone's otherCode meaning.
    const other = await client.checkZone('127.0.0.7', zen());
    assert.deepEqual(other.meanings, ['listed']);
  });

  it('turns a dropped query into a timeout within the deadline', async () => {
    const t0 = Date.now();
    const a = await client.checkZone('127.0.0.9', slow());
    const took = Date.now() - t0;
    assert.equal(a.result, 'timeout');
    assert.ok(took >= 250 && took < 1500, `took ${took} ms`);
    // Timeouts are not cached.
    const before = dns.queries.length;
    await client.checkZone('127.0.0.9', slow());
    assert.ok(dns.queries.length > before);
  });

  it('queries zones in parallel', async () => {
    // Each zone's answer is held until the other zone has been asked: one
    // lookup after the other (in either order) times the first one out.
    dns.set('12.0.0.127.zen.test', 'A', ['127.0.0.2']);
    dns.set('12.0.0.127.slow.test', 'A', ['127.0.0.2']);
    dns.holdUntil('12.0.0.127.zen.test', '12.0.0.127.slow.test');
    dns.holdUntil('12.0.0.127.slow.test', '12.0.0.127.zen.test');
    const answers = await client.check('127.0.0.12', [zen(), slow()]);
    assert.deepEqual(answers.map((a) => a.result), ['listed', 'listed'], 'a zone timed out waiting for the other zone to be asked: not in parallel');
  });

  it('caches listings for their TTL and negative answers for negativeTtl', async () => {
    const count = (name: string) => dns.queries.filter((q) => q === `A ${name}`).length;
    const name = '2.0.0.127.zen.test';
    const n0 = count(name);
    const cached = await client.checkZone('127.0.0.2', zen());
    assert.equal(cached.cached, true);
    assert.equal(count(name), n0, 'answered from the cache');
    clock.now += 121_000; // past the 120 s TTL
    const fresh = await client.checkZone('127.0.0.2', zen());
    assert.equal(fresh.cached, false);
    assert.equal(count(name), n0 + 1);

    const clean = '44.0.0.127.zen.test';
    const c1 = await client.checkZone('127.0.0.44', zen());
    assert.equal(c1.result, 'clean');
    await client.checkZone('127.0.0.44', zen());
    assert.equal(count(clean), 1, 'NXDOMAIN cached');
    clock.now += 4 * 60_000;
    await client.checkZone('127.0.0.44', zen());
    assert.equal(count(clean), 1, 'still within negativeTtl');
    clock.now += 61_000;
    await client.checkZone('127.0.0.44', zen());
    assert.equal(count(clean), 2, 'asked again after negativeTtl');
  });

  it('shares one query between concurrent lookups of a name', async () => {
    dns.set('45.0.0.127.zen.test', 'A', ['127.0.0.3']);
    const before = dns.queries.length;
    const [a, b, c] = await Promise.all([1, 2, 3].map(() => client.checkZone('127.0.0.45', zen())));
    assert.equal(dns.queries.length - before, 1);
    assert.deepEqual([a!.result, b!.result, c!.result], ['listed', 'listed', 'listed']);
  });

  it('reports real lookups to the observer, not cache hits', () => {
    assert.ok(observed.includes('zen:listed'));
    assert.ok(observed.includes('slow:timeout'));
    assert.ok(observed.includes('zen:error'));
    assert.ok(observed.includes('zen:clean'));
  });

  it('does not query private addresses unless told to', async () => {
    const strict = new DnsblClient({ ...cfg, queryPrivate: false }, new DnsblCache(), { clock: () => clock.now });
    const a = await strict.checkZone('127.0.0.2', zen());
    assert.equal(a.result, 'skipped');
    assert.match(a.error!, /loopback/);
    const b = await strict.checkZone('10.1.1.1', zen());
    assert.equal(b.result, 'skipped');
  });

  it('validates dnsbl.yaml with file, key and reason', () => {
    const bad = (y: string) => () => parseDnsblConfig(YAML.parse(y), '/p/dnsbl.yaml', ['intercept']);
    assert.throws(bad('zones:\n  - { zone: zen.test, codes: { "127.255.255.254": err } }'), /dnsbl\.yaml: zones\[0\]\.codes\.127\.255\.255\.254: 127\.255\.255\.x answers are errors/);
    assert.throws(bad('zones:\n  - { zone: zen.test, codes: { "10.0.0.2": sbl } }'), /codes\.10\.0\.0\.2: return codes are in 127\.0\.0\.0\/8/);
    assert.throws(bad('zones:\n  - { zone: zen.test, codes: { "127.0.0.2": sbl }, actions: { xbl: reject } }'), /zones\[0\]\.actions\.xbl: no return code means "xbl"/);
    assert.throws(bad('zones:\n  - { zone: zen.test, actions: { listed: { intercep: reject } } }'), /actions\.listed\.intercep: not a listener name or role/);
    assert.throws(bad('zones:\n  - { zone: zen.test, actions: { listed: { action: reject, reply: rate_limited } } }'), /reply: reply "rate_limited" is 451: a reject needs a 5xx reply/);
    assert.throws(bad('resolver: { servers: [dns.example] }'), /resolver\.servers\[0\]: a resolver must be an IP address/);
    assert.throws(bad('zones:\n  - { zone: zen.test, onError: maybe }'), /zones\[0\]\.onError\.\*?: must be one of|onError: must be one of/);
  });
});
