/**
 * Attack: claim a subscriber's address through a PROXY protocol header.
 * On the intercept listener the client address is the relay permission, so
 * whoever may send a PROXY header can relay as anyone. Only the balancers in
 * `proxyFrom` may; the list must match CIDRs and dual-stack peers properly
 * (else operators widen it until it works) and refuse entries that trust
 * everyone (`*`, /0) or nobody knows whom (host names).
 *
 * Setup: intercept listeners on 127.0.0.1 and on [::] (dual-stack: an IPv4
 * peer appears as ::ffff:127.0.0.x), subscribers 127.0.0.0/28, balancers
 * 127.0.0.32/29. A balancer's own address is outside the netblocks, so a
 * 220 after its header proves the header was believed, and 554 5.7.1 that
 * the session is its own.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseConfigText } from '../../src/config/load';
import { ConfigError } from '../../src/config/validate';
import { buildProxyV2 } from '../../src/fleet/proxy-protocol';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { RawSmtp } from '../helpers/smtp-client';

function configWith(proxyFrom: unknown): string {
  return `listeners:\n  - { name: intercept, role: intercept, address: 127.0.0.1, port: 2525, security: none, proxyFrom: ${JSON.stringify(proxyFrom)} }\n`;
}

async function greeting(port: number, from: string, first?: string | Buffer, host = '127.0.0.1'): Promise<string> {
  const c = await RawSmtp.connect(port, { localAddress: from, host });
  if (first !== undefined) c.write(first);
  const r = await c.reply(5000);
  c.close();
  return r.text;
}

describe('proxyFrom: config', () => {
  const refused: Array<[unknown, RegExp]> = [
    ['*', /from anyone/],
    ['0.0.0.0/0', /every IPv4 address/],
    ['::/0', /every IPv6 address/],
    ['::ffff:0.0.0.0/96', /every IPv4 address/],
    ['lb1.isp.example', /host names are not resolved/],
    ['localhost', /host names are not resolved/],
    ['10.1', /not an address or CIDR/],
    ['0x0a.0.0.1', /not an address or CIDR/],
    ['fe80::1%eth0', /not an address or CIDR/],
    ['10.0.0.1/8', /host bits set \(the network is 10\.0\.0\.0\/8\)/],
    ['10.0.0.0/33', /prefix length must be 0-32/],
  ];
  for (const [entry, why] of refused) {
    it(`refuses ${JSON.stringify(entry)}, naming the file and key`, () => {
      assert.throws(
        () => parseConfigText(configWith(['10.0.1.2', entry]), '/etc/smarthost/smarthost.yaml', '/tmp'),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, String(err));
          assert.equal(err.file, '/etc/smarthost/smarthost.yaml');
          assert.equal(err.key, 'listeners[0].proxyFrom[1]');
          assert.match(err.reason, why);
          return true;
        },
      );
    });
  }

  it('accepts addresses and CIDRs of both families, IPv4-mapped written as IPv4', () => {
    const cfg = parseConfigText(configWith(['10.0.1.2', '10.0.1.16/28', '2001:db8::/64', '::ffff:192.0.2.0/120', '2001:DB8::7']), 'f.yaml', '/tmp');
    assert.deepEqual(cfg.listeners[0]!.proxyFrom, ['10.0.1.2/32', '10.0.1.16/28', '2001:db8::/64', '192.0.2.0/24', '2001:db8::7/128']);
  });
});

describe('proxyFrom: who is believed', { timeout: 30_000 }, () => {
  let gw: TestGateway;
  let v4: number;
  let dual: number;
  let mapped: number;

  before(async () => {
    gw = await startGateway({
      config: {
        listeners: [
          { name: 'v4', role: 'intercept', address: '127.0.0.1', port: 0, security: 'none', greetDelay: '0ms', proxyFrom: ['127.0.0.32/29'] },
          { name: 'dual', role: 'intercept', address: '::', port: 0, security: 'none', greetDelay: '0ms', proxyFrom: ['127.0.0.32/29', '::1'] },
          { name: 'mapped', role: 'intercept', address: '::', port: 0, security: 'none', greetDelay: '0ms', proxyFrom: ['::ffff:127.0.0.32/125'] },
        ],
      },
    });
    v4 = gw.port('v4');
    dual = gw.port('dual');
    mapped = gw.port('mapped');
  });
  after(async () => {
    await gw.stop();
  });

  const claim = 'PROXY TCP4 127.0.0.5 127.0.0.1 40001 25\r\n';

  it('a balancer inside the trusted CIDR is believed (v1 and v2): the declared subscriber is greeted', async () => {
    assert.match(await greeting(v4, '127.0.0.33', claim), /^220 /);
    assert.match(await greeting(v4, '127.0.0.39', buildProxyV2({ source: '127.0.0.5' })), /^220 /);
    // Without a header the balancer is itself, outside the netblocks.
    assert.match(await greeting(v4, '127.0.0.34', buildProxyV2({ command: 'local' })), /^554 5\.7\.1 /);
  });

  it('a host outside the trusted CIDR claiming a subscriber is refused as itself', async () => {
    for (const from of ['127.0.0.31', '127.0.0.40', '127.0.0.20']) {
      assert.match(await greeting(v4, from, claim), /^554 5\.7\.1 Relay access denied/, from);
      assert.match(await greeting(v4, from, buildProxyV2({ source: '127.0.0.5' })), /^554 5\.7\.1 /, from);
    }
  });

  it('a subscriber sending a PROXY line stays itself (the line is an unknown command)', async () => {
    const c = await RawSmtp.connect(v4, { localAddress: '127.0.0.6' });
    assert.match((await c.reply()).text, /^220 /);
    assert.match((await c.cmd('PROXY TCP4 127.0.0.9 127.0.0.1 40004 25')).text, /^500 5\.5\.2 /);
    c.close();
  });

  it('dual-stack listener: an IPv4 balancer (seen as ::ffff:127.0.0.x) matches its IPv4 CIDR; others do not', async () => {
    assert.match(await greeting(dual, '127.0.0.35', claim), /^220 /);
    assert.match(await greeting(dual, '127.0.0.41', claim), /^554 5\.7\.1 /);
    assert.match(await greeting(mapped, '127.0.0.36', claim), /^220 /);
    assert.match(await greeting(mapped, '127.0.0.40', claim), /^554 5\.7\.1 /);
  });

  it('an IPv6 balancer is matched by its IPv6 entry', async () => {
    assert.match(await greeting(dual, '::1', claim, '::1'), /^220 /);
    // ::1 is not in the mapped listener's list: refused as itself.
    assert.match(await greeting(mapped, '::1', claim, '::1'), /^554 5\.7\.1 /);
  });
});
