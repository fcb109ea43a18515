/**
 * The outbound SMTP client (src/relay/client.ts over smtp-client/) against
 * scripted servers on loopback that misbehave on purpose: replies split
 * across packets, multi-line replies, a server that closes mid-pipeline, one
 * refused recipient in a pipelined batch, a server without PIPELINING that
 * punishes pipelining, a greeting that never comes, replies that never end
 * (trickled, or flooded with blank or "250-" lines), a server that reads
 * the message slowly, a STARTTLS response injection (CVE-2011-0411), and a
 * pooled connection that died without a FIN. Plus the wire form of the body
 * against the DataStream the gateway used before (nodemailer's), on random
 * input, and the body deadline's arithmetic on a clock of its own.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import DataStream from 'nodemailer/lib/smtp-connection/data-stream';
import { closeSession, openSession, resetSession, sendOnSession, type SendResult, type SessionSettings, type Target } from '../../src/relay/client';
import { classifyError, classifyReply } from '../../src/relay/classify';
import { DotStuffer } from '../../src/relay/smtp-client/dot-stuff';
import { parseEhlo } from '../../src/relay/smtp-client/connection';
import { MAX_LINE } from '../../src/relay/smtp-client/reply-reader';
import { DataDeadline } from '../../src/relay/smtp-client/data-deadline';
import { createDeliveryAgent } from '../../src/relay/deliver';
import { startTestMx } from '../helpers/test-mx';
import { testCert } from '../helpers/tls';
import { captureLogger, job, relayConfig } from './fixtures';

const T = { timeout: 20_000 };
const settings: SessionSettings = { name: 'client.test', connectTimeoutMs: 2000, greetingTimeoutMs: 2000, socketTimeoutMs: 5000, dataTimeoutMs: 5000, minDataRate: 64 * 1024, dataDoneTimeoutMs: 5000 };
const BODY = 'Subject: t\r\n\r\nhello\r\n';

/** A raw TCP server on loopback; `onConn` scripts each connection. */
async function server(onConn: (sock: net.Socket, n: number) => void): Promise<{ port: number; close(): Promise<void>; conns: () => number }> {
  let n = 0;
  const socks = new Set<net.Socket>();
  const srv = net.createServer((sock) => {
    socks.add(sock);
    sock.on('close', () => socks.delete(sock));
    sock.on('error', () => undefined);
    sock.setNoDelay(true);
    onConn(sock, n++);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    conns: () => n,
    close: async () => {
      for (const s of socks) s.destroy();
      await new Promise((r) => srv.close(r));
    },
  };
}

/** Lines (without CRLF) as they arrive, in chunks: `onChunk` sees every line of one read together. Returns: stop listening. */
function onLines(sock: net.Socket | tls.TLSSocket, onChunk: (lines: string[]) => void): () => void {
  let buf = '';
  const listener = (d: Buffer): void => {
    buf += d.toString('latin1');
    const lines = buf.split('\r\n');
    buf = lines.pop() ?? '';
    if (lines.length) onChunk(lines);
  };
  sock.on('data', listener);
  return () => sock.off('data', listener);
}

interface MiniMx {
  pipelining?: boolean;
  ehloExtra?: string[];
  rcptReply?: (addr: string) => string;
  /** The reply to the end of the data (default "250 2.0.0 queued"). */
  finalReply?: string;
  /** Transaction replies wait until DATA has arrived: a client that waits for the MAIL reply hangs. */
  holdUntilData?: boolean;
  /** Inside TLS after STARTTLS: no second greeting. */
  noGreeting?: boolean;
  /** Called for each command: 'skip' sends no reply to it, 'stop' ends all answering on this connection. */
  onCommand?: (line: string, sock: net.Socket) => 'skip' | 'stop' | undefined;
}

interface Seen {
  commands: string[];
  bodies: string[];
  /** A command arrived while a previous one was still unanswered (lock-step broken). */
  pipelinedWithoutOffer: boolean;
}

/** A small, honest SMTP receiver with hooks, enough for the client's transactions. */
function miniMx(sock: net.Socket, o: MiniMx, seen: Seen): void {
  const ext = [...(o.pipelining === false ? [] : ['PIPELINING']), '8BITMIME', 'SIZE 1000000', ...(o.ehloExtra ?? [])];
  if (!o.noGreeting) sock.write('220 mini.test ESMTP\r\n');
  let inData = false;
  let txnOpen = false;
  let body = '';
  let held: string[] = [];
  let stopped = false;
  onLines(sock, (lines) => {
    if (stopped) return;
    const out: string[] = [];
    if (o.pipelining === false && !inData && lines.length > 1) seen.pipelinedWithoutOffer = true;
    for (const line of lines) {
      if (inData) {
        if (line === '.') {
          inData = false;
          seen.bodies.push(body);
          body = '';
          out.push(o.finalReply ?? '250 2.0.0 queued');
        } else body += `${line}\r\n`;
        continue;
      }
      seen.commands.push(line);
      const scripted = o.onCommand?.(line, sock);
      if (scripted === 'stop') return void (stopped = true);
      if (scripted === 'skip') continue;
      const verb = line.slice(0, 4).toUpperCase();
      if (verb === 'MAIL' || verb === 'RSET' || verb === 'RCPT') txnOpen = true;
      if (verb === 'DATA') txnOpen = false;
      if (verb === 'EHLO') out.push(['250-mini.test', ...ext.slice(0, -1).map((e) => `250-${e}`), `250 ${ext[ext.length - 1]}`].join('\r\n'));
      else if (verb === 'HELO' || verb === 'RSET' || verb === 'MAIL') out.push('250 2.0.0 ok');
      else if (verb === 'RCPT') out.push(o.rcptReply?.(/<(.*)>/.exec(line)?.[1] ?? '') ?? '250 2.1.5 ok');
      else if (verb === 'DATA') {
        inData = true;
        out.push('354 go ahead');
      } else if (verb === 'QUIT') {
        sock.end('221 bye\r\n');
        return;
      } else out.push('502 5.5.2 what');
    }
    if (o.holdUntilData && txnOpen) {
      held = held.concat(out);
      return;
    }
    const all = held.concat(out);
    held = [];
    if (all.length) sock.write(`${all.join('\r\n')}\r\n`);
  });
}

const newSeen = (): Seen => ({ commands: [], bodies: [], pipelinedWithoutOffer: false });
const target = (port: number, over: Partial<Target> = {}): Target => ({ host: 'mini.test', ip: '127.0.0.1', port, tls: 'none', ...over });
const env = (to: string[]) => ({ from: 'a@client.test', to, size: BODY.length, smtpUtf8: false });
const body = (): Readable => Readable.from([Buffer.from(BODY)]);

/** Resolve p, or fail the test after ms: a guard that is missing must show up as a failure, not a hang. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

test('replies split across packets and multi-line replies are read whole', T, async () => {
  const seen = newSeen();
  // Every reply goes out one byte per write, with a pause, so lines and replies break anywhere.
  const srv = await server((sock) => {
    const queue: string[] = [];
    let busy = false;
    const orig = sock.write.bind(sock);
    const pump = (): void => {
      const next = queue.shift();
      if (next === undefined) return void (busy = false);
      busy = true;
      orig(next);
      setTimeout(pump, 1);
    };
    (sock as unknown as { write: (s: string) => boolean }).write = (s: string) => {
      queue.push(...s);
      if (!busy) pump();
      return true;
    };
    miniMx(sock, { ehloExtra: ['SMTPUTF8', 'X-LONG-KEYWORD with some args'] }, seen);
  });
  try {
    const r = await within(openSession(target(srv.port), settings), 10_000, 'open');
    assert.ok(r.ok, r.ok ? '' : r.err.message);
    const s = r.session;
    assert.ok(s.conn.extensions.has('PIPELINING') && s.conn.extensions.has('SMTPUTF8') && s.conn.extensions.has('X-LONG-KEYWORD'));
    assert.equal(s.conn.maxSize, 1_000_000);
    const res = await within(sendOnSession(s, env(['b@x.test', 'c@x.test']), body), 10_000, 'send');
    assert.deepEqual([...res.accepted.keys()], ['b@x.test', 'c@x.test']);
    assert.equal(res.accepted.get('b@x.test'), '250 2.0.0 queued');
    assert.equal(res.reusable, true);
    assert.equal(seen.bodies[0], BODY);
    closeSession(s);
  } finally {
    await srv.close();
  }
});

test('PIPELINING: RSET, MAIL, every RCPT and DATA leave before any reply; a 550 to one RCPT bounces only that one', T, async () => {
  const seen = newSeen();
  const srv = await server((sock) =>
    miniMx(sock, { holdUntilData: true, rcptReply: (a) => (a.startsWith('nobody') ? '550 5.1.1 no such user' : '250 2.1.5 ok') }, seen),
  );
  try {
    const r = await openSession(target(srv.port), settings);
    assert.ok(r.ok);
    const s = r.session;
    const first = await within(sendOnSession(s, env(['b@x.test', 'nobody@x.test', 'c@x.test']), body), 5000, 'pipelined send');
    assert.deepEqual([...first.accepted.keys()].sort(), ['b@x.test', 'c@x.test']);
    const refused = first.failed.get('nobody@x.test');
    assert.ok(refused);
    assert.deepEqual(classifyError('nobody@x.test', refused), { address: 'nobody@x.test', kind: 'bounced', error: '550 5.1.1 no such user', statusCode: '5.1.1', remoteMta: undefined });
    assert.equal(classifyReply('b@x.test', first.accepted.get('b@x.test')!).kind, 'delivered');
    assert.equal(seen.bodies.length, 1);
    // A second transaction on the pooled session: the RSET rides in the same batch.
    assert.equal(await resetSession(s), true);
    const before = seen.commands.length;
    const second = await within(sendOnSession(s, env(['d@x.test']), body), 5000, 'second send');
    assert.equal(second.accepted.size, 1);
    assert.deepEqual(seen.commands.slice(before, before + 4).map((c) => c.slice(0, 4)), ['RSET', 'MAIL', 'RCPT', 'DATA']);
    closeSession(s);
  } finally {
    await srv.close();
  }
});

test('a server without PIPELINING gets one command at a time', T, async () => {
  const seen = newSeen();
  const srv = await server((sock) => miniMx(sock, { pipelining: false }, seen));
  try {
    const r = await openSession(target(srv.port), settings);
    assert.ok(r.ok);
    for (const to of [['b@x.test', 'c@x.test'], ['d@x.test']]) {
      if (r.session.messages > 0) assert.equal(await resetSession(r.session), true);
      const res: SendResult = await within(sendOnSession(r.session, env(to), body), 5000, 'lock-step send');
      assert.equal(res.accepted.size, to.length);
    }
    assert.equal(seen.pipelinedWithoutOffer, false, 'commands were pipelined to a server that did not offer PIPELINING');
    assert.equal(seen.bodies.length, 2);
    closeSession(r.session);
  } finally {
    await srv.close();
  }
});

test('a server that closes mid-pipeline: every recipient deferred, no body sent, never reused', T, async () => {
  const seen = newSeen();
  const srv = await server((sock) =>
    miniMx(
      sock,
      {
        onCommand: (line, s) => {
          // Answer MAIL and the first RCPT, then hang up in the middle of the batch.
          if (line.startsWith('RCPT TO:<c@')) {
            s.write('250 2.0.0 ok\r\n250 2.1.5 ok\r\n');
            s.destroy();
            return 'stop';
          }
          return line.startsWith('MAIL') || line.startsWith('RCPT TO:<b@') ? 'skip' : undefined;
        },
      },
      seen,
    ),
  );
  try {
    const r = await openSession(target(srv.port), settings);
    assert.ok(r.ok);
    const res = await within(sendOnSession(r.session, env(['b@x.test', 'c@x.test']), body), 5000, 'send to a closing server');
    assert.equal(res.accepted.size, 0);
    assert.equal(res.reusable, false);
    for (const a of ['b@x.test', 'c@x.test']) assert.equal(classifyError(a, res.failed.get(a)!).kind, 'deferred');
    assert.equal(seen.bodies.length, 0);
    assert.equal(r.session.broken, true);
  } finally {
    await srv.close();
  }
});

test('a greeting that never comes times out (GREETING_TIMEOUT), deferred', T, async () => {
  const srv = await server(() => undefined);
  try {
    const r = await within(openSession(target(srv.port), { ...settings, greetingTimeoutMs: 200, socketTimeoutMs: 60_000 }), 3000, 'open against a silent server');
    assert.equal(r.ok, false);
    if (r.ok) return;
    assert.equal(r.err.code, 'ETIMEDOUT');
    assert.equal(r.err.timeoutType, 'GREETING_TIMEOUT');
    assert.equal(classifyError('b@x.test', r.err).kind, 'deferred');
  } finally {
    await srv.close();
  }
});

test('a reply line that never ends, or a reply that never ends, is cut off at a bound', T, async () => {
  // The endless reply's lines carry the greeting's code: lines that disagree fail sooner (below).
  for (const chunk of ['A'.repeat(1024), '220-A\r\n'.repeat(128)]) {
    let written = 0;
    let closedEarly = false;
    const srv = await server((sock) => {
      sock.write(`220-${chunk}`);
      // Keep feeding up to 16 MB unless the client hangs up first.
      const feed = (): void => {
        if (sock.destroyed) return;
        if (written > 16 * 1024 * 1024) return;
        written += chunk.length;
        if (sock.write(chunk)) setImmediate(feed);
        else sock.once('drain', feed);
      };
      sock.on('close', () => (closedEarly = written < 16 * 1024 * 1024));
      feed();
    });
    try {
      const r = await within(openSession(target(srv.port), settings), 5000, 'open against an endless reply');
      assert.equal(r.ok, false);
      if (r.ok) return;
      assert.equal(r.err.code, 'EPROTOCOL');
      assert.match(r.err.message, /too long/);
      await new Promise((res) => setTimeout(res, 50));
      assert.ok(closedEarly, 'the client read on instead of hanging up');
      assert.ok(written < 1024 * 1024, `server got to write ${written} bytes`);
    } finally {
      await srv.close();
    }
  }
  assert.ok(MAX_LINE < 1024 * 1024);
});

test('STARTTLS: replies injected in plaintext after "220" are discarded, the EHLO inside TLS counts (CVE-2011-0411)', T, async () => {
  const { key, cert } = await testCert();
  const seen = newSeen();
  let tlsSeen = false;
  const srv = await server((sock) => {
    sock.write('220 mitm.test ESMTP\r\n');
    let upgraded = false;
    onLines(sock, (lines) => {
      if (upgraded) return;
      for (const line of lines) {
        if (line.startsWith('EHLO')) sock.write('250-mitm.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n');
        else if (line === 'STARTTLS') {
          upgraded = true;
          sock.removeAllListeners('data');
          // The injection: in the same packet as the 220, replies for commands not yet sent.
          sock.write('220 2.0.0 go ahead\r\n250-injected.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n');
          const secure = new tls.TLSSocket(sock, { isServer: true, key, cert });
          secure.on('error', () => undefined);
          secure.once('secure', () => (tlsSeen = true));
          miniMxOver(secure);
          return;
        }
      }
    });
  });
  // The honest server inside TLS: no PIPELINING, SIZE 1000000.
  const miniMxOver = (secure: tls.TLSSocket): void => miniMx(secure as unknown as net.Socket, { pipelining: false, noGreeting: true }, seen);
  try {
    const r = await within(openSession(target(srv.port, { tls: 'opportunistic' }), settings), 5000, 'open with STARTTLS');
    assert.ok(r.ok, r.ok ? '' : r.err.message);
    const s = r.session;
    assert.equal(s.secure, true);
    assert.equal(tlsSeen, true);
    assert.equal(s.conn.extensions.has('PIPELINING'), false, 'an injected plaintext reply was read as the EHLO inside TLS');
    assert.equal(s.conn.maxSize, 1_000_000);
    // The greeting banner inside TLS is not sent again; the first reply read is the real EHLO's.
    const res = await within(sendOnSession(s, env(['b@x.test']), body), 5000, 'send after STARTTLS');
    assert.equal(res.accepted.size, 1);
    assert.equal(seen.bodies.length, 1);
    closeSession(s);
  } finally {
    await srv.close();
  }
});

test('a pooled connection that died without a FIN: RSET unanswered, the message goes once on a fresh connection', T, async () => {
  const seen = newSeen();
  const srv = await server((sock, n) =>
    miniMx(
      sock,
      {
        // The first connection goes dark at its second transaction: no reply, no FIN.
        onCommand: (line) => (n === 0 && line === 'RSET' ? 'stop' : undefined),
      },
      seen,
    ),
  );
  try {
    // The dead connection shows itself by not answering RSET within the socket timeout.
    const r = await openSession(target(srv.port), { ...settings, socketTimeoutMs: 500 });
    assert.ok(r.ok);
    const s = r.session;
    assert.equal((await sendOnSession(s, env(['b@x.test']), body)).accepted.size, 1);
    assert.equal(await resetSession(s), true);
    const res = await within(sendOnSession(s, env(['c@x.test']), body), 8000, 'send on a dead pooled connection');
    assert.equal(res.accepted.size, 1, JSON.stringify([...res.failed].map(([a, e]) => [a, e.message])));
    assert.equal(srv.conns(), 2);
    assert.equal(seen.bodies.length, 2, 'each message exactly once');
    closeSession(s);
  } finally {
    await srv.close();
  }
});

test('a large message in many small chunks arrives whole, stuffed exactly as DataStream stuffs it', T, async () => {
  const seen = newSeen();
  const srv = await server((sock) => miniMx(sock, {}, seen));
  try {
    const lines = Array.from({ length: 20_000 }, (_, i) => (i % 7 === 0 ? `.line ${i}\n` : i % 11 === 0 ? `bare cr ${i}\r` : `line ${i} ${'x'.repeat(i % 60)}\r\n`));
    const raw = Buffer.from(lines.join(''));
    const chunks = Array.from({ length: Math.ceil(raw.length / 333) }, (_, i) => raw.subarray(i * 333, (i + 1) * 333));
    const r = await openSession(target(srv.port), settings);
    assert.ok(r.ok);
    const res = await within(sendOnSession(r.session, { ...env(['b@x.test']), size: raw.length }, () => Readable.from(chunks)), 10_000, 'large send');
    assert.equal(res.accepted.size, 1);
    const expected = await new Promise<string>((resolve) => {
      const ds = new DataStream();
      const out: Buffer[] = [];
      ds.on('data', (d: Buffer) => out.push(d));
      ds.on('end', () => resolve(Buffer.concat(out).toString('latin1')));
      ds.end(raw);
    });
    assert.equal(seen.bodies[0], expected.slice(0, -3), 'the body as the server read it');
    closeSession(r.session);
  } finally {
    await srv.close();
  }
});

test('EHLO keywords: SIZE limit, AUTH mechanisms (also the old AUTH= spelling)', () => {
  const e = parseEhlo('250-mx.test greets you\n250-SIZE 1000\n250-AUTH=LOGIN\n250-auth plain cram-md5\n250 starttls');
  assert.equal(e.maxSize, 1000);
  assert.deepEqual([...e.auth].sort(), ['CRAM-MD5', 'LOGIN', 'PLAIN']);
  assert.deepEqual([...e.extensions].sort(), ['AUTH', 'SIZE', 'STARTTLS']);
});

test('AUTH LOGIN when the server offers only LOGIN, inside STARTTLS; a wrong password is EAUTH, deferred; never AUTH in plaintext', T, async () => {
  const mx = await startTestMx({ starttls: true, auth: { user: 'relay', pass: 's3cret' }, extra: { authMethods: ['LOGIN'] } });
  try {
    const t = target(mx.port, { tls: 'required', auth: { user: 'relay', pass: 's3cret' } });
    const r = await openSession(t, settings);
    assert.ok(r.ok, r.ok ? '' : r.err.message);
    assert.equal(r.session.secure, true);
    assert.equal((await sendOnSession(r.session, env(['b@x.test']), body)).accepted.size, 1);
    assert.equal((await mx.waitFor(1))[0].user, 'relay');
    closeSession(r.session);
    const wrong = await openSession({ ...t, auth: { user: 'relay', pass: 'nope' } }, settings);
    assert.equal(wrong.ok, false);
    if (!wrong.ok) {
      assert.equal(wrong.err.code, 'EAUTH');
      assert.equal(classifyError('b@x.test', wrong.err).kind, 'deferred');
    }
    const plain = await openSession({ ...t, tls: 'none' }, settings);
    assert.equal(plain.ok, false);
    if (!plain.ok) assert.equal(plain.err.code, 'ENOTLSAUTH');
  } finally {
    await mx.close();
  }
});

test('the body on the wire: dot-stuffing and CR/LF normalisation equal nodemailer DataStream, however the input is split', async () => {
  const alphabet = Buffer.from('\r\n.a');
  for (let round = 0; round < 400; round++) {
    const len = 1 + (randomBytes(1)[0] % 40);
    const input = Buffer.from([...randomBytes(len)].map((b) => alphabet[b % alphabet.length]));
    const cuts = [...randomBytes(3)].map((b) => b % (len + 1)).sort((a, b) => a - b);
    const chunks = [input.subarray(0, cuts[0]), input.subarray(cuts[0], cuts[1]), input.subarray(cuts[1], cuts[2]), input.subarray(cuts[2])];
    const ours = new DotStuffer();
    const mine = Buffer.concat([...chunks.map((c) => ours.stuff(c)), ours.end()]);
    const theirs = await new Promise<Buffer>((resolve) => {
      const ds = new DataStream();
      const out: Buffer[] = [];
      ds.on('data', (d: Buffer) => out.push(d));
      ds.on('end', () => resolve(Buffer.concat(out)));
      for (const c of chunks) ds.write(c);
      ds.end();
    });
    assert.equal(mine.toString('latin1'), theirs.toString('latin1'), `input ${JSON.stringify(input.toString('latin1'))}`);
  }
  // The smuggling shapes, spelled out.
  const stuff = (s: string): string => {
    const d = new DotStuffer();
    return Buffer.concat([d.stuff(Buffer.from(s)), d.end()]).toString('latin1');
  };
  assert.equal(stuff('a\r.\rb'), 'a\r\n..\r\nb\r\n.\r\n');
  assert.equal(stuff('a\n.\nb\r\n'), 'a\r\n..\r\nb\r\n.\r\n');
  assert.equal(stuff('.x'), '..x\r\n.\r\n');
});

/** Each recipient's outcome as the delivery agent reads a SendResult (src/relay/deliver.ts transact). */
function outcomesOf(res: SendResult, rcpts: string[]): Record<string, string> {
  return Object.fromEntries(
    rcpts.map((a) => {
      const reply = res.accepted.get(a);
      const o = reply !== undefined ? classifyReply(a, reply) : classifyError(a, res.failed.get(a)!);
      return [a, o.kind === 'bounced' ? `bounced ${o.statusCode}` : o.kind];
    }),
  );
}

/** One transaction against miniMx scripted by `o`: each recipient's outcome and the bodies the server took. */
async function oneTransaction(o: MiniMx, rcpts: string[]): Promise<{ outcomes: Record<string, string>; bodies: number }> {
  const seen = newSeen();
  const srv = await server((sock) => miniMx(sock, o, seen));
  try {
    const r = await openSession(target(srv.port), settings);
    assert.ok(r.ok, r.ok ? '' : r.err.message);
    const res = await within(sendOnSession(r.session, env(rcpts), body), 5000, 'send');
    closeSession(r.session);
    return { outcomes: outcomesOf(res, rcpts), bodies: seen.bodies.length };
  } finally {
    await srv.close();
  }
}

test('a multi-line reply whose lines carry different codes is a protocol error: nobody delivered or bounced on it', T, async () => {
  // RCPT: the last line refuses, the first accepts. Read as the last line's 550 and classified
  // from the text's first line (250), the recipient was reported delivered and never sent.
  const rcpt = await oneTransaction({ rcptReply: (a) => (a.startsWith('nobody') ? '250-looks fine\r\n550 5.1.1 no such user' : '250 2.1.5 ok') }, ['b@x.test', 'nobody@x.test']);
  assert.deepEqual(rcpt.outcomes, { 'b@x.test': 'deferred', 'nobody@x.test': 'deferred' });
  assert.equal(rcpt.bodies, 0);
  // The end of data: 250 then 451 was "delivered" (the message lost), 550 then 250 "bounced".
  for (const finalReply of ['250-2.0.0 ok\r\n451 4.3.0 try later', '550-5.7.1 no\r\n250 2.0.0 queued']) {
    const data = await oneTransaction({ finalReply }, ['b@x.test']);
    assert.deepEqual(data.outcomes, { 'b@x.test': 'deferred' }, JSON.stringify(finalReply));
  }
});

test('a 2xx to DATA is no go-ahead: the message is not sent, its recipients are deferred, the connection is dropped', T, async () => {
  // DATA answered 250 (not 354): the server is not reading a message, so the body would be read
  // as commands. Taken as a go-ahead before, the body went out and the next reply counted as
  // the message's. Both with PIPELINING (DATA in the envelope batch) and without.
  for (const pipelining of [true, false]) {
    const seen = newSeen();
    const srv = await server((sock) =>
      miniMx(sock, { pipelining, onCommand: (line, s) => (line === 'DATA' ? (s.write('250 2.0.0 ok\r\n'), 'skip') : undefined) }, seen),
    );
    try {
      const r = await openSession(target(srv.port), settings);
      assert.ok(r.ok, r.ok ? '' : r.err.message);
      const res = await within(sendOnSession(r.session, env(['b@x.test']), body), 5000, 'send');
      assert.deepEqual(outcomesOf(res, ['b@x.test']), { 'b@x.test': 'deferred' }, `pipelining ${pipelining}`);
      // Nothing of the message reached the server as commands (or as anything).
      assert.ok(!seen.commands.some((c) => c.startsWith('Subject:') || c === 'hello' || c === '.'), `pipelining ${pipelining}: ${JSON.stringify(seen.commands)}`);
      assert.equal(r.session.conn.destroyed, true, 'the connection is not left for the next message');
      closeSession(r.session);
    } finally {
      await srv.close();
    }
  }
});

test('a reply code followed by a tab reads the same to the reader and to the classification', T, async () => {
  // The reader takes "250<TAB>text" as a reply; the classification found no code in it, so an
  // accepted message was deferred (sent again at each retry) and a 550 recipient never bounced.
  const res = await oneTransaction({ finalReply: '250\t2.0.0 queued', rcptReply: (a) => (a.startsWith('nobody') ? '550\t5.1.1 no such user' : '250\t2.1.5 ok') }, ['b@x.test', 'nobody@x.test']);
  assert.deepEqual(res.outcomes, { 'b@x.test': 'delivered', 'nobody@x.test': 'bounced 5.1.1' });
  assert.equal(res.bodies, 1);
});

test('421 to STARTTLS (opportunistic): the set-up fails with the 421, not a session on a closed connection', T, async () => {
  const srv = await server((sock) => {
    sock.write('220 busy.test ESMTP\r\n');
    onLines(sock, (lines) => {
      for (const line of lines) {
        if (line.startsWith('EHLO')) sock.write('250-busy.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n');
        else if (line === 'STARTTLS') sock.end('421 4.3.2 too busy, try another MX\r\n');
      }
    });
  });
  try {
    const r = await within(openSession(target(srv.port, { tls: 'opportunistic' }), settings), 5000, 'open');
    // A session here would be a dead one: the delivery agent would defer every recipient on it
    // ("Connection closed") instead of trying the next MX host.
    assert.equal(r.ok, false, 'openSession reported a session on a connection the server closed');
    if (r.ok) return;
    assert.match(r.err.response ?? '', /^421 4\.3\.2/);
    assert.equal(classifyError('b@x.test', r.err).kind, 'deferred');
  } finally {
    await srv.close();
  }
});

test('EHLO SIZE that is not a plain number is no limit, never a local bounce', T, async () => {
  // "SIZE -1" was read as a limit of -1 bytes and every message bounced 5.3.4 without being offered.
  const res = await oneTransaction({ ehloExtra: ['SIZE -1'] }, ['b@x.test']);
  assert.deepEqual(res.outcomes, { 'b@x.test': 'delivered' });
  for (const [word, limit] of [['-1', 0], ['0x400', 0], ['1e3', 0], ['12abc', 0], ['1.5', 0], ['0', 0], ['1000', 1000]] as const) {
    assert.equal(parseEhlo(`250-mx.test\n250 SIZE ${word}`).maxSize, limit, `SIZE ${word}`);
  }
});

/**
 * A scripted receiver that answers the envelope (PIPELINING) and the DATA with 354, and calls
 * `afterData` once the message's end has arrived: the place for the misbehaviour under test.
 * With `body`, the socket is handed to it after the 354 (connection number n): it reads the
 * message itself, and answers it, or not.
 */
async function afterDataServer(afterData: (sock: net.Socket) => void, body?: (sock: net.Socket, n: number) => void): Promise<Awaited<ReturnType<typeof server>>> {
  return server((sock, n) => {
    sock.write('220 after.test ESMTP\r\n');
    let inData = false;
    const stop = onLines(sock, (lines) => {
      const out: string[] = [];
      for (const line of lines) {
        if (inData) {
          if (line === '.') afterData(sock);
          continue;
        }
        if (line.startsWith('EHLO')) out.push('250-after.test\r\n250 PIPELINING');
        else if (line === 'DATA') {
          inData = true;
          out.push('354 go ahead');
        } else out.push('250 ok');
      }
      if (out.length) sock.write(`${out.join('\r\n')}\r\n`);
      if (inData && body) {
        stop();
        body(sock, n);
      }
    });
  });
}

test('a reply trickled in (stray CRLFs, or continuation lines that never end) is bounded by its timeout, deferred', T, async () => {
  // Every byte resets the socket's inactivity timer: a server that sent a CRLF, or one more
  // "250-" line, every 50 ms after the end of data held the delivery (and the agent's close,
  // which waits for deliveries in flight) for as long as it liked.
  for (const drip of ['\r\n', '250-still thinking\r\n']) {
    let timer: NodeJS.Timeout | undefined;
    const srv = await afterDataServer((sock) => (timer = setInterval(() => !sock.destroyed && sock.write(drip), 50)));
    try {
      // After the end of data the wait is dataDoneTimeout's (the next test).
      const r = await openSession(target(srv.port), { ...settings, socketTimeoutMs: 500, dataDoneTimeoutMs: 500 });
      assert.ok(r.ok);
      const started = Date.now();
      const res = await within(sendOnSession(r.session, env(['b@x.test']), body), 4000, `send while the server drips ${JSON.stringify(drip)}`);
      assert.deepEqual(outcomesOf(res, ['b@x.test']), { 'b@x.test': 'deferred' });
      assert.equal(res.failed.get('b@x.test')?.timeoutType, 'DATA_DONE_TIMEOUT');
      assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
      assert.equal(res.reusable, false);
    } finally {
      clearInterval(timer);
      await srv.close();
    }
  }
});

test('the reply to the end of data may take dataDoneTimeout (RFC 5321: 10 minutes), longer than socketTimeout; the next reply socketTimeout again', T, async () => {
  // A server that filters the message before it answers the final "." (a content scanner, a
  // slow disk) may be silent for minutes. Given up after socketTimeout, the message was deferred
  // and sent again at the next attempt: a duplicate of one the server had very likely delivered.
  let conn = 0;
  const srv = await afterDataServer((sock) => {
    conn++;
    // First session: the 250 after 800 ms; the next MAIL's reply 800 ms late too (below).
    setTimeout(() => !sock.destroyed && sock.write('250 2.0.0 queued after a slow scan\r\n'), 800);
  });
  try {
    const tight = { ...settings, socketTimeoutMs: 300, dataDoneTimeoutMs: 3000 };
    const r = await openSession(target(srv.port), tight);
    assert.ok(r.ok);
    const res = await within(sendOnSession(r.session, env(['b@x.test']), body), 5000, 'send to a server that answers the end of data after 800 ms');
    assert.deepEqual(outcomesOf(res, ['b@x.test']), { 'b@x.test': 'delivered' }, `${res.failed.get('b@x.test')?.message ?? ''} ${res.failed.get('b@x.test')?.timeoutType ?? ''}`);
    assert.equal(conn, 1);
    // A silent server after the end of data: out of dataDoneTimeout, deferred as such.
    const silent = await afterDataServer(() => undefined);
    try {
      const s = await openSession(target(silent.port), { ...tight, dataDoneTimeoutMs: 600 });
      assert.ok(s.ok);
      const started = Date.now();
      const res2 = await within(sendOnSession(s.session, env(['b@x.test']), body), 5000, 'send to a server silent after the end of data');
      assert.deepEqual(outcomesOf(res2, ['b@x.test']), { 'b@x.test': 'deferred' });
      assert.equal(res2.failed.get('b@x.test')?.timeoutType, 'DATA_DONE_TIMEOUT');
      assert.ok(Date.now() - started >= 500, `gave up after ${Date.now() - started} ms, before dataDoneTimeout`);
    } finally {
      await silent.close();
    }
    // Back on the first session, an envelope reply 800 ms late is past socketTimeout (300 ms).
    const slowMail = await server((sock) =>
      miniMx(sock, { pipelining: false, onCommand: (line, s) => (line.startsWith('MAIL') ? (setTimeout(() => !s.destroyed && s.write('250 ok\r\n'), 800), 'skip') : undefined) }, newSeen()),
    );
    try {
      const m = await openSession(target(slowMail.port), tight);
      assert.ok(m.ok);
      const res3 = await within(sendOnSession(m.session, env(['b@x.test']), body), 5000, 'send to a server slow to answer MAIL');
      assert.deepEqual(outcomesOf(res3, ['b@x.test']), { 'b@x.test': 'deferred' });
      assert.equal(res3.failed.get('b@x.test')?.timeoutType, 'SOCKET_TIMEOUT');
    } finally {
      await slowMail.close();
    }
  } finally {
    await srv.close();
  }
});

test('a fast reply flood (blank lines, or "250-" lines) is cut off by size, not left to run until socketTimeout', T, async () => {
  // Empty lines were skipped and counted nowhere: a server that sent CRLFs as fast as it could
  // after the end of data was read on, every byte of it, until the per-reply deadline ended the
  // wait (socketTimeout: 5 minutes by default). Here the deadline is a minute away and the server
  // stops by itself at 16 MB, so only a bound on the reply's size ends the exchange in time.
  // A reply is cut at 512 lines (blank ones included) or 64 KiB, whichever comes first.
  const FLOOD_MAX = 16 * 1024 * 1024;
  const floods: Array<[string, string, RegExp]> = [
    ['blank lines', '\r\n'.repeat(16 * 1024), /^Server reply too long: more than 512 lines/],
    ['"250-" lines', '250-\r\n'.repeat(4 * 1024), /^Server reply too long: more than 512 lines/],
    ['long "250-" lines', `250-${'x'.repeat(994)}\r\n`.repeat(64), /^Server reply too long: more than 65536 bytes/],
  ];
  for (const [what, chunk, message] of floods) {
    let written = 0;
    let closedAt = -1;
    const srv = await afterDataServer((sock) => {
      sock.on('close', () => (closedAt = written));
      const feed = (): void => {
        while (!sock.destroyed && written < FLOOD_MAX) {
          written += chunk.length;
          if (!sock.write(chunk)) return void sock.once('drain', feed);
        }
      };
      feed();
    });
    try {
      const r = await openSession(target(srv.port), { ...settings, socketTimeoutMs: 60_000 });
      assert.ok(r.ok);
      const res = await within(sendOnSession(r.session, env(['b@x.test']), body), 5000, `send during a flood of ${what}`);
      assert.deepEqual(outcomesOf(res, ['b@x.test']), { 'b@x.test': 'deferred' }, what);
      const err = res.failed.get('b@x.test')!;
      assert.equal(err.code, 'EPROTOCOL', `${what}: ${err.message}`);
      assert.match(err.message, message, what);
      assert.equal(res.reusable, false);
      assert.equal(r.session.conn.destroyed, true);
      await new Promise((res) => setTimeout(res, 50));
      assert.ok(closedAt >= 0 && closedAt < 4 * 1024 * 1024, `${what}: the server wrote ${closedAt < 0 ? written : closedAt} bytes before the client hung up`);
    } finally {
      await srv.close();
    }
  }
});

/** A message of `mb` megabytes in 1000-byte lines, made as it is read. */
function bigBody(mb: number): () => Readable {
  const line = Buffer.from(`${'x'.repeat(998)}\r\n`);
  return () => Readable.from((function* () {
    for (let i = 0; i < mb * 1024 * 1024 / line.length; i++) yield line;
  })());
}

/**
 * Takes `bytes` of the message every 20 ms and nothing more: the TCP window stays all but
 * closed. `readOn()` reads on at full speed; `got` counts what it took.
 */
function readSlowly(sock: net.Socket, bytes: number): { got: number; readOn(): void } {
  const timer = setInterval(() => (reader.got += sock.read(bytes)?.length ?? 0), 20);
  const reader = {
    got: 0,
    readOn: (): void => {
      clearInterval(timer);
      sock.on('data', (d: Buffer) => (reader.got += d.length));
      sock.resume();
    },
  };
  sock.pause();
  sock.once('close', () => clearInterval(timer));
  return reader;
}

/** Reads the message as fast as it comes and accepts it. */
function readAndAccept(sock: net.Socket): void {
  let tail = '';
  sock.on('data', (d: Buffer) => {
    tail = (tail + d.subarray(-5).toString('latin1')).slice(-5);
    if (tail === '\r\n.\r\n') sock.write('250 2.0.0 queued\r\n');
  });
}

test('a server that reads the message slowly is cut off at relay.dataTimeout / minDataRate, deferred 4.4.2, never waited on until socketTimeout', T, async () => {
  // The body was bounded by the inactivity timeout only, and a server taking a few bytes at a
  // time makes progress often enough to keep it from firing: a large message held its delivery
  // (and its pool slot) for as long as the server cared to read. The server here takes 2 KiB
  // every 20 ms (~100 KiB/s, far below the 1 MiB/s asked for); the socket timeout is a minute.
  const tight = { ...settings, socketTimeoutMs: 60_000, dataTimeoutMs: 500, minDataRate: 1024 * 1024 };
  let reader: ReturnType<typeof readSlowly> | undefined;
  let closed = false;
  const srv = await afterDataServer(() => undefined, (sock) => {
    sock.once('close', () => (closed = true));
    reader = readSlowly(sock, 2048);
  });
  try {
    const r = await openSession(target(srv.port), tight);
    assert.ok(r.ok);
    const started = Date.now();
    const res = await within(sendOnSession(r.session, { ...env(['b@x.test']), size: 16 << 20 }, bigBody(16)), 5000, 'send to a server reading 100 KiB/s');
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    const err = res.failed.get('b@x.test');
    assert.equal(err?.timeoutType, 'DATA_TIMEOUT', err?.message);
    const o = classifyError('b@x.test', err!);
    assert.equal(o.kind, 'deferred');
    assert.match(o.kind === 'deferred' ? o.error : '', /^4\.4\.2 /);
    assert.equal(o.kind === 'deferred' && o.statusCode, '4.4.2');
    assert.equal(res.reusable, false);
    assert.equal(r.session.conn.destroyed, true);
    // Reset, not closed: reading on at full speed, the server gets what had reached it and no
    // more. A close would have left the kernel to send it the rest of its send buffer (megabytes
    // on loopback): all that was written but what Node itself still held (32 KiB at most).
    const written = Number(/ (\d+) bytes written /.exec(err!.message)?.[1]);
    reader!.readOn();
    await within(new Promise<void>((ok) => { const t = setInterval(() => closed && (clearInterval(t), ok()), 10); }), 5000, 'the server to see the connection end');
    assert.ok(reader!.got < written / 2, `the server got ${reader!.got} of the ${written} bytes written`);
  } finally {
    await srv.close();
  }
  // The same rate does not touch a server that reads at loopback speed (the stall allowance is
  // wider here only so that a loaded test machine pausing this process cannot fail it).
  const fast = await afterDataServer(() => undefined, readAndAccept);
  try {
    const r = await openSession(target(fast.port), { ...tight, dataTimeoutMs: 5000 });
    assert.ok(r.ok);
    const res = await within(sendOnSession(r.session, { ...env(['b@x.test']), size: 16 << 20 }, bigBody(16)), 10_000, 'send to a server reading at full speed');
    assert.deepEqual(outcomesOf(res, ['b@x.test']), { 'b@x.test': 'delivered' }, res.failed.get('b@x.test')?.message);
    closeSession(r.session);
  } finally {
    await fast.close();
  }
});

test('a slow-reading server: the delivery agent logs the 4.4.2 deferral and frees the slot for the next message', T, async () => {
  // One connection allowed to the next hop: a slot held by the slow transfer would keep the
  // second message waiting until the server finished reading.
  const srv = await afterDataServer(() => undefined, (sock, n) => (n === 0 ? readSlowly(sock, 2048) : readAndAccept(sock)));
  const log = captureLogger();
  const cfg = relayConfig(undefined, 25, {
    relayhost: { host: '127.0.0.1', port: srv.port, tls: 'none' },
    concurrencyPerDestination: 1,
    socketTimeoutMs: 60_000,
    dataTimeoutMs: 500,
    minDataRate: 1024 * 1024,
  });
  const agent = createDeliveryAgent(cfg, { hostname: 'gw.isp.test', logger: log.logger });
  try {
    const slow = agent.deliver(job(['big@dest.test'], { open: bigBody(16), size: 16 << 20 }));
    await new Promise((res) => setTimeout(res, 50));
    const next = agent.deliver(job(['small@dest.test']));
    const [big] = await within(slow, 5000, 'the slow delivery');
    assert.equal(big.kind, 'deferred');
    assert.match(big.kind === 'deferred' ? big.error : '', /^4\.4\.2 .*\(ETIMEDOUT\)$/);
    assert.equal(log.lines.find((l) => l.evt === 'transient_failure' && l.rcpt === 'big@dest.test')?.status, '4.4.2');
    const [small] = await within(next, 5000, 'the next message, waiting for the only slot');
    assert.equal(small.kind, 'delivered', JSON.stringify(small));
    assert.equal(srv.conns(), 2);
    const line = log.lines.find((l) => l.evt === 'transient_failure' && l.rcpt === 'big@dest.test');
    assert.match(String(line?.response), /^4\.4\.2 /);
  } finally {
    await within(agent.close(), 5000, 'agent close');
    await srv.close();
  }
});

test('the body deadline: a stall ends it after dataTimeout, a slow pace sooner or later, and no pace outlasts dataTimeout + size / minDataRate', () => {
  const T = 180_000;
  const R = 16 * 1024;
  /** Writes `bytes` every `every` ms until the budget is spent; when it was (or `until`). */
  const run = (d: DataDeadline, bytes: number, every: number, until = 10 * T): number => {
    let t = 0;
    for (; t < until && d.left(t) > 0; t += every) d.wrote(bytes, t);
    return t;
  };
  // A fast start saves nothing up: 100 MB in the first second, then silence: out at T after it.
  const fast = new DataDeadline(T, R, 0);
  for (let t = 0; t <= 1000; t += 10) fast.wrote(1 << 20, t);
  assert.equal(fast.left(1000 + T), 0);
  // Half the rate: 500 ms earned a second, 1000 spent: out at 2T. A few bytes every few seconds
  // (the hostile pace): out at about T. The rate itself, or more: never.
  assert.ok(Math.abs(run(new DataDeadline(T, R, 0), R / 2, 1000) - 2 * T) <= 1000);
  assert.ok(Math.abs(run(new DataDeadline(T, R, 0), 10, 3000) - T) <= 3000);
  assert.ok(run(new DataDeadline(T, R, 0), R, 1000) >= 10 * T);
  // minDataRate 0: progress only. A byte every T - 1 ms goes on; a gap of T ends it.
  assert.ok(run(new DataDeadline(T, 0, 0), 1, T - 1) >= 10 * T);
  const stall = new DataDeadline(T, 0, 0);
  stall.wrote(1, 1000);
  assert.equal(stall.left(1000 + T), 0);
  // Spent stays spent: a write after the deadline does not revive it.
  const spent = new DataDeadline(T, R, 0);
  spent.wrote(1 << 30, T + 1);
  assert.ok(spent.left(T + 1) < 0);
  // Any pace at all: while time is left at t, t is within T + written / R (pseudo-random schedules).
  let seed = 7;
  const rand = (n: number): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  for (let round = 0; round < 300; round++) {
    const d = new DataDeadline(T, R, 0);
    let t = 0;
    let written = 0;
    while (d.left(t) > 0) {
      assert.ok(t <= T + (written * 1000) / R, `round ${round}: alive at ${t} ms after ${written} bytes`);
      const bytes = rand(4) === 0 ? rand(256 * 1024) : rand(64);
      d.wrote(bytes, t);
      written += bytes;
      t += rand(4) === 0 ? rand(T) : rand(2000);
    }
  }
});
