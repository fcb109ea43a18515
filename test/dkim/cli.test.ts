/**
 * `dkim keygen` and `dkim check`: key files with safe modes and the exact
 * TXT record; DNS compared through a real UDP DNS server.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import YAML from 'yaml';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { dkimCheck, dkimKeygen } from '../../src/dkim/cli';
import { tempKeysDir } from './helpers';

let dns: TestDns;
let keys: { dir: string; cleanup: () => Promise<void> };

before(async () => {
  dns = await startDnsServer();
  keys = await tempKeysDir();
});
after(async () => {
  await dns.close();
  await keys.cleanup();
});

test('keygen RSA: 0600 key in a 0700 directory, metadata, and the TXT record', async () => {
  const keysDir = path.join(keys.dir, 'kg');
  const r = await dkimKeygen({ keysDir, domain: 'Example.COM', selector: 's2025', algo: 'rsa', activeFrom: '2025-01-01T00:00:00Z' });
  assert.equal(r.privateKeyPath, path.join(keysDir, 'example.com', 's2025.rsa.pem'));
  assert.equal(r.dnsName, 's2025._domainkey.example.com');
  assert.equal((await fs.stat(r.privateKeyPath)).mode & 0o777, 0o600);
  assert.equal((await fs.stat(path.dirname(r.privateKeyPath))).mode & 0o777, 0o700);
  const meta = YAML.parse(await fs.readFile(r.metadataPath, 'utf8'));
  assert.equal(meta.activeFrom, '2025-01-01T00:00:00.000Z');

  const m = /^v=DKIM1; k=rsa; p=([A-Za-z0-9+/=]+)$/.exec(r.txtRecord);
  assert.ok(m, r.txtRecord);
  const priv = createPrivateKey(await fs.readFile(r.privateKeyPath));
  assert.equal(priv.asymmetricKeyDetails?.modulusLength, 2048);
  const spki = createPublicKey(priv).export({ type: 'spki', format: 'der' }).toString('base64');
  assert.equal(m[1], spki);
  assert.match(r.zoneLine, /^s2025\._domainkey\.example\.com\. IN TXT \( ("[^"]+" )+\)$/);
  const strings = [...r.zoneLine.matchAll(/"([^"]+)"/g)].map((x) => x[1]!);
  assert.ok(strings.length === 2 && strings.every((x) => x.length <= 255));
  assert.equal(strings.join(''), r.txtRecord);
  // No leftover temporary files.
  assert.deepEqual((await fs.readdir(path.dirname(r.privateKeyPath))).sort(), ['s2025.rsa.pem', 's2025.yaml']);
});

test('keygen Ed25519: p= is the raw 32-byte public key (RFC 8463), not SPKI', async () => {
  const r = await dkimKeygen({ keysDir: path.join(keys.dir, 'kg'), domain: 'example.com', selector: 'ed2025', algo: 'ed25519' });
  const m = /^v=DKIM1; k=ed25519; p=([A-Za-z0-9+/=]+)$/.exec(r.txtRecord);
  assert.ok(m, r.txtRecord);
  const raw = Buffer.from(m[1]!, 'base64');
  assert.equal(raw.length, 32);
  const jwk = createPublicKey(createPrivateKey(await fs.readFile(r.privateKeyPath))).export({ format: 'jwk' });
  assert.equal(Buffer.from(jwk.x!, 'base64url').toString('base64'), m[1]);
  assert.equal((await fs.stat(r.privateKeyPath)).mode & 0o777, 0o600);
});

test('keygen refuses to reuse a selector, a bad domain, a bad selector, a bad size', async () => {
  const keysDir = path.join(keys.dir, 'kg');
  await assert.rejects(dkimKeygen({ keysDir, domain: 'example.com', selector: 's2025', algo: 'ed25519' }), /already exists/);
  await assert.rejects(dkimKeygen({ keysDir, domain: 'not a domain', selector: 'x', algo: 'rsa' }), /not a domain/);
  await assert.rejects(dkimKeygen({ keysDir, domain: 'example.com', selector: 'bad_sel', algo: 'rsa' }), /not a valid selector/);
  await assert.rejects(dkimKeygen({ keysDir, domain: 'example.com', selector: 'x', algo: 'rsa', bits: 1024 }), /2048, 3072 or 4096/);
});

test('check: match, mismatch, missing, revoked, DNS timeout', async () => {
  const keysDir = path.join(keys.dir, 'chk');
  const domain = 'check.example';
  const good = await dkimKeygen({ keysDir, domain, selector: 'good', algo: 'rsa' });
  const wrong = await dkimKeygen({ keysDir, domain, selector: 'wrong', algo: 'ed25519' });
  await dkimKeygen({ keysDir, domain, selector: 'missing', algo: 'ed25519' });
  const revoked = await dkimKeygen({ keysDir, domain, selector: 'revoked', algo: 'ed25519' });
  const slow = await dkimKeygen({ keysDir, domain, selector: 'slow', algo: 'ed25519' });
  const other = await dkimKeygen({ keysDir: path.join(keys.dir, 'other'), domain, selector: 'x', algo: 'ed25519' });

  dns.set(good.dnsName, 'TXT', ['some-other=txt', good.txtRecord]);
  dns.set(wrong.dnsName, 'TXT', [other.txtRecord]);
  dns.set(revoked.dnsName, 'TXT', ['v=DKIM1; k=ed25519; p=']);
  dns.behave(slow.dnsName, 'drop');

  const res = await dkimCheck({ keysDir, domain, dnsServers: [dns.server], timeoutMs: 300 });
  const by = new Map(res.selectors.map((s) => [s.selector, s]));
  assert.deepEqual([...by.keys()].sort(), ['good', 'missing', 'revoked', 'slow', 'wrong']);
  assert.deepEqual([by.get('good')!.published, by.get('good')!.matches], [true, true]);
  assert.equal(by.get('good')!.reason, 'published and matches');
  assert.deepEqual([by.get('wrong')!.published, by.get('wrong')!.matches], [true, false]);
  assert.match(by.get('wrong')!.reason, /differs/);
  assert.deepEqual([by.get('missing')!.published, by.get('missing')!.matches], [false, false]);
  assert.match(by.get('missing')!.reason, /no TXT record/);
  assert.match(by.get('revoked')!.reason, /revoked/);
  assert.match(by.get('slow')!.reason, /DNS lookup failed: ETIMEOUT/);
  assert.equal(res.ok, false);

  // Publish the rest correctly: ok.
  for (const s of ['wrong', 'missing', 'revoked', 'slow']) {
    dns.set(`${s}._domainkey.${domain}`, 'TXT', [by.get(s)!.expected]);
  }
  const again = await dkimCheck({ keysDir, domain, dnsServers: [dns.server], timeoutMs: 300 });
  assert.ok(again.ok, JSON.stringify(again.selectors.map((s) => s.reason)));
});
