/**
 * A second, independent verifier: dkimpy (Debian's python3-dkim, installed
 * by `npm test`'s pretest, scripts/test-setup.sh). It also covers the case where mailauth
 * 4.13 is not RFC-exact: a UTF-8 header containing a 0xA0 byte (e.g. "à"),
 * which mailauth's relaxed canonicalization turns into a space.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { createSigner, type DkimSigner } from '../../src/dkim/sign';
import { dkimConfig, keyAndPublish, sampleMessage, silentLogger, tempKeysDir } from './helpers';

const SCRIPT = `
import sys, json, dkim
recs = json.loads(sys.argv[1])
msg = sys.stdin.buffer.read()
def dnsfunc(name, timeout=5):
    n = (name.decode() if isinstance(name, bytes) else name).rstrip('.')
    v = recs.get(n)
    return v.encode() if v else None
head = msg.split(b'\\r\\n\\r\\n')[0].split(b'\\r\\n')
n = len([l for l in head if l.lower().startswith(b'dkim-signature:')])
d = dkim.DKIM(msg)
print(json.dumps([bool(d.verify(idx=i, dnsfunc=dnsfunc)) for i in range(n)]))
`;

function findPython(): string {
  for (const py of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(py, ['-c', 'import dkim, nacl'], { timeout: 10_000 });
    if (r.status === 0) return py;
  }
  throw new Error('python3 with dkim and nacl is missing: install the Debian package python3-dkim (npm test\'s pretest does as root)');
}

let python: string;
let keys: { dir: string; cleanup: () => Promise<void> };
let signer: DkimSigner;
const records: Record<string, string> = {};

function dkimpyVerify(message: Buffer): boolean[] {
  const r = spawnSync(python, ['-c', SCRIPT, JSON.stringify(records)], { input: message, timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr.toString());
  return JSON.parse(r.stdout.toString()) as boolean[];
}

before(async () => {
  python = findPython();
  keys = await tempKeysDir();
  for (const [selector, algo] of [['r1', 'rsa'], ['e1', 'ed25519']] as const) {
    const k = await keyAndPublish(undefined, { keysDir: keys.dir, domain: 'customer.example', selector, algo });
    records[k.dnsName] = k.txtRecord;
  }
  signer = await createSigner(dkimConfig(keys.dir), silentLogger);
});
after(async () => {
  await signer.close();
  await keys.cleanup();
});

test('dkimpy verifies both signatures, including UTF-8 headers with 0xA0 bytes', async () => {
  const msgs = [
    sampleMessage(),
    sampleMessage('jörg@customer.example', {
      subject: 'Voilà — Русский Привет 中文 à\n  folded  line',
      body: 'Grüße\xa0à\n.dot\n\ttab  \n\n\n',
    }),
  ];
  for (const msg of msgs) {
    const r = await signer.sign([msg], 'customer.example');
    assert.equal(r.kind, 'signed');
    const out = Buffer.concat([Buffer.from(r.kind === 'signed' ? r.headers : ''), msg]);
    assert.deepEqual(dkimpyVerify(out), [true, true]);
    const tampered = Buffer.from(out.toString('latin1').replace('customer.example>', 'customer.examp1e>'), 'latin1');
    assert.deepEqual(dkimpyVerify(tampered), [false, false]);
  }
});
