/**
 * The signer against mailauth's verifier, which fetches the public keys
 * from a real UDP DNS server: RSA, Ed25519, dual; domain choice and the
 * unsigned policy; awkward messages; tampering must fail.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startTestMx } from '../helpers/test-mx';
import { RelaxedBodyHash } from '../../src/dkim/canon';
import { createSigner, type DkimSigner } from '../../src/dkim/sign';
import { CRLF, chunked, dkimConfig, keyAndPublish, passes, sampleMessage, silentLogger, tempKeysDir, verify, signAs } from './helpers';

let dns: TestDns;
let keys: { dir: string; cleanup: () => Promise<void> };
let signer: DkimSigner;
const signed: string[] = [];

before(async () => {
  dns = await startDnsServer();
  keys = await tempKeysDir();
  // customer.example: dual; rsaonly.example: RSA; edonly.example: Ed25519; isp.example: the fallback.
  await keyAndPublish(dns, { keysDir: keys.dir, domain: 'customer.example', selector: 'r2024', algo: 'rsa' });
  await keyAndPublish(dns, { keysDir: keys.dir, domain: 'customer.example', selector: 'e2024', algo: 'ed25519' });
  await keyAndPublish(dns, { keysDir: keys.dir, domain: 'rsaonly.example', selector: 'sel1', algo: 'rsa' });
  await keyAndPublish(dns, { keysDir: keys.dir, domain: 'edonly.example', selector: 'ed1', algo: 'ed25519' });
  await keyAndPublish(dns, { keysDir: keys.dir, domain: 'isp.example', selector: 'isp1', algo: 'rsa' });
  signer = await createSigner(dkimConfig(keys.dir, { signingDomain: 'isp.example' }), silentLogger, {
    onSigned: (d, a, r) => signed.push(`${d} ${a} ${r}`),
  });
});

after(async () => {
  await signer.close();
  await dns.close();
  await keys.cleanup();
});

async function signAndJoin(msg: Buffer, fromDomain: string | undefined, s: DkimSigner = signer): Promise<{ out: Buffer; headers: string; domain: string; algorithms: readonly string[] }> {
  const r = await s.sign(chunked(msg), signAs(fromDomain));
  assert.equal(r.kind, 'signed', JSON.stringify(r));
  if (r.kind !== 'signed') throw new Error('unreachable');
  return { out: Buffer.concat([Buffer.from(r.headers, 'latin1'), msg]), headers: r.headers, domain: r.domain, algorithms: r.algorithms };
}

describe('algorithms', () => {
  test('RSA-2048 signature verifies', async () => {
    const { out, headers, algorithms } = await signAndJoin(sampleMessage('bob@rsaonly.example'), 'rsaonly.example');
    assert.deepEqual(algorithms, ['rsa-sha256']);
    assert.deepEqual(passes(await verify(out, dns)), ['rsaonly.example/sel1/rsa-sha256']);
    assert.match(headers.replace(/\r\n(?=[ \t])/g, ''), /^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=rsaonly\.example; s=sel1; t=\d+; h=/);
    assert.doesNotMatch(headers, /[;\s]l=/, 'no l= tag');
    for (const line of headers.split('\r\n')) assert.ok(line.length <= 78, `line too long: ${line}`);
  });

  test('Ed25519 signature (RFC 8463) verifies', async () => {
    const { out, algorithms } = await signAndJoin(sampleMessage('x@edonly.example'), 'edonly.example');
    assert.deepEqual(algorithms, ['ed25519-sha256']);
    assert.deepEqual(passes(await verify(out, dns)), ['edonly.example/ed1/ed25519-sha256']);
  });

  test('dual signing: RSA and Ed25519 both verify', async () => {
    const { out, headers, algorithms } = await signAndJoin(sampleMessage(), 'customer.example');
    assert.deepEqual(algorithms, ['rsa-sha256', 'ed25519-sha256']);
    assert.equal(headers.match(/^DKIM-Signature:/gm)?.length, 2);
    assert.deepEqual(passes(await verify(out, dns)).sort(), ['customer.example/e2024/ed25519-sha256', 'customer.example/r2024/rsa-sha256']);
  });

  test('From is over-signed and the recommended headers are in h=', async () => {
    const { headers } = await signAndJoin(sampleMessage(), 'customer.example');
    const h = /h=([^;]+);/.exec(headers.replace(/\r\n\s/g, ''))![1]!.split(':');
    assert.equal(h.filter((n) => n === 'from').length, 2);
    for (const n of ['to', 'subject', 'date', 'message-id', 'mime-version', 'content-type', 'content-transfer-encoding']) assert.ok(h.includes(n), n);
    assert.ok(!h.includes('received'));
  });

  test('onSigned reports each signature', () => {
    assert.ok(signed.includes('customer.example rsa-sha256 ok'));
    assert.ok(signed.includes('customer.example ed25519-sha256 ok'));
  });
});

describe('which domain signs', () => {
  test('the header From domain when it has a key', async () => {
    const { domain } = await signAndJoin(sampleMessage(), 'customer.example');
    assert.equal(domain, 'customer.example');
  });

  test('a parent of the From domain with a key (relaxed DMARC alignment)', async () => {
    const { out, domain } = await signAndJoin(sampleMessage('news@mail.customer.example'), 'mail.customer.example');
    assert.equal(domain, 'customer.example');
    assert.equal(passes(await verify(out, dns)).length, 2);
  });

  test('an IDN From domain (SMTPUTF8, U-label) uses the key stored under its A-label', async () => {
    await keyAndPublish(dns, { keysDir: keys.dir, domain: 'bücher.example', selector: 'idn', algo: 'ed25519' });
    await signer.reload();
    const { out, domain } = await signAndJoin(sampleMessage('jörg@bücher.example'), 'bücher.example');
    assert.equal(domain, 'xn--bcher-kva.example');
    assert.deepEqual(passes(await verify(out, dns)), ['xn--bcher-kva.example/idn/ed25519-sha256']);
  });

  test('the fallback signing domain when the From domain has no key', async () => {
    const { out, domain } = await signAndJoin(sampleMessage('carol@nokey.example'), 'nokey.example');
    assert.equal(domain, 'isp.example');
    assert.deepEqual(passes(await verify(out, dns)), ['isp.example/isp1/rsa-sha256']);
  });

  test('no key and no fallback: pass → unsigned, refuse → refuse', async () => {
    const pass = await createSigner(dkimConfig(keys.dir, { unsignedPolicy: 'pass' }), silentLogger);
    const refuse = await createSigner(dkimConfig(keys.dir, { unsignedPolicy: 'refuse' }), silentLogger);
    try {
      const a = await pass.sign([sampleMessage('c@nokey.example')], signAs('nokey.example'));
      assert.equal(a.kind, 'unsigned');
      const b = await refuse.sign([sampleMessage('c@nokey.example')], signAs('nokey.example'));
      assert.equal(b.kind, 'refuse');
      assert.match(b.kind === 'refuse' ? b.reason : '', /nokey\.example/);
      const c = await refuse.sign([sampleMessage()], signAs(undefined));
      assert.equal(c.kind, 'refuse');
      // A domain with a key is still signed under refuse.
      assert.equal((await refuse.sign([sampleMessage()], signAs('customer.example'))).kind, 'signed');
    } finally {
      await pass.close();
      await refuse.close();
    }
  });

  test('enabled: false signs nothing', async () => {
    const off = await createSigner(dkimConfig(keys.dir, { enabled: false, unsignedPolicy: 'refuse' }), silentLogger);
    assert.equal((await off.sign([sampleMessage()], signAs('customer.example'))).kind, 'unsigned');
    await off.close();
  });
});

describe('awkward messages verify', () => {
  test('8-bit body, SMTPUTF8 headers, long folded headers, dot lines, odd whitespace', async () => {
    const body =
      'Grüße aus Köln — 日本語のテキスト, voilà: \xa0 bytes kept\n' +
      '.a line starting with a dot\n' +
      '..two dots\n' +
      '.\n' +
      'trailing spaces   \n' +
      'tabs\tand  runs   of\t \tspace\n' +
      '  leading whitespace\n' +
      '\n\n\n';
    const msg = sampleMessage('jörg@customer.example', {
      subject: 'Ünïcödé subject 日本 that is long enough to be folded over\n several lines of text for\n\t the test',
      extraHeaders:
        'Cc: one@remote.example, two@remote.example, three@remote.example,\n four@remote.example, five@remote.example\n' +
        'References: <a@b.example>\n <c@d.example>\n\t<e@f.example>\n' +
        'List-Unsubscribe: <mailto:unsub@customer.example>\n' +
        'X-Custom:    spaced   out   \n',
      body,
    });
    const { out, headers } = await signAndJoin(msg, 'customer.example');
    assert.match(headers.replace(/\r\n\s/g, ''), /h=[^;]*list-unsubscribe/);
    assert.equal(passes(await verify(out, dns)).length, 2);
  });

  test('message without a body, and a body without a final line break', async () => {
    for (const raw of ['From: a@customer.example\nSubject: x\n\n', 'From: a@customer.example\n\nno newline at end', 'From: a@customer.example\n\n\n\n']) {
      const { out } = await signAndJoin(Buffer.from(CRLF(raw)), 'customer.example');
      assert.equal(passes(await verify(out, dns)).length, 2, JSON.stringify(raw));
    }
    // Header fields only, no empty line: signed with the empty body's hash.
    // mailauth's verifier only reads a header ended by an empty line, so it
    // is given one; the canonical message is the same (trailing empty lines
    // are not part of a relaxed body).
    const { out } = await signAndJoin(Buffer.from(CRLF('From: a@customer.example\nSubject: x\n')), 'customer.example');
    assert.match(out.toString(), /bh=47DEQpj8HBSa\+\/TImW\+5JCeuQeRkm5NMpJWZG3hSuFU=;/);
    assert.equal(passes(await verify(Buffer.concat([out, Buffer.from('\r\n')]), dns)).length, 2);
  });

  test('a 3 MB body is hashed in slices and verifies', async () => {
    const line = 'abcdefghij '.repeat(7) + '\n';
    const { out } = await signAndJoin(sampleMessage(undefined, { body: line.repeat(Math.ceil((3 * 1024 * 1024) / line.length)) }), 'customer.example');
    assert.equal(passes(await verify(out, dns)).length, 2);
  });

  test('a 25 MB message does not hold the event loop (hashed in slices)', async () => {
    const line = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n';
    const body = Buffer.from(line.repeat(Math.ceil((25 * 1024 * 1024) / line.length)));
    const msg = [Buffer.from('From: a@customer.example\r\nSubject: big\r\n\r\n'), body];
    // Behaviour, not time: a ticker that re-arms itself with setImmediate runs
    // once per event-loop turn; the body hasher records how many turns passed
    // between its first and its last slice. Hashed in one piece, none would;
    // in 256 KB slices with a yield after each, about one per slice (~100 for
    // 25 MB), however loaded the machine is.
    let ticks = 0;
    let ticking = true;
    const tick = () => {
      if (!ticking) return;
      ticks++;
      setImmediate(tick);
    };
    const update = RelaxedBodyHash.prototype.update;
    let first: number | undefined;
    let lastSeen = 0;
    let updates = 0;
    RelaxedBodyHash.prototype.update = function (chunk: Buffer) {
      first ??= ticks;
      lastSeen = ticks;
      updates++;
      return update.call(this, chunk);
    };
    setImmediate(tick);
    try {
      const r = await signer.sign(msg, signAs('customer.example'));
      assert.equal(r.kind, 'signed');
    } finally {
      ticking = false;
      RelaxedBodyHash.prototype.update = update;
    }
    const turns = lastSeen - (first ?? 0);
    const slices = Math.floor(body.length / (256 * 1024));
    assert.ok(turns >= slices / 2, `the event loop turned ${turns} times while ${updates} body slices (${slices} expected) were hashed`);
  });

  test('through SMTP: dot-stuffing and 8-bit survive a real transfer', async () => {
    const mx = await startTestMx();
    const conn = new SMTPConnection({ host: mx.host, port: mx.port, ignoreTLS: true, connectionTimeout: 5000 });
    try {
      const msg = sampleMessage('jörg@customer.example', { body: '.\n..\n.dot\nGrüße\n' });
      const { out } = await signAndJoin(msg, 'customer.example');
      await new Promise<void>((resolve, reject) => {
        conn.once('error', reject);
        conn.connect(() => resolve());
      });
      await new Promise<void>((resolve, reject) =>
        conn.send({ from: 'a@customer.example', to: ['bob@remote.example'], use8BitMime: true }, out, (err) => (err ? reject(err) : resolve())),
      );
      const [got] = await mx.waitFor(1, 5000);
      assert.ok(got!.data.includes(Buffer.from('\r\n..\r\n')));
      assert.equal(passes(await verify(got!.data, dns)).length, 2);
    } finally {
      conn.close();
      await mx.close();
    }
  });
});

describe('tampering fails verification', () => {
  test('a body changed after signing', async () => {
    const { out } = await signAndJoin(sampleMessage(), 'customer.example');
    const tampered = Buffer.from(out.toString('latin1').replace('this is a test message', 'this is a FAKE message'), 'latin1');
    const results = await verify(tampered, dns);
    assert.equal(results.length, 2);
    assert.deepEqual(passes(results), []);
    for (const r of results) assert.match(String(r.status.comment), /body hash/);
  });

  test('a signed header changed after signing', async () => {
    const { out } = await signAndJoin(sampleMessage(), 'customer.example');
    const tampered = Buffer.from(out.toString('latin1').replace('Subject: Quarterly report', 'Subject: Quarterly rep0rt'), 'latin1');
    const results = await verify(tampered, dns);
    assert.deepEqual(passes(results), []);
    assert.ok(results.every((r) => r.status.result === 'fail'));
  });

  test('a second From added after signing (over-signing)', async () => {
    const { out } = await signAndJoin(sampleMessage(), 'customer.example');
    const text = out.toString('latin1');
    const at = text.indexOf('\r\n\r\n');
    const tampered = Buffer.from(`${text.slice(0, at)}\r\nFrom: ceo@customer.example${text.slice(at)}`, 'latin1');
    assert.deepEqual(passes(await verify(tampered, dns)), []);
  });

  test('but adding an unsigned header or a Received on top keeps it valid', async () => {
    const { out } = await signAndJoin(sampleMessage(), 'customer.example');
    const later = Buffer.concat([Buffer.from('Received: from smarthost by mx.remote.example; Mon, 1 Jan 2024 10:00:01 +0000\r\nX-Spam-Score: 0\r\n'), out]);
    assert.equal(passes(await verify(later, dns)).length, 2);
  });
});
