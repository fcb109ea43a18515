/**
 * The SMTP/MIME fuzzer shared by the bounded CI run (test/fuzz/smtp.test.ts)
 * and the long run (bench/fuzz.ts, `npm run fuzz:long`).
 *
 * A session is generated from a seed, so any failure is replayed with the
 * same seed and session number. Kinds of session:
 *   grammar   a plausible SMTP conversation (EHLO, MAIL, RCPT, DATA, RSET,
 *             AUTH, odd ESMTP parameters, tricky addresses) with a generated
 *             MIME message (nested multiparts, folded and encoded headers,
 *             base64/qp bodies, dot lines, 8-bit, bare CR/LF, NULs, long lines)
 *   mutated   a grammar session whose bytes are then mutated (flips, inserted
 *             CR/LF/./NUL/0xff, deletions, duplicated or truncated spans)
 *   random    random bytes and random printable lines
 * Every session is written in random slices (1 byte to a few KB, sometimes
 * with pauses), either pipelined or waiting for a reply between commands,
 * and ends one of four ways: QUIT, a half-close, an abrupt reset, or silence
 * (the gateway must then close it by its idle or DATA deadline).
 *
 * Oracles, checked by the callers: the gateway process never dies; every
 * session is over (closed by either side) within a deadline counted from
 * the client's last byte; open file
 * descriptors return to their baseline; no file is left in spool/tmp/ and
 * every queued file is whole, with CRLF line endings only (no bare CR or LF
 * reaches the queue: SMTP smuggling); a normal message is still accepted.
 */
import { existsSync, promises as fsp, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { Spool } from '../../src/spool/store';
import { authPlain } from '../helpers/smtp-client';
import { prepareGateway } from '../helpers/gateway';
import { freePort, spawnGateway, type GatewayProcess } from '../helpers/process';

// ---------------------------------------------------------------- randomness

/** mulberry32: small, fast, seedable. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.next() * 256);
    return b;
  }
  printable(n: number): string {
    let s = '';
    for (let i = 0; i < n; i++) s += String.fromCharCode(32 + Math.floor(this.next() * 95));
    return s;
  }
}

// ---------------------------------------------------------------- generators

const DOMAINS = ['dest.test', 'isp.test', 'gw.isp.test', 'home.test', 'outside.test', '[127.0.0.1]', '[IPv6:::1]', 'xn--bcher-kva.test', 'ü.test', 'a.b.c.d.e.test', ''];
const LOCALS = ['a', 'victim', 'alice', 'postmaster', 'user%outside.test', 'x!y', '"quoted@local"', '"sp ace"', 'ü', 'a.b', '.dot', 'dot.', 'a+tag', ''];

function address(r: Rng): string {
  const roll = r.next();
  if (roll < 0.6) return `${r.pick(LOCALS.slice(0, 4))}@${r.pick(DOMAINS.slice(0, 4))}`;
  if (roll < 0.7) return `@${r.pick(DOMAINS)}:${r.pick(LOCALS)}@${r.pick(DOMAINS)}`;
  if (roll < 0.8) return r.printable(r.int(0, 80));
  if (roll < 0.85) return `${'a'.repeat(r.int(60, 400))}@${r.pick(DOMAINS)}`;
  return `${r.pick(LOCALS)}@${r.pick(DOMAINS)}${r.chance(0.2) ? '.' : ''}`;
}

function esmtpParams(r: Rng): string {
  const ps = ['SIZE=1000', `SIZE=${r.int(0, 2 ** 31)}`, 'SIZE=-1', 'SIZE=abc', 'BODY=8BITMIME', 'BODY=BINARYMIME', 'SMTPUTF8', 'RET=HDRS', 'ENVID=x', 'NOTIFY=NEVER', 'AUTH=<>', 'X=Y', '=', 'SIZE'];
  let s = '';
  for (let i = r.int(0, 3); i > 0; i--) s += ` ${r.pick(ps)}`;
  return s;
}

function headerValue(r: Rng): string {
  const kinds = [
    () => r.printable(r.int(0, 60)),
    () => `=?UTF-8?B?${Buffer.from(r.printable(r.int(1, 30))).toString('base64')}?=`,
    () => `=?ISO-8859-1?Q?${r.printable(r.int(1, 20)).replace(/[ ?=]/g, '_')}?=`,
    () => `=?broken?X?${r.printable(10)}`,
    () => Array.from({ length: r.int(2, 6) }, () => r.printable(r.int(10, 70))).join('\r\n\t'),
    () => 'x'.repeat(r.int(900, 5000)),
    () => 'ünïcödé 日本語',
  ];
  return r.pick(kinds)();
}

/** A MIME message (data only, CRLF endings before mutation, no final dot). */
export function mimeMessage(r: Rng, depth = 0): string {
  const headers: string[] = [];
  if (depth === 0) {
    headers.push(`From: ${r.chance(0.8) ? `<${address(r)}>` : headerValue(r)}`);
    headers.push(`To: <${address(r)}>`);
    headers.push(`Subject: ${headerValue(r)}`);
    if (r.chance(0.5)) headers.push(`Message-ID: <${r.int(0, 1e9)}@fuzz.test>`);
    if (r.chance(0.3)) headers.push(`Received: from x by y; ${r.printable(20)}`);
    for (let i = r.int(0, 6); i > 0; i--) headers.push(`X-${r.printable(r.int(1, 10)).replace(/[: ]/g, '-')}: ${headerValue(r)}`);
    if (r.chance(0.05)) headers.push(r.printable(r.int(1, 40)).replace(/:/g, '')); // a header line without a colon
  }
  const kind = depth < 3 ? r.int(0, 5) : r.int(0, 2);
  const boundary = `b${r.int(0, 1e6)}${r.chance(0.1) ? ' "odd' : ''}`;
  let body: string;
  switch (kind) {
    case 0:
      headers.push('Content-Type: text/plain; charset=utf-8');
      body = Array.from({ length: r.int(0, 30) }, () => (r.chance(0.1) ? `.${r.printable(r.int(0, 20))}` : r.printable(r.int(0, 100)))).join('\r\n');
      break;
    case 1:
      headers.push('Content-Type: application/octet-stream', 'Content-Transfer-Encoding: base64');
      body = (r.bytes(r.int(0, 6000)).toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
      if (r.chance(0.2)) body += '!!not base64!!';
      break;
    case 2:
      headers.push('Content-Type: text/plain', 'Content-Transfer-Encoding: quoted-printable');
      body = Array.from({ length: r.int(1, 20) }, () => `${r.printable(r.int(0, 70))}=${r.chance(0.5) ? '\r\n' : 'ZZ'}`).join('');
      break;
    case 3:
    case 4: {
      headers.push(`Content-Type: multipart/${r.pick(['mixed', 'alternative', 'related', 'digest'])}; boundary="${boundary}"`);
      const parts = Array.from({ length: r.int(0, 4) }, () => mimeMessage(r, depth + 1));
      body = parts.map((p) => `--${boundary}\r\n${p}`).join('\r\n') + (r.chance(0.8) ? `\r\n--${boundary}--` : '');
      break;
    }
    default:
      headers.push('Content-Type: message/rfc822');
      body = mimeMessage(r, depth + 1);
  }
  if (r.chance(0.03)) body += `\r\n${'L'.repeat(r.int(1000, 20000))}`; // an over-long line
  if (r.chance(0.01)) body += `\r\n${'big line of text '.repeat(70_000)}`; // ~1.2 MB: the spill path
  return `${headers.join('\r\n')}\r\n\r\n${body}`;
}

/** Inserts line-ending and dot trouble into DATA text (before the terminator is added). */
function dataTrouble(r: Rng, s: string): string {
  const bad = ['\n', '\r', '\n.\n', '\r.\r', '\n.\r\n', '\r\n.\n', '\r\n.\r', '\x00', '\r\n..\r\n', '\r\n.', '\r\n\r\n.\r\n'];
  let out = s;
  for (let i = r.int(1, 4); i > 0; i--) {
    const at = r.int(0, out.length);
    out = out.slice(0, at) + r.pick(bad) + out.slice(at);
  }
  return out;
}

export type Listener = 'intercept' | 'submission' | 'submissions';

export interface Session {
  n: number;
  kind: 'grammar' | 'mutated' | 'random';
  listener: Listener;
  ip: string;
  /** Steps: bytes to write; `reply` waits for a reply (or a short pause) before the next. */
  steps: Array<{ bytes: Buffer; reply: boolean }>;
  ending: 'quit' | 'half-close' | 'reset' | 'silence';
  /** Maximum slice size when writing; pauses between slices when set. */
  slice: number;
  pauseMs: number;
}

const IPS_INSIDE = ['127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7', '127.0.0.8', '127.0.0.9'];
const IPS_OUTSIDE = ['127.0.0.20', '127.0.1.1'];

function grammarSteps(r: Rng, listener: Listener): Array<{ bytes: Buffer; reply: boolean }> {
  const lines: string[] = [];
  const add = (l: string) => lines.push(l);
  const helo = r.pick(['EHLO', 'HELO', 'EHLO', 'LHLO', 'ehlo', 'EHLO ']);
  add(`${helo} ${r.pick(['fuzz.test', '', '[127.0.0.1]', 'gw.isp.test', r.printable(r.int(0, 300))])}`);
  if (listener === 'submissions' || (listener === 'submission' && r.chance(0.3))) {
    const good = r.chance(0.6);
    const roll = r.int(0, 3);
    if (roll === 0) add(`AUTH PLAIN ${good ? authPlain('alice@isp.test', 'alice-secret-1') : r.pick([Buffer.from(r.bytes(r.int(0, 60))).toString('base64'), '=', '*', r.printable(20)])}`);
    else if (roll === 1) {
      add('AUTH LOGIN');
      add(good ? Buffer.from('alice@isp.test').toString('base64') : r.printable(r.int(0, 40)));
      add(good ? Buffer.from('alice-secret-1').toString('base64') : '*');
    } else if (roll === 2) {
      add('AUTH PLAIN');
      add(good ? authPlain('alice@isp.test', 'alice-secret-1') : r.printable(30));
    } else add(`AUTH ${r.pick(['CRAM-MD5', 'XOAUTH2', 'GSSAPI', '', 'PLAIN x y z'])}`);
  }
  for (let t = r.int(0, 3); t >= 0; t--) {
    if (r.chance(0.1)) add(r.pick(['RSET', 'NOOP', 'VRFY postmaster', 'EXPN list', 'HELP', 'STARTTLS', 'XCLIENT ADDR=1.2.3.4', 'BDAT 10 LAST', 'WIZ x', 'SHELL', 'KILL', 'TURN', 'ETRN x', 'GET / HTTP/1.1']));
    const from = listener === 'submissions' && r.chance(0.7) ? 'alice@isp.test' : r.chance(0.5) ? 'me@home.test' : address(r);
    add(`MAIL FROM:${r.chance(0.9) ? `<${from}>` : from}${esmtpParams(r)}`);
    for (let i = r.int(0, 4); i > 0; i--) add(`RCPT TO:${r.chance(0.9) ? `<${address(r)}>` : address(r)}${r.chance(0.1) ? esmtpParams(r) : ''}`);
    if (r.chance(0.8)) {
      add('DATA');
      let msg = mimeMessage(r);
      if (r.chance(0.3)) msg = dataTrouble(r, msg);
      // Dot-stuff like a client would (most of the time).
      if (r.chance(0.9)) msg = msg.replace(/(^|\r\n)\./g, '$1..');
      lines.push(`${msg}${r.chance(0.95) ? '\r\n.' : ''}`);
    }
  }
  return lines.map((l) => ({ bytes: Buffer.from(`${l}\r\n`, 'utf8'), reply: true }));
}

function mutate(r: Rng, buf: Buffer): Buffer {
  const b = [...buf];
  for (let i = r.int(1, 8); i > 0; i--) {
    if (b.length === 0) break;
    const at = r.int(0, b.length - 1);
    switch (r.int(0, 5)) {
      case 0:
        b[at] = b[at]! ^ (1 << r.int(0, 7));
        break;
      case 1:
        b.splice(at, 0, r.pick([13, 10, 46, 0, 255, 32, 58, 60, 62, 64]));
        break;
      case 2:
        b.splice(at, r.int(1, 16));
        break;
      case 3:
        b.splice(at, 0, ...b.slice(at, at + r.int(1, 64)));
        break;
      case 4:
        b.splice(at, 0, ...[...Buffer.from(r.pick(['\r\n.\r\n', '\n.\n', 'MAIL FROM:<x@evil.test>\r\n', 'DATA\r\n', '\r\n', '..']))]);
        break;
      default:
        b.length = at; // truncate
    }
  }
  return Buffer.from(b);
}

export function generateSession(seed: number, n: number): Session {
  const r = new Rng((seed ^ Math.imul(n + 1, 0x9e3779b1)) >>> 0);
  const listener: Listener = r.chance(0.7) ? 'intercept' : r.chance(0.5) ? 'submissions' : 'submission';
  const ip = r.chance(0.85) ? r.pick(IPS_INSIDE) : r.pick(IPS_OUTSIDE);
  const roll = r.next();
  let kind: Session['kind'];
  let steps: Session['steps'];
  if (roll < 0.5) {
    kind = 'grammar';
    steps = grammarSteps(r, listener);
  } else if (roll < 0.85) {
    kind = 'mutated';
    steps = grammarSteps(r, listener).map((s) => (r.chance(0.35) ? { bytes: mutate(r, s.bytes), reply: s.reply } : s));
  } else {
    kind = 'random';
    steps = Array.from({ length: r.int(1, 10) }, () => ({
      bytes: r.chance(0.5) ? r.bytes(r.int(1, 2000)) : Buffer.from(`${r.printable(r.int(0, 200))}${r.pick(['\r\n', '\n', '\r', ''])}`, 'latin1'),
      reply: r.chance(0.5),
    }));
  }
  const pipelined = r.chance(0.4);
  if (pipelined) for (const s of steps) s.reply = false;
  const e = r.next();
  const ending: Session['ending'] = e < 0.55 ? 'quit' : e < 0.8 ? 'half-close' : e < 0.96 ? 'reset' : 'silence';
  // Tiny slices (down to one byte per write) for small sessions only: a megabyte a byte at a time measures syscalls, not the gateway.
  const size = steps.reduce((a, st) => a + st.bytes.length, 0);
  const slice = size > 16 * 1024 ? r.pick([512, 1024, 8192, 65536]) : r.pick([1, 7, 64, 1024, 8192]);
  // Pauses between slices, for a few sessions, and never more than about 2 s of them in all.
  const pauseMs = r.chance(0.05) ? Math.min(r.int(1, 30), Math.floor(2000 / Math.ceil(size / slice))) : 0;
  return { n, kind, listener, ip, steps, ending, slice, pauseMs };
}

// ---------------------------------------------------------------- target

export interface FuzzTarget {
  gw: GatewayProcess;
  pid: number;
  dir: string;
  ports: Record<Listener, number>;
  adminPort: number;
  /** How long after the client's last byte the gateway must have ended the session: its idle and DATA deadlines, plus slack. */
  deadlineMs: number;
  stop(): Promise<void>;
}

/** A gateway process with short deadlines, all three listener kinds, and mail that stays queued. */
export async function startFuzzTarget(): Promise<FuzzTarget> {
  const ports = { intercept: await freePort(), submission: await freePort(), submissions: await freePort() };
  const adminPort = await freePort();
  const dnsPort = await freePort('127.0.0.1'); // nothing answers: deliveries defer at once
  const p = await prepareGateway({
    policyFiles: {
      // No volume limits, no AUTH-failure delays or lockouts: the fuzzer tests what input
      // does, not the brute-force policy (test/security/brute-force.test.ts). With delays on,
      // AUTH from one address is serialised behind them and sessions wait for tens of seconds.
      'quotas.yaml': [
        'plans:\n  open: {}\ndefaultPlan: open\nclassPlans:\n  residential-dynamic: open\ndefaultClassPlan: open',
        'authFailures:\n  perIp: { delayAfter: 0, lockoutAfter: 0 }\n  perAccount: { delayAfter: 0, lockoutAfter: 0 }\n',
      ].join('\n'),
    },
    config: {
      log: { level: process.env.FUZZ_LOG_LEVEL ?? 'error' },
      listeners: [
        { name: 'intercept', role: 'intercept', address: '127.0.0.1', port: ports.intercept, security: 'starttls', greetDelay: '0ms' },
        { name: 'submission', role: 'submission', address: '127.0.0.1', port: ports.submission, security: 'starttls' },
        { name: 'submissions', role: 'submission', address: '127.0.0.1', port: ports.submissions, security: 'implicit' },
      ],
      admin: { address: '127.0.0.1', port: adminPort, token: 'fuzz' },
      limits: { idleTimeout: '2s', dataTimeout: '4s', maxConnectionsPerIp: 500, maxMessageSize: '2MB' },
      relay: { dns: { servers: [`127.0.0.1:${dnsPort}`], timeout: '200ms', tries: 1 }, backoff: ['1h'] },
    },
  });
  const gw = await spawnGateway(p.configFile, adminPort);
  return {
    gw,
    pid: gw.child.pid!,
    dir: p.dir,
    ports,
    adminPort,
    deadlineMs: 2000 + 4000 + 4000,
    async stop() {
      await gw.kill('SIGKILL');
      await fsp.rm(p.dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------- runner

export interface SessionResult {
  n: number;
  kind: Session['kind'];
  ending: Session['ending'];
  ms: number;
  hung: boolean;
  codes: number[];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Plays one session; resolves when the connection is over or at the deadline (hung). */
export function playSession(target: FuzzTarget, s: Session): Promise<SessionResult> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const codes: number[] = [];
    let buf = '';
    let replies = 0;
    let closed = false;
    let finished = false;
    const opts = { host: '127.0.0.1', port: target.ports[s.listener], localAddress: s.ip };
    const sock: net.Socket = s.listener === 'submissions' ? tls.connect({ ...opts, rejectUnauthorized: false }) : net.connect(opts);
    const finish = (hung: boolean) => {
      if (finished) return;
      finished = true;
      clearTimeout(deadline);
      sock.destroy();
      resolve({ n: s.n, kind: s.kind, ending: s.ending, ms: Date.now() - t0, hung, codes });
    };
    // The deadline runs from the client's last byte: how long the gateway takes to end it.
    let deadline = setTimeout(() => finish(true), target.deadlineMs);
    const rearm = () => {
      if (finished) return;
      clearTimeout(deadline);
      deadline = setTimeout(() => finish(true), target.deadlineMs);
    };
    sock.on('error', () => undefined);
    sock.on('close', () => {
      closed = true;
      finish(false);
    });
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      let nl: number;
      while ((nl = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        if (/^\d{3} /.test(line)) {
          replies++;
          codes.push(Number(line.slice(0, 3)));
        }
      }
    });
    const waitReply = async (have: number, ms: number) => {
      const by = Date.now() + ms;
      while (replies <= have && !closed && Date.now() < by) await sleep(5);
    };
    const drained = () =>
      new Promise<void>((r) => {
        const done = () => {
          sock.removeListener('drain', done);
          sock.removeListener('close', done);
          r();
        };
        sock.once('drain', done);
        sock.once('close', done);
      });
    const write = async (b: Buffer) => {
      for (let i = 0; i < b.length && !closed; i += s.slice) {
        if (!sock.write(b.subarray(i, i + s.slice))) await drained();
        rearm();
        if (s.pauseMs) await sleep(s.pauseMs);
      }
    };
    const run = async () => {
      await new Promise<void>((r) => {
        sock.once(s.listener === 'submissions' ? 'secureConnect' : 'connect', () => r());
        sock.once('close', () => r());
      });
      await waitReply(0, 2000); // the greeting
      for (const step of s.steps) {
        if (closed) return;
        const have = replies;
        await write(step.bytes);
        if (step.reply) await waitReply(have, 150);
      }
      if (closed) return;
      switch (s.ending) {
        case 'quit':
          await write(Buffer.from('\r\n.\r\nQUIT\r\n'));
          break;
        case 'half-close':
          sock.end();
          break;
        case 'reset':
          finish(false);
          break;
        case 'silence':
          break; // the gateway's idle or DATA deadline must end it
      }
    };
    run().catch(() => finish(false));
  });
}

export interface FuzzStats {
  sessions: number;
  hung: SessionResult[];
  maxMs: number;
  byKind: Record<string, number>;
  codes: Record<string, number>;
}

export async function runFuzz(target: FuzzTarget, opts: { seed: number; sessions: number; concurrency: number; from?: number; onProgress?: (done: number) => void }): Promise<FuzzStats> {
  const stats: FuzzStats = { sessions: 0, hung: [], maxMs: 0, byKind: {}, codes: {} };
  let next = opts.from ?? 0;
  const end = next + opts.sessions;
  const worker = async () => {
    while (next < end) {
      const s = generateSession(opts.seed, next++);
      const r = await playSession(target, s);
      stats.sessions++;
      stats.maxMs = Math.max(stats.maxMs, r.ms);
      stats.byKind[`${s.kind}/${s.ending}`] = (stats.byKind[`${s.kind}/${s.ending}`] ?? 0) + 1;
      for (const c of r.codes) stats.codes[`${Math.floor(c / 100)}xx`] = (stats.codes[`${Math.floor(c / 100)}xx`] ?? 0) + 1;
      if (r.hung) stats.hung.push(r);
      if (stats.sessions % 250 === 0) opts.onProgress?.(stats.sessions);
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  return stats;
}

// ---------------------------------------------------------------- oracles

export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Waits for the gateway's descriptors to come back to `baseline` (+slack); returns the last count. */
export async function settleFds(pid: number, baseline: number, slack = 3, ms = 8000): Promise<number> {
  const by = Date.now() + ms;
  let n = fdCount(pid);
  while (n > baseline + slack && Date.now() < by) {
    await sleep(100);
    n = fdCount(pid);
  }
  return n;
}

/**
 * The spool after a fuzz run: tmp/ empty; every queued message whole (the
 * envelope line parses, all its bytes follow) and free of bare CR/LF.
 */
export async function checkSpool(dir: string): Promise<{ queued: number; problems: string[] }> {
  const spoolDir = path.join(dir, 'spool');
  const spool = new Spool(spoolDir, { fsync: false });
  const problems: string[] = [];
  const by = Date.now() + 5000;
  while ((await fsp.readdir(path.join(spoolDir, 'tmp'))).length > 0 && Date.now() < by) await sleep(100);
  for (const f of await fsp.readdir(path.join(spoolDir, 'tmp'))) problems.push(`tmp/${f} left behind`);
  let queued = 0;
  for (const state of ['incoming', 'active', 'deferred', 'hold'] as const) {
    for (const id of await spool.list(state)) {
      queued++;
      try {
        const m = await spool.read(id, state);
        const data = (await fsp.readFile(spool.pathOf(state, id))).subarray(m.dataOffset);
        if (data.length < m.envelope.size) problems.push(`${state}/${id}: ${data.length} bytes for a ${m.envelope.size}-byte message`);
        for (let i = 0; i < data.length; i++) {
          const c = data[i];
          if ((c === 10 && data[i - 1] !== 13) || (c === 13 && data[i + 1] !== 10)) {
            problems.push(`${state}/${id}: bare ${c === 10 ? 'LF' : 'CR'} at byte ${i}`);
            break;
          }
        }
      } catch (err) {
        problems.push(`${state}/${id}: ${(err as Error).message}`);
      }
    }
  }
  if (existsSync(path.join(spoolDir, 'corrupt'))) for (const f of await fsp.readdir(path.join(spoolDir, 'corrupt'))) problems.push(`corrupt/${f}`);
  return { queued, problems };
}
