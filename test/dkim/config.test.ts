/** The `dkim:` config section. */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { At, ConfigError } from '../../src/config/validate';
import { DEFAULT_SIGNED_HEADERS, internalHost, parseDkimConfig } from '../../src/dkim/config';

const at = new At('smarthost.yaml', 'dkim');
const resolve = (p: string) => path.resolve('/etc/smarthost', p);

test('defaults', () => {
  const { internalHosts, ...c } = parseDkimConfig(undefined, at, resolve);
  assert.deepEqual(c, { enabled: true, keysDir: '/etc/smarthost/var/dkim', signingDomain: undefined, unsignedPolicy: 'pass', headers: [...DEFAULT_SIGNED_HEADERS] });
  // The gateway's own host only (OpenDKIM's InternalHosts), not the rest of 127/8.
  assert.deepEqual(internalHosts.map((h) => h.text), ['127.0.0.1', '::1']);
  assert.ok(internalHost(internalHosts, '127.0.0.1'));
  assert.ok(internalHost(internalHosts, '::ffff:127.0.0.1'), 'IPv4-mapped IPv6 is the IPv4 address');
  assert.ok(internalHost(internalHosts, '::1'));
  for (const ip of ['127.0.0.2', '127.1.0.1', '10.0.0.1', '::2', 'not an ip']) assert.equal(internalHost(internalHosts, ip), undefined, ip);
});

test('internalHosts: addresses and CIDRs; [] turns it off', () => {
  const c = parseDkimConfig({ internalHosts: ['10.1.2.0/24', '2001:db8::5'] }, at, resolve);
  assert.equal(internalHost(c.internalHosts, '10.1.2.77')?.text, '10.1.2.0/24');
  assert.equal(internalHost(c.internalHosts, '2001:db8::5')?.text, '2001:db8::5');
  assert.equal(internalHost(c.internalHosts, '127.0.0.1'), undefined);
  assert.deepEqual(parseDkimConfig({ internalHosts: [] }, at, resolve).internalHosts, []);
});

test('values, IDN fallback domain in A-label form, header list with From forced in', () => {
  const c = parseDkimConfig({ keysDir: '/srv/dkim', signingDomain: 'Bücher.Example', unsignedPolicy: 'refuse', enabled: false, headers: ['Subject', 'To', 'List-*'] }, at, resolve);
  assert.equal(c.keysDir, '/srv/dkim');
  assert.equal(c.signingDomain, 'xn--bcher-kva.example');
  assert.equal(c.unsignedPolicy, 'refuse');
  assert.equal(c.enabled, false);
  assert.deepEqual(c.headers, ['from', 'subject', 'to', 'list-*']);
});

test('refusals name the key', () => {
  const bad: Array<[unknown, RegExp]> = [
    [{ unsignedPolicy: 'drop' }, /dkim\.unsignedPolicy: must be one of pass, refuse/],
    [{ signingDomain: 'not a domain' }, /dkim\.signingDomain: not a domain name/],
    [{ headers: ['received'] }, /dkim\.headers\[0\]: "received" must not be signed/],
    [{ headers: ['bad name'] }, /dkim\.headers\[0\]: not a header field name/],
    [{ keysdir: 'x' }, /dkim\.keysdir: unknown key/],
    [{ enabled: 'yes' }, /dkim\.enabled: expected true or false/],
    [{ internalHosts: ['localhost'] }, /dkim\.internalHosts\[0\]: not an IP address or CIDR: "localhost"/],
    [{ internalHosts: ['127.1'] }, /dkim\.internalHosts\[0\]: not an IP address or CIDR/],
    [{ internalHosts: ['10.0.0.0/33'] }, /dkim\.internalHosts\[0\]: not an IP address or CIDR/],
    [{ internalHosts: ['0.0.0.0/0'] }, /dkim\.internalHosts\[0\]: .* every client sign as every domain/],
    [{ internalHosts: ['::/0'] }, /dkim\.internalHosts\[0\]: .* every client sign as every domain/],
    [{ internalHosts: '127.0.0.1' }, /dkim\.internalHosts: expected a list/],
  ];
  for (const [v, re] of bad) {
    assert.throws(() => parseDkimConfig(v, at, resolve), (e: unknown) => e instanceof ConfigError && re.test(e.message));
  }
});
