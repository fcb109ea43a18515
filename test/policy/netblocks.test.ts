/**
 * Addresses and netblocks: the allocation-free parser against ipaddr.js,
 * longest-prefix match over IPv4 and IPv6 (IPv4-mapped as IPv4), DNSBL
 * query names, and netblocks.yaml + prefix files with their errors.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import ipaddr from 'ipaddr.js';
import { canonicalIp, parseCidr, parseIp, prefixOf, reverseName } from '../../src/policy/ip';
import { loadNetblocks } from '../../src/policy/netblocks';
import { PrefixTable } from '../../src/policy/prefix-table';

describe('address parsing', () => {
  it('agrees with ipaddr.js on valid addresses', () => {
    const samples = ['0.0.0.0', '255.255.255.255', '192.0.2.1', '::', '::1', '2001:db8::1', '2001:db8:0:0:1:0:0:1', 'fe80::1%eth0', '1::', '1:2:3:4:5:6:7:8', '::fffe:0:1', '64:ff9b::192.0.2.33'];
    for (const s of samples) {
      const want = ipaddr.parse(s.replace(/%.*/, ''));
      assert.equal(canonicalIp(s), want.toString(), s);
    }
  });

  it('treats IPv4-mapped IPv6 as IPv4', () => {
    const w = new Uint32Array(4);
    assert.equal(parseIp('::ffff:198.51.100.7', w), 4);
    assert.equal(canonicalIp('::ffff:198.51.100.7'), '198.51.100.7');
    assert.equal(canonicalIp('::ffff:c633:6407'), '198.51.100.7');
  });

  it('refuses malformed input', () => {
    const w = new Uint32Array(4);
    for (const s of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1..2.3', 'a.b.c.d', ':::', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', 'g::1', '1:2:3:4:5:6:7:', '::1.2.3.4.5', '1.2.3.4:80']) {
      assert.equal(parseIp(s, w), 0, s);
    }
  });

  it('parses CIDRs and refuses host bits and bad lengths', () => {
    assert.equal((parseCidr('198.51.100.0/24') as { text: string }).text, '198.51.100.0/24');
    assert.equal((parseCidr('2001:DB8:1000::/36') as { text: string }).text, '2001:db8:1000::/36');
    assert.equal((parseCidr('::ffff:10.0.0.0/104') as { text: string }).text, '10.0.0.0/8');
    assert.equal((parseCidr('192.0.2.7') as { len: number }).len, 32);
    assert.match(parseCidr('10.0.0.0/33') as string, /not a CIDR/);
    assert.match(parseCidr('10.0.0.1/8') as string, /host bits set \(the network is 10\.0\.0\.0\/8\)/);
  });

  it('builds DNSBL query names: reversed octets and reversed nibbles', () => {
    assert.equal(reverseName('192.0.2.99'), '99.2.0.192');
    assert.equal(reverseName('::ffff:192.0.2.99'), '99.2.0.192');
    assert.equal(reverseName('2001:db8:1:2::7'), '7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2');
  });

  it('names IPv6 subjects by prefix', () => {
    assert.equal(prefixOf('2001:db8:1:2:aaaa::7', 64), '2001:db8:1:2::/64');
    assert.equal(prefixOf('198.51.100.7', 64), '198.51.100.7');
  });
});

describe('prefix trie', () => {
  it('finds the longest matching prefix, per family', () => {
    const t = new PrefixTable<string>();
    const add = (c: string) => t.insert(parseCidr(c) as never, c);
    for (const c of ['0.0.0.0/0', '10.0.0.0/8', '10.1.0.0/16', '10.1.2.0/24', '10.1.2.3/32', '2001:db8::/32', '2001:db8:1::/48', '::/0']) add(c);
    assert.equal(t.lookup('10.1.2.3'), '10.1.2.3/32');
    assert.equal(t.lookup('10.1.2.4'), '10.1.2.0/24');
    assert.equal(t.lookup('10.1.3.4'), '10.1.0.0/16');
    assert.equal(t.lookup('10.2.3.4'), '10.0.0.0/8');
    assert.equal(t.lookup('11.0.0.1'), '0.0.0.0/0');
    assert.equal(t.lookup('::ffff:10.1.2.3'), '10.1.2.3/32');
    assert.equal(t.lookup('2001:db8:1:ffff::1'), '2001:db8:1::/48');
    assert.equal(t.lookup('2001:db8:2::1'), '2001:db8::/32');
    assert.equal(t.lookup('2001:db9::1'), '::/0');
    assert.equal(t.lookup('not an ip'), undefined);
    assert.equal(t.size, 8);
  });

  it('matches a brute-force scan on random prefixes', () => {
    let seed = 42;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const t = new PrefixTable<{ n: number; len: number }>();
    const prefixes: Array<{ n: number; len: number }> = [];
    for (let i = 0; i < 2000; i++) {
      const len = 8 + Math.floor(rnd() * 25);
      const n = (Math.floor(rnd() * 2 ** 32) & (len === 32 ? -1 : ~((1 << (32 - len)) - 1))) >>> 0;
      const p = { n, len };
      prefixes.push(p);
      t.insert({ kind: 4, words: Uint32Array.of(n, 0, 0, 0), len, text: '' }, p);
    }
    for (let i = 0; i < 5000; i++) {
      // Half the probes inside a known prefix.
      const base = prefixes[Math.floor(rnd() * prefixes.length)]!;
      const a = i % 2 ? Math.floor(rnd() * 2 ** 32) >>> 0 : (base.n | (Math.floor(rnd() * 2 ** 32) & ((2 ** (32 - base.len)) - 1))) >>> 0;
      let best: { n: number; len: number } | undefined;
      for (const p of prefixes) {
        const mask = p.len === 0 ? 0 : (0xffffffff << (32 - p.len)) >>> 0;
        if (((a & mask) >>> 0) === p.n && (!best || p.len >= best.len)) best = p;
      }
      const got = t.lookup4(a);
      assert.equal(got?.len, best?.len, `address ${a}`);
      if (best) assert.equal(got!.n, best.n);
    }
  });
});

describe('netblocks.yaml', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  });
  async function dir(files: Record<string, string>): Promise<string> {
    const d = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-nb-'));
    dirs.push(d);
    for (const [n, t] of Object.entries(files)) {
      await fsp.mkdir(path.dirname(path.join(d, n)), { recursive: true });
      await fsp.writeFile(path.join(d, n), t);
    }
    return d;
  }

  it('reads YAML blocks and prefix files, most specific wins', async () => {
    const d = await dir({
      'netblocks.yaml': 'netblocks:\n  - { cidr: 198.51.100.0/24, class: residential-dynamic }\n  - { cidr: 198.51.100.128/25, class: residential-static }\nfiles:\n  - { file: ipam/business.txt, class: business }\n',
      'ipam/business.txt': '# exported\n203.0.113.0/24\n2001:db8:2000::/36   # v6\n192.0.2.0/28 special\n',
    });
    const nb = loadNetblocks(path.join(d, 'netblocks.yaml'));
    assert.equal(nb.match('198.51.100.7')?.cls, 'residential-dynamic');
    assert.equal(nb.match('198.51.100.200')?.cls, 'residential-static');
    assert.equal(nb.match('::ffff:203.0.113.9')?.cls, 'business');
    assert.equal(nb.match('2001:db8:2fff::1')?.source, 'business.txt:3');
    assert.equal(nb.match('192.0.2.3')?.cls, 'special');
    assert.equal(nb.match('192.0.2.30'), undefined);
    assert.deepEqual([...nb.classes].sort(), ['business', 'residential-dynamic', 'residential-static', 'special']);
  });

  it('names file, key or line, and reason', async () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ 'netblocks.yaml': 'netblocks:\n  - cidr: 10.0.0.0/33\n' }, /netblocks\.yaml: netblocks\[0\]\.cidr: not a CIDR: "10\.0\.0\.0\/33"/],
      [{ 'netblocks.yaml': 'netblocks:\n  - { cidr: 10.0.0.0/8, class: a }\n  - { cidr: 10.0.0.0/8, class: b }\n' }, /netblocks\[1\]\.cidr: 10\.0\.0\.0\/8 is also listed as class "a"/],
      [{ 'netblocks.yaml': 'netblocks:\n  - { cidr: 10.0.0.0/8, clas: a }\n' }, /netblocks\[0\]\.clas: unknown key/],
      [{ 'netblocks.yaml': 'files:\n  - { file: x.txt, class: a }\n', 'x.txt': '10.0.0.0/8\n10.1.0.1/16\n' }, /x\.txt: line 2: "10\.1\.0\.1\/16" has host bits set/],
      [{ 'netblocks.yaml': 'files:\n  - { file: missing.txt, class: a }\n' }, /files\[0\]\.file: cannot read .*missing\.txt: ENOENT/],
      [{ 'netblocks.yaml': 'files:\n  - { file: x.txt }\n', 'x.txt': '10.0.0.0/8\n' }, /x\.txt: line 1: no class/],
      [{ 'netblocks.yaml': 'netblocks: [\n' }, /netblocks\.yaml: line \d+: YAML syntax/],
    ];
    for (const [files, re] of cases) {
      const d = await dir(files);
      assert.throws(() => loadNetblocks(path.join(d, 'netblocks.yaml')), (e: Error) => re.test(e.message) || assert.fail(`${e.message} !~ ${re}`));
    }
  });
});
