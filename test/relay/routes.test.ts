/** Next-hop selection: exact route, parent-domain route, relayhost, MX. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { At, ConfigError } from '../../src/config/validate';
import { parseRelayConfig, type NextHop } from '../../src/relay/config';
import { routeFor } from '../../src/relay/routes';

const hop = (host: string, user?: string): NextHop => ({ host, port: 2525, tls: 'opportunistic', auth: user ? { user, pass: 'x' } : undefined });

const routes = new Map<string, NextHop>([
  ['example.com', hop('exact.host')],
  ['.example.com', hop('sub.host')],
  ['.deep.example.com', hop('deep.host')],
]);

test('exact domain route wins', () => {
  const p = routeFor({ routes, mxPort: 25, mxTls: 'opportunistic' }, 'Example.COM');
  assert.equal(p.kind, 'relay');
  assert.equal(p.kind === 'relay' && p.hop.host, 'exact.host');
});

test('leading-dot entries match subdomains, most specific first', () => {
  const cfg = { routes, mxPort: 25, mxTls: 'opportunistic' as const };
  const a = routeFor(cfg, 'a.example.com');
  const b = routeFor(cfg, 'x.y.deep.example.com');
  assert.equal(a.kind === 'relay' && a.hop.host, 'sub.host');
  assert.equal(b.kind === 'relay' && b.hop.host, 'deep.host');
  assert.equal(routeFor(cfg, 'notexample.com').kind, 'mx');
});

test('relayhost when no route matches; MX otherwise', () => {
  const withRelay = routeFor({ routes, relayhost: hop('smart.host'), mxPort: 25, mxTls: 'opportunistic' }, 'other.org');
  assert.equal(withRelay.kind === 'relay' && withRelay.via, 'relayhost');
  const mx = routeFor({ routes: new Map(), mxPort: 2525, mxTls: 'none' }, 'other.org');
  assert.deepEqual(mx, { kind: 'mx', key: 'mx:other.org', domain: 'other.org', port: 2525, tls: 'none' });
});

test('destination keys: per domain for MX, per host+credentials for relays', () => {
  const cfg = { routes: new Map(), mxPort: 25, mxTls: 'opportunistic' as const };
  assert.notEqual(routeFor(cfg, 'a.org').key, routeFor(cfg, 'b.org').key);
  const r1 = routeFor({ ...cfg, relayhost: hop('smart', 'u1') }, 'a.org');
  const r2 = routeFor({ ...cfg, relayhost: hop('smart', 'u1') }, 'b.org');
  const r3 = routeFor({ ...cfg, relayhost: hop('smart', 'u2') }, 'a.org');
  assert.equal(r1.key, r2.key);
  assert.notEqual(r1.key, r3.key);
  assert.ok(!r1.key.includes('x'), 'no password in the key');
});

test('an address literal as a route key is a config error naming file and key (RCPT refuses literals)', () => {
  const at = new At('/etc/smarthost/smarthost.yaml', 'relay');
  for (const key of ['[10.1.2.3]', '[IPv6:2001:db8::1]']) {
    assert.throws(
      () => parseRelayConfig({ routes: { [key]: '10.1.2.3:25' } }, at, '/etc/smarthost'),
      (e: unknown) => e instanceof ConfigError && e.file === '/etc/smarthost/smarthost.yaml' && e.key === `relay.routes.${key}` && /address literal .*relay\.address-literal/.test(e.reason),
      key,
    );
  }
  assert.equal(parseRelayConfig({ routes: { 'corp.example': '10.1.2.3:25' } }, at, '/etc/smarthost').routes.get('corp.example')?.host, '10.1.2.3');
});

test('relay.dataTimeout, relay.minDataRate and relay.dataDoneTimeout: defaults, "/s" spelling, and a bad value is a config error naming file and key', () => {
  const at = new At('/etc/smarthost/smarthost.yaml', 'relay');
  const read = (relay: Record<string, unknown>) => parseRelayConfig(relay, at, '/etc/smarthost');
  assert.deepEqual([read({}).dataTimeoutMs, read({}).minDataRate], [180_000, 16 * 1024]);
  const set = read({ dataTimeout: '10m', minDataRate: '64KB/s' });
  assert.deepEqual([set.dataTimeoutMs, set.minDataRate], [600_000, 64 * 1024]);
  assert.equal(read({ minDataRate: 0 }).minDataRate, 0, '0: progress only');
  assert.deepEqual([read({}).dataDoneTimeoutMs, read({ dataDoneTimeout: '20m' }).dataDoneTimeoutMs], [600_000, 1_200_000], 'dataDoneTimeout: RFC 5321 10 minutes by default');
  for (const [relay, key, reason] of [
    [{ dataDoneTimeout: '0s' }, 'relay.dataDoneTimeout', /must be more than 0/],
    [{ dataDoneTimeout: 'later' }, 'relay.dataDoneTimeout', /not a duration/],
    [{ dataTimeout: '0s' }, 'relay.dataTimeout', /must be more than 0/],
    [{ dataTimeout: 'soon' }, 'relay.dataTimeout', /not a duration/],
    [{ minDataRate: 'fast' }, 'relay.minDataRate', /not a size/],
    [{ minDataRate: '16KB/min' }, 'relay.minDataRate', /not a size/],
    [{ minDataRate: -1 }, 'relay.minDataRate', /expected a string/],
  ] as const) {
    assert.throws(
      () => read(relay),
      (e: unknown) => e instanceof ConfigError && e.file === '/etc/smarthost/smarthost.yaml' && e.key === key && reason.test(e.reason),
      JSON.stringify(relay),
    );
  }
});
