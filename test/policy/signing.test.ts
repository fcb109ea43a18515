/**
 * Who may sign as what, as data (src/policy/signing.ts) and the sender
 * entries it shares with the identity rules (ownsAddress): "@D" is D only,
 * "@*.D" / "*.D" its subdomains only, "a@D" the address (and D for signing).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ownsAddress, type Account } from '../../src/accounts/store';
import { NO_IDENTITY, parseIdentity } from '../../src/policy/identity';
import { signingAuthority } from '../../src/policy/signing';

const account = (senders: string[], name = 'u@isp.example'): Account => ({ name, passwordHash: '', senders, plan: 'default', suspended: false, netblocks: [] });
const client = (role: 'submission' | 'intercept' | 'mx', ip: string, netblockClass?: string) => ({ listener: role, role, ip, tls: true, ...(netblockClass ? { netblockClass } : {}) });

test('account senders: @D authorises D only; @*.D and *.D the subdomains only; a@D authorises D', () => {
  const a = signingAuthority(NO_IDENTITY, { client: client('submission', '192.0.2.1'), account: account(['@example.com', '@*.sub.example', '*.star.example', 'me@addr.example']) });
  assert.equal(a.authorises('example.com'), 'account u@isp.example sender @example.com');
  assert.equal(a.authorises('www.example.com'), undefined);
  assert.equal(a.authorises('x.sub.example'), 'account u@isp.example sender @*.sub.example');
  assert.equal(a.authorises('sub.example'), undefined);
  assert.equal(a.authorises('deep.star.example'), 'account u@isp.example sender *.star.example');
  assert.equal(a.authorises('addr.example'), 'account u@isp.example sender me@addr.example');
  assert.equal(a.authorises('notexample.com'), undefined);
  assert.equal(a.ip, undefined, 'an account client is never an internal host');
  // No senders: the account name's domain.
  assert.match(signingAuthority(NO_IDENTITY, { client: client('submission', '192.0.2.1'), account: account([]), popGrant: true }).authorises('isp.example') ?? '', /^POP-before-SMTP grant for account u@isp\.example sender u@isp\.example$/);
});

test('ownsAddress reads the same entries', () => {
  const a = account(['@example.com', '@*.sub.example']);
  assert.ok(ownsAddress(a, 'x@example.com'));
  assert.ok(!ownsAddress(a, 'x@www.example.com'));
  assert.ok(ownsAddress(a, 'x@a.sub.example'));
  assert.ok(!ownsAddress(a, 'x@sub.example'));
});

test('intercept: the most specific netblock, else the class; nothing for a client without an entry or on mx', () => {
  const id = parseIdentity(
    {
      intercept: {
        classes: { business: { domains: ['biz.example'] } },
        netblocks: [{ cidr: '192.0.2.16/28', domains: ['bakery.example', '*.bakery.example'] }],
      },
    },
    'identity.yaml',
    new Set(['business', 'residential']),
  );
  const nb = signingAuthority(id, { client: client('intercept', '192.0.2.17', 'business') });
  assert.equal(nb.authorises('bakery.example'), 'identity.yaml intercept.netblocks[0] 192.0.2.16/28 domains bakery.example');
  assert.equal(nb.authorises('shop.bakery.example'), 'identity.yaml intercept.netblocks[0] 192.0.2.16/28 domains *.bakery.example');
  assert.equal(nb.authorises('biz.example'), undefined, 'the netblock wins over the class');
  assert.equal(nb.ip, '192.0.2.17');
  assert.equal(signingAuthority(id, { client: client('intercept', '198.51.100.1', 'business') }).authorises('biz.example'), 'identity.yaml intercept.classes.business domains biz.example');
  const none = signingAuthority(id, { client: client('intercept', '198.51.100.2', 'residential') });
  assert.equal(none.authorises('bakery.example'), undefined);
  assert.match(none.summary, /no identity\.yaml domains/);
  assert.equal(signingAuthority(id, { client: client('mx', '192.0.2.17') }).authorises('bakery.example'), undefined);
});
