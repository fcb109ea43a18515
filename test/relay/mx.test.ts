/**
 * MX resolution against a real UDP DNS server: preference order, random
 * order among equals, implicit MX, null MX, NXDOMAIN, NODATA, timeouts,
 * SERVFAIL, and caching.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { createMxResolver, orderByPreference, type MxResolver } from '../../src/relay/mx';

let dns: TestDns;
let r: MxResolver;

before(async () => {
  dns = await startDnsServer();
  r = createMxResolver({ servers: [dns.server], timeoutMs: 200, tries: 1 });
});
after(async () => {
  r.cancel();
  await dns.close();
});

test('MX records come sorted by preference, each with its addresses', { timeout: 10_000 }, async () => {
  dns.set('pref.test', 'MX', [
    { exchange: 'mx2.pref.test', priority: 20 },
    { exchange: 'mx1.pref.test', priority: 10 },
  ]);
  dns.set('mx1.pref.test', 'A', ['127.0.0.2']);
  dns.set('mx2.pref.test', 'A', ['127.0.0.3']);
  dns.set('mx2.pref.test', 'AAAA', ['::1']);
  const res = await r.resolveMx('pref.test');
  assert.ok(res.ok);
  assert.equal(res.implicit, false);
  assert.deepEqual(
    res.hosts.map((h) => [h.name, h.preference, h.addresses]),
    [
      ['mx1.pref.test', 10, ['127.0.0.2']],
      ['mx2.pref.test', 20, ['127.0.0.3', '::1']],
    ],
  );
});

test('equal preferences are shuffled, lower preference always first', () => {
  const recs = [
    { exchange: 'c', priority: 20 },
    { exchange: 'a', priority: 10 },
    { exchange: 'b', priority: 10 },
  ];
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const o = orderByPreference(recs).map((x) => x.exchange);
    assert.equal(o[2], 'c');
    seen.add(o.join(''));
  }
  assert.deepEqual([...seen].sort(), ['abc', 'bac']);
});

test('no MX but an A record → implicit MX (the domain itself)', { timeout: 10_000 }, async () => {
  dns.set('implicit.test', 'A', ['127.0.0.2']);
  const res = await r.resolveMx('implicit.test');
  assert.ok(res.ok);
  assert.equal(res.implicit, true);
  assert.deepEqual(res.hosts, [{ name: 'implicit.test', preference: 0, addresses: ['127.0.0.2'] }]);
});

test('null MX (RFC 7505) is a permanent failure', { timeout: 10_000 }, async () => {
  dns.set('nullmx.test', 'MX', [{ exchange: '', priority: 0 }]);
  dns.set('nullmx.test', 'A', ['127.0.0.2']);
  const res = await r.resolveMx('nullmx.test');
  assert.equal(res.ok, false);
  assert.ok(!res.ok && res.permanent);
  assert.equal(!res.ok && res.status, '5.1.10');
});

test('NXDOMAIN is a permanent failure 5.1.2', { timeout: 10_000 }, async () => {
  const res = await r.resolveMx('does-not-exist.test');
  assert.ok(!res.ok);
  assert.equal(res.permanent, true);
  assert.equal(res.status, '5.1.2');
});

test('domain exists but has neither MX nor address → permanent 5.4.4', { timeout: 10_000 }, async () => {
  dns.set('empty.test', 'TXT', ['v=spf1 -all']);
  const res = await r.resolveMx('empty.test');
  assert.ok(!res.ok);
  assert.equal(res.permanent, true);
  assert.equal(res.status, '5.4.4');
});

test('MX hosts without addresses: skipped; none left → permanent 5.4.4', { timeout: 10_000 }, async () => {
  dns.set('half.test', 'MX', [
    { exchange: 'gone.half.test', priority: 5 },
    { exchange: 'ok.half.test', priority: 10 },
  ]);
  dns.set('ok.half.test', 'A', ['127.0.0.7']);
  const res = await r.resolveMx('half.test');
  assert.ok(res.ok);
  assert.deepEqual(res.hosts.map((h) => h.name), ['ok.half.test']);

  dns.set('dangling.test', 'MX', [{ exchange: 'nowhere.dangling.test', priority: 5 }]);
  const res2 = await r.resolveMx('dangling.test');
  assert.ok(!res2.ok);
  assert.equal(res2.permanent, true);
  assert.equal(res2.status, '5.4.4');
});

test('DNS timeout and SERVFAIL are temporary failures', { timeout: 10_000 }, async () => {
  dns.behave('slow.test', 'drop');
  const t0 = Date.now();
  const res = await r.resolveMx('slow.test');
  assert.ok(!res.ok);
  assert.equal(res.permanent, false);
  assert.match(res.status, /^4\./);
  assert.ok(Date.now() - t0 < 5000);

  dns.behave('broken.test', 'servfail');
  const res2 = await r.resolveMx('broken.test');
  assert.ok(!res2.ok);
  assert.equal(res2.permanent, false);

  // An MX host whose address lookup times out makes the whole answer temporary.
  dns.set('slowhost.test', 'MX', [{ exchange: 'mx.slowhost.test', priority: 1 }]);
  dns.behave('mx.slowhost.test', 'drop');
  const res3 = await r.resolveMx('slowhost.test');
  assert.ok(!res3.ok);
  assert.equal(res3.permanent, false);
});

test('answers are cached; temporary failures are not', { timeout: 10_000 }, async () => {
  dns.set('cache.test', 'MX', [{ exchange: 'mx.cache.test', priority: 1 }]);
  dns.set('mx.cache.test', 'A', ['127.0.0.2'], 300);
  const count = (q: string): number => dns.queries.filter((x) => x === q).length;
  await Promise.all([r.resolveMx('cache.test'), r.resolveMx('cache.test')]);
  await r.resolveMx('cache.test');
  assert.equal(count('MX cache.test'), 1);
  assert.equal(count('A mx.cache.test'), 1);

  dns.behave('flaky.test', 'servfail');
  await r.resolveMx('flaky.test');
  dns.set('flaky.test', 'A', ['127.0.0.2']);
  const res = await r.resolveMx('flaky.test');
  assert.ok(res.ok, 'the SERVFAIL was not cached');
});

test('A/AAAA TTLs are honoured', { timeout: 10_000 }, async () => {
  let now = 1_000_000;
  const r2 = createMxResolver({ servers: [dns.server], timeoutMs: 200, tries: 1 }, { now: () => now });
  dns.set('ttl.test', 'A', ['127.0.0.2'], 10);
  const count = (): number => dns.queries.filter((x) => x === 'A ttl.test').length;
  const before = count();
  await r2.resolveHost('ttl.test');
  now += 9_000;
  await r2.resolveHost('ttl.test');
  assert.equal(count() - before, 1);
  now += 2_000;
  await r2.resolveHost('ttl.test');
  assert.equal(count() - before, 2);
  r2.cancel();
});

test('IP literals as host names pass through without DNS', async () => {
  const res = await r.resolveHost('192.0.2.1');
  assert.deepEqual(res, { ok: true, addresses: ['192.0.2.1'] });
});
