/**
 * Conformance of the inbound SMTP protocol layer, written from the RFCs
 * (5321 SMTP, 4954 AUTH, 3207 STARTTLS, 2920 PIPELINING, 1870 SIZE) and from
 * what a hostile client does — not from the implementation. It is the
 * specification for the rewrite of src/smtp/ (smtp-server replaced by our own
 * code): every case passed against the smtp-server based layer (53e3097)
 * except two where that layer broke the RFC (unknown ESMTP parameters
 * accepted: "FOO=bar" → 250; the AUTH PLAIN authorization identity ignored:
 * "bob\0alice\0<alice's password>" → 235), which the rewrite fixed.
 *
 * Where the exact human text of a reply is arbitrary, only the reply code and
 * the enhanced status code (RFC 3463) are asserted.
 *
 * One gateway for the whole file, with four listeners: submission (STARTTLS,
 * AUTH required), submissions (implicit TLS), intercept (redirected port 25,
 * STARTTLS offered, no AUTH, no greeting pause) and slowgreet (intercept role,
 * plain, a 2 s greeting pause for the early-talker case). Mail to dest.test
 * goes to a test MX (a real smtp-server) through a real DNS server, which is
 * where what the gateway relays is observed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, message, RawSmtp, repliesUntilClosed, type SmtpReply } from '../helpers/smtp-client';
import { startDestination, type Received, type TestMx } from '../helpers/test-mx';
import { waitUntil } from '../helpers/wait-until';

/** limits.maxMessageSize, in bytes, as configured below (and so as advertised in EHLO SIZE). */
const MAX_SIZE = 50_000;
const ALICE = { user: 'alice@isp.test', pass: 'alice-secret-1' };

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const b64 = (s: string) => Buffer.from(s).toString('base64');

/** "250 2.1.0 ..." → "2.1.0" (the enhanced status code of a reply's last line). */
function enhanced(r: SmtpReply): string | undefined {
  return /^\d\.\d{1,3}\.\d{1,3}(?= |$)/.exec(r.lines[r.lines.length - 1] ?? '')?.[0];
}

function assertReply(r: SmtpReply, code: number, enh?: string, what = ''): void {
  assert.equal(r.code, code, `${what}: expected ${code}${enh ? ` ${enh}` : ''}, got "${r.text}"`);
  if (enh) assert.equal(enhanced(r), enh, `${what}: enhanced status code of "${r.text}"`);
}

describe('inbound SMTP protocol (RFC 5321, 4954, 3207, 2920, 1870)', { timeout: 180_000 }, () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: TestGateway;

  before(async () => {
    ({ dns, mx } = await startDestination());
    gw = await startGateway({
      config: {
        listeners: [
          { name: 'submission', role: 'submission', address: '127.0.0.1', port: 0, security: 'starttls' },
          { name: 'submissions', role: 'submission', address: '127.0.0.1', port: 0, security: 'implicit' },
          { name: 'intercept', role: 'intercept', address: '127.0.0.1', port: 0, security: 'starttls', greetDelay: '0ms' },
          { name: 'slowgreet', role: 'intercept', address: '127.0.0.1', port: 0, security: 'none', greetDelay: '2s' },
        ],
        limits: { maxMessageSize: MAX_SIZE, maxConnectionsPerIp: 200 },
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port, backoff: ['1s'] },
      },
    });
  });
  after(async () => {
    await gw.stop();
    await mx.close();
    await dns.close();
  });

  /** A port-25 subscriber (inside the netblock 127.0.0.0/28), greeted; EHLO sent unless `helo` is null. */
  async function intercept(ip = '127.0.0.5', helo: string | null = 'client.test'): Promise<RawSmtp> {
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: ip });
    assertReply(await c.reply(), 220, undefined, 'greeting');
    if (helo !== null) assertReply(await c.cmd(`EHLO ${helo}`), 250, undefined, 'EHLO');
    return c;
  }

  /** A submission client after STARTTLS and the second EHLO, not yet authenticated. */
  async function submissionTls(ip = '127.0.0.6'): Promise<{ c: RawSmtp; ehlo: SmtpReply }> {
    const c = await RawSmtp.connect(gw.port('submission'), { localAddress: ip });
    assertReply(await c.reply(), 220, undefined, 'greeting');
    assertReply(await c.cmd('EHLO client.test'), 250, undefined, 'EHLO');
    assertReply(await c.starttls(), 220, undefined, 'STARTTLS');
    const ehlo = await c.cmd('EHLO client.test');
    assertReply(ehlo, 250, undefined, 'EHLO after TLS');
    return { c, ehlo };
  }

  /** The message at the test MX whose text contains `token`. */
  async function atMx(token: string): Promise<Received> {
    let found: Received | undefined;
    await waitUntil(`a message containing ${token} at the test MX`, () => (found = mx.messages.find((m) => m.data.toString('latin1').includes(token))) !== undefined, 20_000);
    return found!;
  }

  /** A new connection is still greeted: the gateway survived whatever came before. */
  async function stillServing(ip: string): Promise<void> {
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: ip });
    assertReply(await c.reply(), 220, undefined, 'a new connection afterwards');
    assertReply(await c.cmd('EHLO after.test'), 250, undefined, 'EHLO on the new connection');
    await c.quit();
  }

  // 1
  it('PIPELINING (RFC 2920): advertised; a pipelined group is answered in order; message and QUIT in one write get 250 + 221', async () => {
    const token = `pipelined-${Date.now()}`;
    const c = await intercept('127.0.0.5', null);
    const ehlo = await c.cmd('EHLO pipe.test');
    assertReply(ehlo, 250);
    assert.ok(ehlo.lines.includes('PIPELINING'), ehlo.text);
    c.write('MAIL FROM:<sender@home.test>\r\nRCPT TO:<pipe1@dest.test>\r\nRCPT TO:<pipe2@dest.test>\r\nDATA\r\n');
    assertReply(await c.reply(), 250, '2.1.0', 'MAIL');
    assertReply(await c.reply(), 250, '2.1.5', 'first RCPT');
    assertReply(await c.reply(), 250, '2.1.5', 'second RCPT');
    assertReply(await c.reply(), 354, undefined, 'DATA');
    c.write(`${message({ from: 'sender@home.test', to: 'pipe1@dest.test', subject: token })}QUIT\r\n`);
    const done = await c.reply(30_000);
    assertReply(done, 250, '2.0.0', 'end of data');
    const queueId = /queued as ([0-9A-Za-z]+)/.exec(done.text)?.[1];
    assert.ok(queueId, `the 250 names the queue id: ${done.text}`);
    assertReply(await c.reply(), 221, undefined, 'QUIT');
    const got = await atMx(token);
    assert.equal(got.mailFrom, 'sender@home.test');
    assert.deepEqual([...got.rcptTo].sort(), ['pipe1@dest.test', 'pipe2@dest.test']);
    // ... and it is this message's id: the one in the gateway's Received: header (RFC 5321 4.4, "id").
    assert.match(got.data.toString('latin1'), new RegExp(`\\bid ${queueId}\\b`));
  });

  it('PIPELINING: a refused command inside a group does not swallow the rest (RFC 2920 3.1)', async () => {
    const c = await intercept('127.0.0.5');
    c.write('MAIL FROM:<sender@home.test>\r\nRCPT TO:<bad-bracket@dest.test\r\nRCPT TO:<ok@dest.test>\r\nDATA\r\n');
    assertReply(await c.reply(), 250, '2.1.0', 'MAIL');
    assertReply(await c.reply(), 501, undefined, 'the malformed RCPT');
    assertReply(await c.reply(), 250, '2.1.5', 'the good RCPT after it');
    assertReply(await c.reply(), 354, undefined, 'DATA');
    c.write(`${message({ from: 'sender@home.test', to: 'ok@dest.test' })}RSET\r\nMAIL FROM:<again@home.test>\r\nQUIT\r\n`);
    assertReply(await c.reply(30_000), 250, '2.0.0', 'end of data');
    assertReply(await c.reply(), 250, undefined, 'RSET');
    assertReply(await c.reply(), 250, '2.1.0', 'MAIL');
    assertReply(await c.reply(), 221, undefined, 'QUIT');
  });

  // 2
  it('one reply per command, and none early, when every command and the message arrive one byte per write', async () => {
    const token = `bytewise-${Date.now()}`;
    const c = await intercept('127.0.0.6', null);
    c.noDelay();
    const steps: Array<[string, number]> = [
      ['EHLO bytes.test\r\n', 250],
      ['MAIL FROM:<bytes@home.test>\r\n', 250],
      ['RCPT TO:<bytes@dest.test>\r\n', 250],
      ['DATA\r\n', 354],
      [message({ from: 'bytes@home.test', to: 'bytes@dest.test', subject: token, body: 'one\r\n..two\r\nthree' }), 250],
      ['NOOP\r\n', 250],
      ['QUIT\r\n', 221],
    ];
    for (const [text, code] of steps) {
      const what = JSON.stringify(text.slice(0, 20));
      for (let i = 0; i < text.length - 1; i++) {
        await c.writeNow(text[i]!);
        await sleep(1); // let the server read each byte on its own
      }
      // The line (or the message) is not complete yet: nothing may have been answered.
      await sleep(50);
      assert.equal(c.unread(), '', `${what}: answered before its last byte`);
      await c.writeNow(text[text.length - 1]!);
      assertReply(await c.reply(30_000), code, undefined, what);
      await sleep(50);
      assert.equal(c.unread(), '', `${what}: exactly one reply`);
    }
    await waitUntil('the server closing after QUIT', () => c.closed, 10_000);
    const got = await atMx(token);
    assert.match(got.data.toString('latin1'), /\r\n\r\none\r\n\.two\r\nthree\r\n$/);
  });

  // 3
  it('end of data is CRLF.CRLF only: bare-LF/CR dot lines inside the body do not end it; the real end split at each of its 5 bytes does', async () => {
    const token = `eod-${Date.now()}`;
    const c = await intercept('127.0.0.7');
    c.noDelay();
    assertReply(await c.cmd('MAIL FROM:<eod@home.test>'), 250);
    assertReply(await c.cmd('RCPT TO:<eod@dest.test>'), 250);
    assertReply(await c.cmd('DATA'), 354);
    // Each false end is followed by a line that, read as a command, would be answered (XYZZY → 500),
    // so a DATA ended early shows as an extra reply before the QUIT's 221, whatever the timing.
    const fakes = ['\n.\n', '\r\n.\n', '\n.\r\n', '\r.\r'];
    await c.writeNow(`From: <eod@home.test>\r\nTo: <eod@dest.test>\r\nSubject: ${token}\r\n\r\nstart`);
    for (const [i, fake] of fakes.entries()) {
      await c.writeNow(`${fake}XYZZY fake-${i}\r\nmore text ${i}`);
      await sleep(100);
      assert.equal(c.unread(), '', `${JSON.stringify(fake)} ended DATA`);
    }
    await c.writeNow('\r\n.\r\nQUIT\r\n');
    const replies = await repliesUntilClosed(c);
    assert.deepEqual(
      replies.map((r) => r.code),
      [250, 221],
      `one 250 for the message and the QUIT's 221, nothing between: ${replies.map((r) => r.text).join(' | ')}`,
    );
    const got = (await atMx(token)).data.toString('latin1');
    for (let i = 0; i < fakes.length; i++) assert.ok(got.includes(`XYZZY fake-${i}`), `the text after false end ${i} is part of the message`);

    // The real terminator split between two writes at each of its five bytes.
    const TERM = '\r\n.\r\n';
    const d = await intercept('127.0.0.7');
    d.noDelay();
    for (let k = 0; k < TERM.length; k++) {
      assertReply(await d.cmd('MAIL FROM:<eod@home.test>'), 250);
      assertReply(await d.cmd('RCPT TO:<eod@dest.test>'), 250);
      assertReply(await d.cmd('DATA'), 354);
      await d.writeNow(`Subject: ${token}-split-${k}\r\n\r\nbody ${k}${TERM.slice(0, k)}`);
      await sleep(100);
      assert.equal(d.unread(), '', `split at ${k}: answered before the end of data was complete`);
      await d.writeNow(TERM.slice(k));
      assertReply(await d.reply(30_000), 250, '2.0.0', `split at ${k}`);
    }
    assertReply(await d.cmd('NOOP'), 250, undefined, 'NOOP after the last message');
    await d.quit();
  });

  // 4
  it('dot-unstuffing (RFC 5321 4.5.2): "..hello" arrives as ".hello"; a ".." line is not the end of data and arrives as "."', async () => {
    const token = `dots-${Date.now()}`;
    const c = await intercept('127.0.0.8');
    assertReply(await c.cmd('MAIL FROM:<dots@home.test>'), 250);
    assertReply(await c.cmd('RCPT TO:<dots@dest.test>'), 250);
    const r = await c.data(message({ from: 'dots@home.test', to: 'dots@dest.test', subject: token, body: 'first\r\n..hello\r\n..\r\n...\r\nlast' }));
    assertReply(r, 250, '2.0.0', 'end of data');
    await c.quit();
    // The test MX (smtp-server) unstuffs what the gateway's relay client stuffs: it holds what the gateway stored.
    const got = (await atMx(token)).data.toString('latin1');
    assert.match(got, /\r\n\r\nfirst\r\n\.hello\r\n\.\r\n\.\.\r\nlast\r\n$/, JSON.stringify(got.slice(-60)));
  });

  // 5
  it('STARTTLS (RFC 3207): a command pipelined behind STARTTLS in plaintext is never answered (CVE-2011-0411 class)', async () => {
    const cases: Array<[string, string, string]> = [
      ['intercept', 'STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n', '127.0.0.9'],
      ['intercept', 'STARTTLS\r\nRSET\r\n', '127.0.0.9'],
      ['submission', 'STARTTLS\r\nRSET\r\nAUTH PLAIN ' + authPlain(ALICE.user, ALICE.pass) + '\r\n', '127.0.0.9'],
    ];
    for (const [listener, payload, ip] of cases) {
      const what = `${listener}: ${JSON.stringify(payload.slice(0, 40))}`;
      const c = await RawSmtp.connect(gw.port(listener), { localAddress: ip });
      assertReply(await c.reply(), 220, undefined, `${what} greeting`);
      assertReply(await c.cmd('EHLO inject.test'), 250, undefined, what);
      c.write(payload);
      assertReply(await c.reply(), 220, undefined, `${what}: STARTTLS`);
      await sleep(100);
      assert.equal(c.unread(), '', `${what}: a plaintext reply after the 220`);
      await c.upgradeTls();
      const first = await c.cmd('EHLO inject.test');
      assertReply(first, 250, undefined, `${what}: the first reply over TLS`);
      assert.ok(first.lines.length > 1 && first.lines.includes('PIPELINING'), `${what}: the first reply over TLS is the EHLO's, not the injected command's: ${first.text}`);
      assert.ok(!first.lines.includes('STARTTLS'), `${what}: STARTTLS offered again inside TLS`);
      if (listener === 'submission') {
        // The injected AUTH did not authenticate the session.
        assertReply(await c.cmd('MAIL FROM:<alice@isp.test>'), 530, '5.7.0', `${what}: MAIL after an injected AUTH`);
      } else {
        assertReply(await c.cmd('NOOP'), 250, undefined, `${what}: NOOP`);
      }
      // Nothing else is ever answered: up to the close, the QUIT's 221 is the only reply left.
      c.write('QUIT\r\n');
      const rest = await repliesUntilClosed(c);
      assert.deepEqual(
        rest.map((r) => r.text.slice(0, 3)),
        ['221'],
        `${what}: a late reply to the injected command: ${rest.map((r) => r.text).join(' | ')}`,
      );
    }
  });

  it('STARTTLS inside TLS → 503 5.5.1; STARTTLS with an argument → 501', async () => {
    const c = await intercept('127.0.0.9');
    assertReply(await c.cmd('STARTTLS now'), 501, undefined, 'STARTTLS with an argument');
    assertReply(await c.starttls(), 220, undefined, 'STARTTLS');
    assertReply(await c.cmd('EHLO client.test'), 250);
    assertReply(await c.cmd('STARTTLS'), 503, '5.5.1', 'STARTTLS inside TLS');
    // The session is still usable.
    assertReply(await c.cmd('MAIL FROM:<tls@home.test>'), 250);
    await c.quit();
    const s = await RawSmtp.connect(gw.port('submissions'), { localAddress: '127.0.0.9', implicitTls: true });
    assertReply(await s.reply(), 220);
    assertReply(await s.cmd('EHLO client.test'), 250);
    assertReply(await s.cmd('STARTTLS'), 503, '5.5.1', 'STARTTLS on implicit TLS');
    await s.quit();
  });

  // 6
  it('after STARTTLS the session starts over: EHLO required again, a plaintext transaction is forgotten, AUTH offered only inside TLS', async () => {
    const c = await intercept('127.0.0.10');
    assertReply(await c.cmd('MAIL FROM:<before-tls@home.test>'), 250);
    assertReply(await c.starttls(), 220);
    assertReply(await c.cmd('MAIL FROM:<tls@home.test>'), 503, '5.5.1', 'MAIL before the new EHLO');
    assertReply(await c.cmd('EHLO client.test'), 250);
    // The MAIL FROM given in plaintext is gone (RFC 3207 4.2: discard any knowledge obtained before TLS).
    const rcpt = await c.cmd('RCPT TO:<x@dest.test>');
    assertReply(rcpt, 503, undefined, 'RCPT with only a pre-TLS MAIL FROM');
    await c.quit();

    const s = await RawSmtp.connect(gw.port('submission'), { localAddress: '127.0.0.10' });
    assertReply(await s.reply(), 220);
    const plain = await s.cmd('EHLO client.test');
    assert.ok(plain.lines.includes('STARTTLS'), plain.text);
    assert.ok(!plain.lines.some((l) => /^AUTH\b/i.test(l)), `AUTH offered before TLS: ${plain.text}`);
    assertReply(await s.starttls(), 220);
    const secure = await s.cmd('EHLO client.test');
    assert.ok(secure.lines.some((l) => /^AUTH\b.*\bPLAIN\b/i.test(l)), `AUTH PLAIN offered inside TLS: ${secure.text}`);
    assert.ok(!secure.lines.includes('STARTTLS'), `STARTTLS offered inside TLS: ${secure.text}`);
    await s.quit();
  });

  // 7
  it('AUTH (RFC 4954): PLAIN with and without initial response, LOGIN, cancel, unknown mechanism, bad base64, twice, wrong password, before TLS', async () => {
    // Before TLS on a STARTTLS listener: 538 5.7.11 (encryption required).
    const p = await RawSmtp.connect(gw.port('submission'), { localAddress: '127.0.0.11' });
    await p.reply();
    await p.cmd('EHLO client.test');
    assertReply(await p.cmd(`AUTH PLAIN ${authPlain(ALICE.user, ALICE.pass)}`), 538, '5.7.11', 'AUTH before TLS');
    await p.quit();

    // PLAIN with an initial response; then MAIL accepted; a second AUTH → 503.
    {
      const { c } = await submissionTls('127.0.0.11');
      assertReply(await c.cmd(`AUTH PLAIN ${authPlain(ALICE.user, ALICE.pass)}`), 235, '2.7.0', 'AUTH PLAIN with initial response');
      assertReply(await c.cmd(`AUTH PLAIN ${authPlain(ALICE.user, ALICE.pass)}`), 503, undefined, 'second AUTH');
      assertReply(await c.cmd('MAIL FROM:<alice@isp.test>'), 250, '2.1.0', 'MAIL after AUTH');
      await c.quit();
    }
    // PLAIN through the 334 continuation.
    {
      const { c } = await submissionTls('127.0.0.11');
      const go = await c.cmd('AUTH PLAIN');
      assertReply(go, 334, undefined, 'AUTH PLAIN without initial response');
      assertReply(await c.cmd(authPlain(ALICE.user, ALICE.pass)), 235, '2.7.0', 'AUTH PLAIN response');
      assertReply(await c.cmd('MAIL FROM:<alice@isp.test>'), 250);
      await c.quit();
    }
    // PLAIN with the authorization identity given and equal to the authentication identity.
    {
      const { c } = await submissionTls('127.0.0.11');
      assertReply(await c.cmd(`AUTH PLAIN ${b64(`${ALICE.user}\0${ALICE.user}\0${ALICE.pass}`)}`), 235, '2.7.0', 'AUTH PLAIN with authzid = authcid');
      // Whose session it is shows in what it may send as.
      assertReply(await c.cmd('MAIL FROM:<bob@isp.test>'), 553, '5.7.1', "MAIL as another account's address");
      assertReply(await c.cmd('MAIL FROM:<alice@isp.test>'), 250);
      await c.quit();
    }
    // LOGIN, both steps.
    {
      const { c } = await submissionTls('127.0.0.11');
      assertReply(await c.cmd('AUTH LOGIN'), 334, undefined, 'AUTH LOGIN');
      assertReply(await c.cmd(b64(ALICE.user)), 334, undefined, 'AUTH LOGIN user name');
      assertReply(await c.cmd(b64(ALICE.pass)), 235, '2.7.0', 'AUTH LOGIN password');
      assertReply(await c.cmd('MAIL FROM:<alice@isp.test>'), 250);
      await c.quit();
    }
    // Cancel with "*", unknown mechanism, bad base64: the session stays unauthenticated and usable.
    {
      const { c } = await submissionTls('127.0.0.11');
      assertReply(await c.cmd('AUTH PLAIN'), 334);
      assertReply(await c.cmd('*'), 501, undefined, 'AUTH cancelled with *');
      assertReply(await c.cmd('AUTH LOGIN'), 334);
      assertReply(await c.cmd('*'), 501, undefined, 'AUTH LOGIN cancelled with *');
      assertReply(await c.cmd('AUTH X-NO-SUCH-MECH'), 504, undefined, 'unknown mechanism');
      assertReply(await c.cmd('AUTH PLAIN !!!not*base64!!!'), 501, undefined, 'bad base64');
      assertReply(await c.cmd('MAIL FROM:<alice@isp.test>'), 530, '5.7.0', 'MAIL while unauthenticated');
      assertReply(await c.cmd(`AUTH PLAIN ${authPlain(ALICE.user, ALICE.pass)}`), 235, '2.7.0', 'AUTH after the failures');
      await c.quit();
    }
    // Wrong password (from its own address, so that any failure-based slowdown touches nothing else).
    {
      const { c } = await submissionTls('127.0.0.12');
      assertReply(await c.cmd(`AUTH PLAIN ${authPlain(ALICE.user, 'not-her-password')}`), 535, '5.7.8', 'wrong password');
      assertReply(await c.cmd('MAIL FROM:<alice@isp.test>'), 530, '5.7.0', 'MAIL after a failed AUTH');
      await c.quit();
    }
  });

  it(
    'AUTH PLAIN (RFC 4616 2): credentials that are not allowed to act as the given authorization identity are refused',
    async () => {
      const { c } = await submissionTls('127.0.0.11');
      try {
        const r = await c.cmd(`AUTH PLAIN ${b64(`bob@isp.test\0${ALICE.user}\0${ALICE.pass}`)}`);
        assertReply(r, 535, '5.7.8', "alice's password with authzid bob");
        assertReply(await c.cmd('MAIL FROM:<bob@isp.test>'), 530, '5.7.0', 'not authenticated as anyone');
      } finally {
        c.close(); // a failure must leave no session behind to hold up the gateway's stop
      }
    },
  );

  // 8
  it('command sequence (RFC 5321 4.1.4): out-of-order commands get 503; RSET clears the transaction; HELO works', async () => {
    const c = await intercept('127.0.0.5', null);
    assertReply(await c.cmd('MAIL FROM:<seq@home.test>'), 503, undefined, 'MAIL before EHLO/HELO');
    assertReply(await c.cmd('HELO client.test'), 250, undefined, 'HELO');
    assertReply(await c.cmd('RCPT TO:<seq@dest.test>'), 503, undefined, 'RCPT before MAIL');
    assertReply(await c.cmd('DATA'), 503, undefined, 'DATA before MAIL');
    assertReply(await c.cmd('MAIL FROM:<seq@home.test>'), 250);
    assertReply(await c.cmd('DATA'), 503, undefined, 'DATA before RCPT');
    assertReply(await c.cmd('MAIL FROM:<again@home.test>'), 503, undefined, 'nested MAIL');
    assertReply(await c.cmd('RCPT TO:<seq@dest.test>'), 250);
    assertReply(await c.cmd('RSET'), 250, undefined, 'RSET');
    assertReply(await c.cmd('RCPT TO:<seq@dest.test>'), 503, undefined, 'RCPT after RSET');
    assertReply(await c.cmd('DATA'), 503, undefined, 'DATA after RSET');
    assertReply(await c.cmd('MAIL FROM:<seq@home.test>'), 250, undefined, 'MAIL after RSET');
    await c.quit();
  });

  // 9
  it('syntax: MAIL without brackets → 501; SIZE over the limit → 552 5.3.4; bare EHLO/HELO → 501; verbs are case-insensitive', async () => {
    const c = await intercept('127.0.0.5', null);
    assertReply(await c.cmd('EHLO'), 501, undefined, 'EHLO without an argument');
    assertReply(await c.cmd('HELO'), 501, undefined, 'HELO without an argument');
    assertReply(await c.cmd('ehlo client.test'), 250, undefined, 'lower-case EHLO');
    assertReply(await c.cmd('MAIL FROM:alice@home.test'), 501, undefined, 'MAIL FROM without <>');
    assertReply(await c.cmd(`MAIL FROM:<big@home.test> SIZE=${MAX_SIZE + 1}`), 552, '5.3.4', 'declared SIZE over the limit');
    assertReply(await c.cmd('MAIL FROM:<big@home.test> SIZE=-1'), 501, undefined, 'SIZE=-1');
    assertReply(await c.cmd(`MAIL FROM:<big@home.test> SIZE=${'9'.repeat(30)}`), 552, '5.3.4', 'a SIZE with 30 digits is over the limit, not a syntax error');
    assertReply(await c.cmd(`mail from:<big@home.test> SIZE=${MAX_SIZE}`), 250, '2.1.0', 'declared SIZE at the limit (lower-case verb)');
    assertReply(await c.cmd('RCPT TO:<a@dest.test'), 501, undefined, 'RCPT with an unclosed bracket');
    assertReply(await c.cmd('RCPT TO:a@dest.test'), 501, undefined, 'RCPT TO without <>');
    // Nothing was accepted, so there is nothing to send: DATA is refused.
    const data = await c.cmd('DATA');
    assert.ok(data.code === 503 || data.code === 554, `DATA with no accepted recipient: ${data.text}`);
    assertReply(await c.cmd('NOOP'), 250, undefined, 'the session goes on');
    await c.quit();
  });

  it(
    'unknown MAIL/RCPT parameters (RFC 5321 4.1.1.11: 555) are refused, and the recipient is not accepted',
    async () => {
      const c = await intercept('127.0.0.5');
      try {
        const mail = await c.cmd('MAIL FROM:<param@home.test> FOO=bar');
        assert.ok(mail.code === 555 || mail.code === 501, `unknown MAIL parameter: ${mail.text}`);
        assertReply(await c.cmd('MAIL FROM:<param@home.test>'), 250);
        const rcpt = await c.cmd('RCPT TO:<param@dest.test> FOO=bar');
        assert.ok(rcpt.code === 555 || rcpt.code === 501, `unknown RCPT parameter: ${rcpt.text}`);
        const data = await c.cmd('DATA');
        assert.ok(data.code === 503 || data.code === 554, `DATA after the only RCPT was refused: ${data.text}`);
      } finally {
        c.close();
      }
    },
  );

  it('a NUL byte in a command line: 5xx (or 421 and close); the gateway keeps serving', async () => {
    for (const line of ['MAIL FROM:<nul\0byte@home.test>', 'NO\0OP', '\0EHLO x']) {
      const what = JSON.stringify(line);
      const c = await intercept('127.0.0.6');
      const r = await c.cmd(line);
      if (r.code === 421) await repliesUntilClosed(c);
      else {
        assert.ok(r.code >= 500 && r.code < 600, `${what}: ${r.text}`);
        assertReply(await c.cmd('NOOP'), 250, undefined, `${what}: the session goes on`);
      }
      c.close();
    }
    await stillServing('127.0.0.7');
  });

  // 10
  it('an overlong command line (100 KB, no CRLF) is refused and/or cut off; the gateway keeps serving', async () => {
    const c = await intercept('127.0.0.8');
    c.write(`NOOP ${'A'.repeat(100 * 1024)}`);
    await waitUntil('a reply or a close after the overlong line', () => c.closed || c.peekReply() !== undefined, 15_000);
    const r = c.peekReply();
    if (r) assert.ok(r.code >= 400, `overlong line: ${r.text}`);
    c.close();
    await stillServing('127.0.0.8');
  });

  it('unrecognised commands: 500 each, then after at most 10, 421 and the connection closed', async () => {
    const c = await intercept('127.0.0.9');
    const got: SmtpReply[] = [];
    for (let i = 0; i < 12 && !c.closed; i++) {
      c.write(`XYZZY${i}\r\n`);
      try {
        got.push(await c.reply());
      } catch {
        break;
      }
      if (got[got.length - 1]!.code === 421) break;
    }
    const codes = got.map((r) => r.code);
    assert.equal(codes[codes.length - 1], 421, `ends with 421: ${got.map((r) => r.text).join(' | ')}`);
    assert.ok(codes.length <= 11, `421 after at most 10 unrecognised commands (got ${codes.length} replies)`);
    for (const r of got.slice(0, -1)) assertReply(r, 500, undefined, 'unrecognised command');
    await repliesUntilClosed(c);
  });

  it('an HTTP request line → 421 and close', async () => {
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.10' });
    assertReply(await c.reply(), 220);
    c.write('GET / HTTP/1.1\r\nHost: gw.isp.test\r\n\r\n');
    const got = await repliesUntilClosed(c);
    assert.ok(got.length >= 1, 'answered');
    assertReply(got[0]!, 421, undefined, 'HTTP request line');
    const post = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.10' });
    assertReply(await post.reply(), 220);
    assertReply(await post.cmd('EHLO client.test'), 250);
    post.write('POST /upload HTTP/1.0\r\n');
    const got2 = await repliesUntilClosed(post);
    assertReply(got2[0]!, 421, undefined, 'HTTP request line after EHLO');
  });

  it('AUTH and STARTTLS where the listener does not offer them: 502 5.5.1, not counted as unknown commands', async () => {
    const c = await RawSmtp.connect(gw.port('slowgreet'), { localAddress: '127.0.0.13' });
    assertReply(await c.reply(15_000), 220, undefined, 'greeting');
    assertReply(await c.cmd('EHLO plain.test'), 250);
    // More than the ten unknown commands that end a session: none of these counts as one.
    for (let i = 0; i < 6; i++) {
      assertReply(await c.cmd('STARTTLS'), 502, '5.5.1', 'STARTTLS on a plain listener');
      assertReply(await c.cmd(`AUTH PLAIN ${b64(`\0${ALICE.user}\0${ALICE.pass}`)}`), 502, '5.5.1', 'AUTH on a listener without AUTH');
    }
    assertReply(await c.cmd('NOOP'), 250, undefined, 'the session goes on');
    await c.quit();
  });

  it('an early talker (writes before the greeting on a listener with greetDelay) is refused; a patient client is greeted', async () => {
    const early = await RawSmtp.connect(gw.port('slowgreet'), { localAddress: '127.0.0.11' });
    early.write('EHLO early.test\r\nMAIL FROM:<spam@early.test>\r\n');
    const first = await early.reply(15_000).catch(() => undefined);
    assert.ok(first === undefined || first.code >= 400, `early talker got ${first?.text}`);
    const rest = await repliesUntilClosed(early, 15_000);
    for (const r of rest) assert.ok(r.code >= 400, `early talker: later reply ${r.text}`);
    const patient = await RawSmtp.connect(gw.port('slowgreet'), { localAddress: '127.0.0.11' });
    assertReply(await patient.reply(15_000), 220, undefined, 'greeting after the pause');
    assertReply(await patient.cmd('EHLO patient.test'), 250);
    await patient.quit();
  });

  // 11
  it('null reverse-path MAIL FROM:<> is accepted; RCPT TO:<postmaster> gets a reply and the session goes on', async () => {
    const c = await intercept('127.0.0.12');
    assertReply(await c.cmd('MAIL FROM:<>'), 250, '2.1.0', 'MAIL FROM:<>');
    const pm = await c.cmd('RCPT TO:<postmaster>');
    assert.ok((pm.code >= 200 && pm.code < 300) || (pm.code >= 500 && pm.code < 600), `RCPT TO:<postmaster>: ${pm.text}`);
    const pm2 = await c.cmd('RCPT TO:<Postmaster>');
    assert.ok(pm2.code >= 200 && pm2.code < 600, `RCPT TO:<Postmaster>: ${pm2.text}`);
    assertReply(await c.cmd('RCPT TO:<bounce@dest.test>'), 250, '2.1.5', 'RCPT after');
    assertReply(await c.cmd('NOOP'), 250);
    await c.quit();
  });

  // 12
  it('QUIT: 221, then the server closes the connection; commands pipelined after QUIT are not answered', async () => {
    const c = await intercept('127.0.0.5');
    c.write('QUIT\r\nNOOP\r\nRSET\r\nMAIL FROM:<after-quit@home.test>\r\n');
    const got = await repliesUntilClosed(c);
    assert.deepEqual(
      got.map((r) => r.code),
      [221],
      `only the QUIT is answered: ${got.map((r) => r.text).join(' | ')}`,
    );
    assert.equal(enhanced(got[0]!), '2.0.0');
    // The client never closed its side: c.closed came from the server.
  });

  // 13
  it('SIZE (RFC 1870): advertised as limits.maxMessageSize; a larger body → 552 5.3.4 at end of data, and the session stays usable', async () => {
    const c = await intercept('127.0.0.6', null);
    const ehlo = await c.cmd('EHLO size.test');
    const size = ehlo.lines.find((l) => /^SIZE\b/i.test(l));
    assert.equal(size, `SIZE ${MAX_SIZE}`, ehlo.text);
    assertReply(await c.cmd('MAIL FROM:<big@home.test>'), 250);
    assertReply(await c.cmd('RCPT TO:<big@dest.test>'), 250);
    const line = `${'x'.repeat(76)}\r\n`;
    const body = line.repeat(Math.ceil((2 * MAX_SIZE) / line.length));
    const r = await c.data(`From: <big@home.test>\r\nTo: <big@dest.test>\r\nSubject: too big\r\n\r\n${body}.\r\n`);
    assertReply(r, 552, '5.3.4', 'oversize message');
    assertReply(await c.cmd('RSET'), 250, undefined, 'RSET after the 552');
    // And a normal message goes through on the same session.
    const token = `after-552-${Date.now()}`;
    assertReply(await c.cmd('MAIL FROM:<big@home.test>'), 250);
    assertReply(await c.cmd('RCPT TO:<big@dest.test>'), 250);
    assertReply(await c.data(message({ from: 'big@home.test', to: 'big@dest.test', subject: token })), 250, '2.0.0');
    await c.quit();
    await atMx(token);
  });

  // 14
  it('implicit TLS (465): the greeting comes over TLS; STARTTLS is not offered, AUTH is', async () => {
    const c = await RawSmtp.connect(gw.port('submissions'), { localAddress: '127.0.0.7', implicitTls: true });
    assert.ok(c.peerCertificate(), 'a TLS session from the first byte');
    assertReply(await c.reply(), 220, undefined, 'greeting over TLS');
    const ehlo = await c.cmd('EHLO client.test');
    assertReply(ehlo, 250);
    assert.ok(!ehlo.lines.includes('STARTTLS'), `STARTTLS offered on implicit TLS: ${ehlo.text}`);
    assert.ok(ehlo.lines.some((l) => /^AUTH\b.*\bPLAIN\b/i.test(l)), ehlo.text);
    assertReply(await c.cmd(`AUTH PLAIN ${authPlain(ALICE.user, ALICE.pass)}`), 235, '2.7.0');
    assertReply(await c.cmd('MAIL FROM:<alice@isp.test>'), 250);
    await c.quit();

    // A plaintext SMTP client on the implicit-TLS port is not greeted in plaintext.
    const plain = await RawSmtp.connect(gw.port('submissions'), { localAddress: '127.0.0.7' });
    plain.write('EHLO plain.test\r\n');
    const r = await plain.reply(3000).catch(() => undefined);
    assert.equal(r, undefined, `a plaintext reply on the implicit-TLS port: ${r?.text}`);
    plain.close();
  });
});
