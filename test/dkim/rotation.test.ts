/**
 * Key rotation and key files: the newest active selector signs, a dated key
 * takes over when its time comes, a new key is picked up by reload(), bad
 * files are reported and skipped, and a failed reload keeps the old keys.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { createSigner } from '../../src/dkim/sign';
import { loadKeys } from '../../src/dkim/keys';
import { dkimConfig, keyAndPublish, passes, sampleMessage, silentLogger, tempKeysDir, verify, signAs } from './helpers';

let dns: TestDns;
let keys: { dir: string; cleanup: () => Promise<void> };
const DAY = 86_400_000;

before(async () => {
  dns = await startDnsServer();
  keys = await tempKeysDir();
});
after(async () => {
  await dns.close();
  await keys.cleanup();
});

async function selectorsUsed(r: Awaited<ReturnType<import('../../src/dkim/sign').DkimSigner['sign']>>): Promise<readonly string[]> {
  assert.equal(r.kind, 'signed');
  return r.kind === 'signed' ? (r.selectors ?? []) : [];
}

test('two selectors, one future-dated: the active one signs; the future one takes over on its date; reload picks a new key', async () => {
  const keysDir = path.join(keys.dir, 'rotation');
  const t0 = Date.now();
  await keyAndPublish(dns, { keysDir, domain: 'rot.example', selector: 'old', algo: 'rsa', activeFrom: new Date(t0 - 30 * DAY) });
  await keyAndPublish(dns, { keysDir, domain: 'rot.example', selector: 'future', algo: 'rsa', activeFrom: new Date(t0 + 10 * DAY) });
  await keyAndPublish(dns, { keysDir, domain: 'rot.example', selector: 'ed-old', algo: 'ed25519', activeFrom: new Date(t0 - 30 * DAY) });
  let now = t0;
  const signer = await createSigner(dkimConfig(keysDir), silentLogger, { now: () => now });
  try {
    const msg = sampleMessage('a@rot.example');
    let r = await signer.sign([msg], signAs('rot.example'));
    assert.deepEqual(await selectorsUsed(r), ['old', 'ed-old']);
    assert.equal(passes(await verify(Buffer.concat([Buffer.from(r.kind === 'signed' ? r.headers : ''), msg]), dns)).length, 2);
    const st = signer.status().domains.find((d) => d.domain === 'rot.example')!;
    assert.deepEqual(st.keys.map((k) => `${k.selector}:${k.state}`).sort(), ['ed-old:active', 'future:pending', 'old:active']);

    // Eleven days later the dated key signs, without a reload.
    now = t0 + 11 * DAY;
    r = await signer.sign([msg], signAs('rot.example'));
    assert.deepEqual(await selectorsUsed(r), ['future', 'ed-old']);
    const later = Buffer.concat([Buffer.from(r.kind === 'signed' ? r.headers : ''), msg]);
    assert.equal(passes(await verify(later, dns, new Date(now + 1000))).length, 2);

    // A new Ed25519 key written now is only seen after reload().
    await keyAndPublish(dns, { keysDir, domain: 'rot.example', selector: 'ed-new', algo: 'ed25519', activeFrom: new Date(t0 + 11 * DAY - 1000) });
    assert.deepEqual(await selectorsUsed(await signer.sign([msg], signAs('rot.example'))), ['future', 'ed-old']);
    await signer.reload();
    r = await signer.sign([msg], signAs('rot.example'));
    assert.deepEqual(await selectorsUsed(r), ['future', 'ed-new']);
    assert.equal(passes(await verify(Buffer.concat([Buffer.from(r.kind === 'signed' ? r.headers : ''), msg]), dns, new Date(now + 1000))).length, 2);
  } finally {
    await signer.close();
  }
});

test('retireAt ends a key; with nothing left the domain falls to the fallback', async () => {
  const keysDir = path.join(keys.dir, 'retire');
  const t0 = Date.now();
  await keyAndPublish(dns, { keysDir, domain: 'ret.example', selector: 's1', algo: 'ed25519', retireAt: new Date(t0 + DAY) });
  await keyAndPublish(dns, { keysDir, domain: 'isp.example', selector: 'isp', algo: 'ed25519' });
  let now = t0;
  const signer = await createSigner(dkimConfig(keysDir, { signingDomain: 'isp.example' }), silentLogger, { now: () => now });
  try {
    const a = await signer.sign([sampleMessage('a@ret.example')], signAs('ret.example'));
    assert.equal(a.kind === 'signed' && a.domain, 'ret.example');
    now = t0 + 2 * DAY;
    const b = await signer.sign([sampleMessage('a@ret.example')], signAs('ret.example'));
    assert.equal(b.kind === 'signed' && b.domain, 'isp.example');
  } finally {
    await signer.close();
  }
});

test('bad files are reported (path, no key material) and skipped; good keys still load', async () => {
  const keysDir = path.join(keys.dir, 'bad');
  await keyAndPublish(undefined, { keysDir, domain: 'good.example', selector: 'ok', algo: 'ed25519' });
  const dir = path.join(keysDir, 'good.example');
  await fs.writeFile(path.join(dir, 'broken.rsa.pem'), '-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n', { mode: 0o600 });
  // An Ed25519 key in a file named .rsa.pem
  await fs.copyFile(path.join(dir, 'ok.ed25519.pem'), path.join(dir, 'wrongalgo.rsa.pem'));
  await fs.writeFile(path.join(dir, 'baddate.yaml'), 'activeFrom: tomorrow-ish\n');
  await fs.copyFile(path.join(dir, 'ok.ed25519.pem'), path.join(dir, 'baddate.ed25519.pem'));
  await fs.copyFile(path.join(dir, 'ok.ed25519.pem'), path.join(dir, 'loose.ed25519.pem'));
  await fs.chmod(path.join(dir, 'loose.ed25519.pem'), 0o644);
  await fs.mkdir(path.join(keysDir, 'not_a_domain'));

  const { ring, problems } = await loadKeys(keysDir);
  assert.deepEqual(ring.keysOf('good.example').map((k) => k.selector).sort(), ['loose', 'ok']);
  const byFile = (name: string) => problems.find((p) => path.basename(p.path) === name);
  assert.match(byFile('broken.rsa.pem')!.reason, /cannot parse/);
  assert.match(byFile('wrongalgo.rsa.pem')!.reason, /says rsa but the key is ed25519/);
  assert.match(byFile('baddate.yaml')!.reason, /activeFrom: expected an ISO date/);
  assert.equal(byFile('loose.ed25519.pem')!.severity, 'warning');
  assert.ok(byFile('not_a_domain'));
  const text = JSON.stringify(problems);
  assert.doesNotMatch(text, /PRIVATE KEY|MC4CAQAw/);
});

test('a reload that cannot read the directory keeps the previous keys', async () => {
  const keysDir = path.join(keys.dir, 'vanishing');
  await keyAndPublish(dns, { keysDir, domain: 'keep.example', selector: 'k1', algo: 'ed25519' });
  const signer = await createSigner(dkimConfig(keysDir), silentLogger);
  try {
    await fs.rm(keysDir, { recursive: true });
    await fs.writeFile(keysDir, 'not a directory');
    await assert.rejects(signer.reload());
    const r = await signer.sign([sampleMessage('a@keep.example')], signAs('keep.example'));
    assert.equal(r.kind, 'signed');
    assert.doesNotMatch(JSON.stringify(signer.status()), /PRIVATE|BEGIN/);
  } finally {
    await signer.close();
    await fs.rm(keysDir, { force: true });
  }
});
