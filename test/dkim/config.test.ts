/** The `dkim:` config section. */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { At, ConfigError } from '../../src/config/validate';
import { DEFAULT_SIGNED_HEADERS, parseDkimConfig } from '../../src/dkim/config';

const at = new At('smarthost.yaml', 'dkim');
const resolve = (p: string) => path.resolve('/etc/smarthost', p);

test('defaults', () => {
  const c = parseDkimConfig(undefined, at, resolve);
  assert.deepEqual(c, { enabled: true, keysDir: '/etc/smarthost/var/dkim', signingDomain: undefined, unsignedPolicy: 'pass', headers: [...DEFAULT_SIGNED_HEADERS] });
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
  ];
  for (const [v, re] of bad) {
    assert.throws(() => parseDkimConfig(v, at, resolve), (e: unknown) => e instanceof ConfigError && re.test(e.message));
  }
});
