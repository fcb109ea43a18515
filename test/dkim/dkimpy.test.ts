/**
 * A second, independent verifier: dkimpy (Debian's python3-dkim, installed
 * by `npm test`'s pretest, scripts/test-setup.sh). It also covers the case where mailauth
 * 4.13 is not RFC-exact: a UTF-8 header containing a 0xA0 byte (e.g. "à"),
 * which mailauth's relaxed canonicalization turns into a space.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createSigner, type DkimSigner } from '../../src/dkim/sign';
import { dkimpyVerify } from './dkimpy';
import { dkimConfig, keyAndPublish, sampleMessage, silentLogger, tempKeysDir, signAs } from './helpers';

let keys: { dir: string; cleanup: () => Promise<void> };
let signer: DkimSigner;
const records: Record<string, string> = {};

const verifies = (message: Buffer): boolean[] => dkimpyVerify(message, records).map((s) => s.ok);

before(async () => {
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
    const r = await signer.sign([msg], signAs('customer.example'));
    assert.equal(r.kind, 'signed');
    const out = Buffer.concat([Buffer.from(r.kind === 'signed' ? r.headers : ''), msg]);
    assert.deepEqual(verifies(out), [true, true]);
    const tampered = Buffer.from(out.toString('latin1').replace('customer.example>', 'customer.examp1e>'), 'latin1');
    assert.deepEqual(verifies(tampered), [false, false]);
  }
});
