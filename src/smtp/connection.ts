/**
 * One inbound SMTP connection: the command loop of RFC 5321 with PIPELINING
 * (2920), SIZE (1870), 8BITMIME (6152), SMTPUTF8 (6531), ENHANCEDSTATUSCODES
 * (2034/3463), STARTTLS (3207) and AUTH PLAIN/LOGIN (4954). Every reply
 * comes from src/replies.ts; what the session decides (connect, AUTH, MAIL,
 * RCPT, DATA, QUIT, close) is asked of its hooks (src/smtp/session.ts).
 *
 * What a hostile client meets here:
 * - commands are answered strictly one at a time and in order, however many
 *   arrive in one write; a client that does not read its replies stops being
 *   read (the socket is paused once 64 KB wait, or the replies do not drain);
 * - a line is at most MAX_LINE bytes: a longer one is answered and the
 *   connection closed, never buffered;
 * - a complete line before the greeting (early talker), an HTTP request,
 *   ten unknown commands, or ten commands without AUTH on a listener that
 *   requires it (an AUTH refused before the password check is one): 421 and close;
 * - STARTTLS drops whatever was pipelined after it in plaintext (the
 *   CVE-2011-0411 injection) and forgets HELO, AUTH and the transaction;
 * - AUTH only under TLS (538 otherwise), once per connection;
 * - DATA ends only at <CRLF>.<CRLF> (src/smtp/data-reader.ts);
 * - each command line has a deadline (the server's `sweep`, like Postfix's
 *   smtpd_per_record_deadline): trickling bytes does not extend it; time the
 *   server spends (a hook, DATA being judged) never counts.
 */
import type net from 'node:net';
import tls, { type SecureContext } from 'node:tls';
import { quickAck } from '../net/quick-ack';
import type { ListenerSecurity } from '../config/listener';
import { formatReply, SmtpReplyError, type ReplyName } from '../replies';
import { parseAddressCommand, type SmtpAddress } from './address-command';
import { DataReader } from './data-reader';
import { MessageBody } from './message-body';

export type { SmtpAddress } from './address-command';

export interface SmtpEnvelope {
  mailFrom: SmtpAddress | undefined;
  rcptTo: SmtpAddress[];
  smtpUtf8: boolean;
}

export interface SmtpSession {
  readonly id: string;
  readonly remoteAddress: string;
  readonly remotePort: number;
  secure: boolean;
  tlsOptions?: { name: string; version: string };
  /** The HELO/EHLO argument, lower-cased; '' before one. */
  helo: string;
  /** The authenticated account, once AUTH succeeded. */
  user?: string;
  envelope: SmtpEnvelope;
}

export interface SmtpAuth {
  method: 'PLAIN' | 'LOGIN';
  username: string;
  password: string;
  /** PLAIN's authorization identity, when the client gave one (RFC 4616 §2). */
  authzid?: string;
}

/** What the session decides. A returned SmtpReplyError is the reply; nothing (or a value) goes on. */
export interface ConnectionHooks {
  connect(session: SmtpSession): Promise<SmtpReplyError | undefined>;
  /**
   * A socket accepted on an implicit-TLS listener, before its handshake: the address's share
   * is taken now, under the session id it will have (connect then uses it). false: over the
   * address's limit, the server closes the socket. `abandon`: it closed before its session.
   */
  admit?(sessionId: string, address: string): Promise<boolean>;
  abandon?(sessionId: string): void;
  auth(auth: SmtpAuth, session: SmtpSession): Promise<SmtpReplyError | { user: string }>;
  mailFrom(address: SmtpAddress, session: SmtpSession): Promise<SmtpReplyError | undefined>;
  rcptTo(address: SmtpAddress, session: SmtpSession): Promise<SmtpReplyError | undefined>;
  /** The reply text after 250 (enhanced code first), or the refusal. */
  data(body: MessageBody, session: SmtpSession): Promise<SmtpReplyError | string>;
  /** Before the 221: the connection slot goes back before the client can reconnect. */
  quit(session: SmtpSession): Promise<void>;
  close(session: SmtpSession): void;
}

export interface ConnectionOptions {
  hostname: string;
  security: ListenerSecurity;
  authRequired: boolean;
  maxMessageSize: number;
  greetDelayMs: number;
  secureContext(): SecureContext;
}

const LF = 10;
const CR = 13;
const MAX_LINE = 16 * 1024;
const PAUSE_AT = 64 * 1024;
const MAX_UNKNOWN = 10;
/**
 * NOOP, RSET, VRFY and HELP cost a client nothing and do nothing: a connection kept alive
 * with them holds a connection slot (and the address's) for ever, the per-line deadline
 * never firing. As Postfix's smtpd_junk_command_limit (also 100): past this many since the
 * last accepted message, each one counts as an error (MAX_UNKNOWN of them: 421, close).
 */
const MAX_JUNK = 100;
const MAX_UNAUTHENTICATED = 10;
const MAX_HELO = 300;
const CONTROL = /[\x00-\x1f\x7f]/;
const CONTROL_G = /[\x00-\x1f\x7f]/g;
const NON_ASCII = /[^\x00-\x7f]/;
const HTTP_REQUEST = /^(OPTIONS|GET|HEAD|POST|PUT|DELETE|TRACE|CONNECT) \S* HTTP\/\d\.\d$/i;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const BACKLOG = 1;
const BODY_FULL = 2;

interface DataPhase {
  reader: DataReader;
  body: MessageBody;
  /** Still before the end of data: input is message content. */
  reading: boolean;
  /** The session's answer, when it came before the end of data. */
  result?: SmtpReplyError | string;
}

type AuthStep = { kind: 'plain' } | { kind: 'login-user' } | { kind: 'login-password'; username: string };

export class SmtpConnection {
  readonly session: SmtpSession;
  /** The socket SMTP is spoken on: the accepted one, or the TLS socket over it. */
  private socket: net.Socket;
  private pending: Buffer | undefined;
  private ready = false;
  private busy = false;
  private closing = false;
  private closed = false;
  private upgrading = false;
  /** Why reading is paused: BACKLOG (commands wait unprocessed) and/or BODY_FULL (the message reader lags). */
  private paused = 0;
  private waitingForDrain = false;
  private driving = false;
  private authStep: AuthStep | undefined;
  private unknownCommands = 0;
  private junkCommands = 0;
  private unauthenticatedCommands = 0;
  private data: DataPhase | undefined;
  /** Bumped whenever the client's turn starts anew (the sweep's clock restarts). */
  private turns = 0;
  private sweptTurns = -1;
  private waitingSince = 0;
  /** The connect hook, while it runs: the close hook waits for it. */
  private connecting: Promise<void> | undefined;

  constructor(
    /** The accepted socket (TLS already, on an implicit-TLS listener); STARTTLS wraps it. */
    private readonly raw: net.Socket,
    id: string,
    remote: { address: string; port: number },
    secure: boolean,
    private readonly opts: ConnectionOptions,
    private readonly hooks: ConnectionHooks,
    private readonly onGone: (c: SmtpConnection) => void,
  ) {
    this.socket = raw;
    this.session = {
      id,
      remoteAddress: remote.address,
      remotePort: remote.port,
      secure,
      helo: '',
      envelope: { mailFrom: undefined, rcptTo: [], smtpUtf8: false },
    };
    if (secure) this.session.tlsOptions = cipherOf(raw as tls.TLSSocket);
    this.listen(raw);
  }

  /** Refuse before any SMTP (too many connections): the reply, then close. */
  refuse(name: ReplyName): void {
    this.ready = true;
    this.fail(name);
  }

  /** Bytes read before the connection existed (behind a PROXY header). */
  received(early: Buffer): void {
    this.onInput(early);
  }

  start(): void {
    const go = () => {
      if (this.closing) return;
      this.connecting = this.hooks.connect(this.session).then(
        (err) => {
          this.connecting = undefined;
          this.greet(err);
        },
        () => {
          this.connecting = undefined;
          this.greet(new SmtpReplyError('local_error'));
        },
      );
    };
    if (this.opts.greetDelayMs > 0) setTimeout(go, this.opts.greetDelayMs).unref();
    else go();
  }

  private greet(err: SmtpReplyError | undefined): void {
    if (this.closing) return;
    this.ready = true;
    if (err) return this.replyError(err, true);
    this.write(`220 ${this.opts.hostname} ESMTP smarthost\r\n`);
    this.turns++;
    this.drive();
  }

  // ---- input ----

  private listen(sock: net.Socket): void {
    sock.on('data', this.onInput);
    sock.on('error', this.onError);
    sock.on('close', this.onClose);
  }

  private readonly onInput = (chunk: Buffer): void => {
    if (this.closing || this.upgrading) return;
    if (this.data?.reading) return this.feedData(chunk);
    this.pending = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    if (!this.ready) {
      // A complete line before the greeting: an early talker (spambots do not wait).
      if (chunk.includes(LF)) return this.fail('early_talker');
      if (this.pending.length > MAX_LINE) return this.fail('line_too_long');
      return;
    }
    this.drive();
  };

  private readonly onError = (): void => {
    // ECONNRESET and the like: the close event follows and does the rest.
  };

  private readonly onClose = (): void => {
    if (this.closed) return;
    this.closed = true;
    this.closing = true;
    if (this.data) {
      const gone = Object.assign(new Error('client disconnected during DATA'), { code: 'ECONNECTION' });
      this.data.body.destroy(gone);
    }
    this.pending = undefined;
    this.onGone(this);
    // close is the session's last hook, never before connect's answer: the session records a
    // connection (and counts it) when connect ends, so a client gone during a slow connect (a
    // DNSBL lookup) left its state for good and its counted connection never given back.
    const connecting = this.connecting;
    if (!connecting) return this.hooks.close(this.session);
    const close = () => this.hooks.close(this.session);
    connecting.then(close, close);
  };

  /** Process complete command lines while the server is free to answer them. */
  private drive(): void {
    if (this.driving) return;
    this.driving = true;
    const sock = this.socket;
    sock.cork();
    try {
      while (this.pending && !this.busy && !this.closing && !this.upgrading) {
        if (sock.writableNeedDrain) {
          // The client does not read its replies: read no more commands until it does.
          if (!this.waitingForDrain) {
            this.waitingForDrain = true;
            sock.once('drain', () => {
              this.waitingForDrain = false;
              this.drive();
            });
          }
          break;
        }
        const buf = this.pending;
        const lf = buf.indexOf(LF);
        if (lf < 0 || lf > MAX_LINE) {
          if (buf.length > MAX_LINE) this.fail('line_too_long');
          break;
        }
        const end = lf > 0 && buf[lf - 1] === CR ? lf - 1 : lf;
        const text = buf.toString('utf8', 0, end);
        this.pending = lf + 1 < buf.length ? buf.subarray(lf + 1) : undefined;
        this.turns++;
        this.command(text);
      }
    } finally {
      sock.uncork();
      this.driving = false;
    }
    this.pauseFor(BACKLOG, (this.pending?.length ?? 0) > PAUSE_AT);
  }

  /** Stop reading while too much waits unprocessed; read again once nothing holds it. */
  private pauseFor(reason: number, on: boolean): void {
    const before = this.paused;
    this.paused = on ? before | reason : before & ~reason;
    if (before === 0 && this.paused !== 0) this.socket.pause();
    else if (before !== 0 && this.paused === 0 && !this.closing) this.socket.resume();
  }

  private feedData(chunk: Buffer): void {
    const d = this.data!;
    const step = d.reader.feed(chunk);
    for (const part of step.parts) d.body.push(part);
    if (!step.ended) return;
    d.reading = false;
    d.body.end();
    if (step.rest && step.rest.length > 0) this.pending = step.rest;
    if (d.result !== undefined) this.finishData(d.result);
  }

  // ---- output ----

  private write(s: string): void {
    const sock = this.socket;
    if (!this.upgrading && !sock.destroyed && sock.writable) sock.write(s);
  }

  private reply(name: ReplyName, detail?: string): void {
    this.write(`${formatReply(name, detail)}\r\n`);
  }

  /** A hook's refusal (its text starts with the enhanced code); a 421 also ends the connection. */
  private replyError(err: SmtpReplyError, thenClose = err.responseCode === 421): void {
    this.write(`${err.responseCode} ${err.message.replace(CONTROL_G, ' ')}\r\n`);
    if (thenClose) this.close();
  }

  private fail(name: ReplyName): void {
    this.reply(name);
    this.close();
  }

  /** End the connection: what was written goes out, then the descriptor is closed. */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.pending = undefined;
    const sock = this.socket;
    if (sock.destroyed) return;
    sock.end();
    if (sock.writableFinished) sock.destroy();
    else {
      sock.once('finish', () => sock.destroy());
      // A client that never reads (a full send buffer) is not waited for long. The timer goes
      // with the socket: left running, it kept every closed connection alive for 5 s (+20 MiB).
      const timer = setTimeout(() => sock.destroy(), 5000);
      timer.unref();
      sock.once('close', () => clearTimeout(timer));
    }
  }

  /** Server shutdown: 421 now. */
  shutdown(): void {
    if (this.upgrading) {
      this.socket.destroy();
      return;
    }
    this.fail('shutting_down');
  }

  /** Drop without a word (a TLS handshake that never finished). */
  destroy(): void {
    this.closing = true;
    this.socket.destroy();
    this.raw.destroy();
  }

  /** The slow-client deadline (see the header): true when this connection was cut. */
  sweep(now: number, limitMs: number, reply: ReplyName): boolean {
    if (this.closing) return false;
    const serversTurn = !this.ready || this.busy || this.data !== undefined;
    if (serversTurn || this.sweptTurns !== this.turns) {
      this.sweptTurns = this.turns;
      this.waitingSince = now;
      return false;
    }
    if (now - this.waitingSince < limitMs) return false;
    if (this.upgrading) this.destroy();
    else this.fail(reply);
    return true;
  }

  // ---- commands ----

  private command(text: string): void {
    if (this.authStep) return this.authContinue(text);
    const sp = text.indexOf(' ');
    const verb = (sp < 0 ? text : text.slice(0, sp)).toUpperCase();
    const arg = sp < 0 ? '' : text.slice(sp + 1);
    if (this.opts.authRequired && !this.session.user && verb !== 'AUTH' && ++this.unauthenticatedCommands >= MAX_UNAUTHENTICATED) {
      return this.fail('too_many_errors');
    }
    switch (verb) {
      case 'EHLO':
      case 'HELO':
        return this.helo(verb, arg);
      case 'MAIL':
        if (this.transactionRefused()) return;
        return this.mail(text);
      case 'RCPT':
        if (this.transactionRefused()) return;
        return this.rcpt(text);
      case 'DATA':
        if (this.transactionRefused()) return this.dataRefused();
        return this.dataCommand();
      case 'RSET':
        if (this.junk()) return;
        this.resetTransaction();
        return this.reply('reset_ok');
      case 'NOOP':
        if (this.junk()) return;
        return this.reply('ok');
      case 'HELP':
        if (this.junk()) return;
        return this.reply('help');
      case 'VRFY':
        if (this.junk()) return;
        return arg.trim() ? this.reply('vrfy_unverified') : this.reply('command_syntax');
      case 'QUIT':
        return this.quit();
      case 'STARTTLS':
        // A known command this listener does not offer: 502, not an unknown one (RFC 5321 §4.2.4).
        return this.opts.security !== 'none' ? this.startTls(arg) : this.reply('not_offered');
      case 'AUTH':
        return this.opts.authRequired ? this.auth(arg) : this.reply('not_offered');
    }
    if (HTTP_REQUEST.test(text)) return this.fail('http_refused');
    if (++this.unknownCommands >= MAX_UNKNOWN) return this.fail('too_many_errors');
    this.reply('unknown_command');
  }

  /** One more junk command (MAX_JUNK); true when that ended the session. */
  private junk(): boolean {
    if (++this.junkCommands <= MAX_JUNK || ++this.unknownCommands < MAX_UNKNOWN) return false;
    this.fail('too_many_errors');
    return true;
  }

  /** MAIL, RCPT and DATA need a HELO and, on submission, AUTH. */
  private transactionRefused(): boolean {
    if (!this.session.helo) {
      this.reply('helo_first');
      return true;
    }
    if (this.opts.authRequired && !this.session.user) {
      this.reply('auth_required');
      return true;
    }
    return false;
  }

  private helo(verb: string, arg: string): void {
    const words = arg.trim().split(/\s+/);
    if (words.length !== 1 || !words[0]) return this.reply('helo_syntax');
    const name = words[0];
    if (name.length > MAX_HELO || CONTROL.test(name)) return this.reply('command_syntax');
    this.session.helo = name.toLowerCase();
    this.resetTransaction();
    const greeting = `${this.opts.hostname} Hello [${this.session.remoteAddress}]`;
    if (verb === 'HELO') return this.write(`250 ${greeting}\r\n`);
    const lines = [greeting, 'PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES'];
    if (this.opts.authRequired && !this.session.user && this.session.secure) lines.push('AUTH PLAIN LOGIN');
    if (this.opts.security === 'starttls' && !this.session.secure) lines.push('STARTTLS');
    lines.push(`SIZE ${this.opts.maxMessageSize}`);
    this.write(lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}\r\n`).join(''));
  }

  private resetTransaction(): void {
    this.session.envelope = { mailFrom: undefined, rcptTo: [], smtpUtf8: false };
  }

  /** Run a hook with the command loop held until it answers. */
  private ask<T>(p: Promise<T>, then: (v: T) => void): void {
    this.busy = true;
    p.then(
      (v) => {
        then(v);
        this.hookDone();
      },
      () => {
        this.replyError(new SmtpReplyError('local_error'));
        this.hookDone();
      },
    );
  }

  private hookDone(): void {
    this.busy = false;
    this.turns++;
    if (!this.closing) this.drive();
  }

  private mail(text: string): void {
    const parsed = parseAddressCommand('MAIL FROM', text);
    // The duplicate's name is the client's: bounded and without control characters, as for
    // unknown parameters (it was echoed whole: up to 16 KB, escape sequences included).
    if ('error' in parsed) return this.reply(parsed.error === 'duplicate' ? 'command_syntax' : 'bad_sender_syntax', parsed.error === 'duplicate' ? `(${paramName(parsed.key)} given twice)` : undefined);
    if (this.session.envelope.mailFrom) return this.reply('nested_mail');
    const args = parsed.args;
    let smtpUtf8 = false;
    for (const key of Object.keys(args)) {
      const value = args[key]!;
      if (key === 'SIZE') {
        // RFC 1870: a number of any length; more digits than a limit can have is over it.
        if (typeof value !== 'string' || !/^\d+$/.test(value)) return this.reply('syntax_error', '(SIZE)');
        if (value.length > 15 || Number(value) > this.opts.maxMessageSize) return this.reply('too_big');
      } else if (key === 'BODY') {
        if (typeof value !== 'string' || !/^(7BIT|8BITMIME)$/i.test(value)) return this.reply('syntax_error', '(BODY)');
      } else if (key === 'SMTPUTF8') {
        if (value !== true) return this.reply('syntax_error', '(SMTPUTF8)');
        smtpUtf8 = true;
      } else if (key !== 'AUTH' || !this.opts.authRequired) {
        return this.reply('unknown_parameter', `(${paramName(key)})`);
      }
    }
    // RFC 6531 §3.5: UTF-8 in an address only in a transaction that declared SMTPUTF8; the
    // next hop would otherwise get an address it was never told to expect.
    if (!smtpUtf8 && NON_ASCII.test(parsed.address)) return this.reply('utf8_undeclared');
    this.ask(this.hooks.mailFrom(parsed, this.session), (err) => {
      if (err) return this.replyError(err);
      this.session.envelope.mailFrom = parsed;
      this.session.envelope.smtpUtf8 = smtpUtf8;
      this.reply('sender_ok');
    });
  }

  private rcpt(text: string): void {
    const parsed = parseAddressCommand('RCPT TO', text);
    if ('error' in parsed || !parsed.address) return this.reply(!('error' in parsed) || parsed.error === 'syntax' ? 'bad_recipient_syntax' : 'command_syntax');
    const keys = Object.keys(parsed.args);
    if (keys.length > 0) return this.reply('unknown_parameter', `(${paramName(keys[0]!)})`);
    if (!this.session.envelope.mailFrom) return this.reply('mail_first');
    if (!this.session.envelope.smtpUtf8 && NON_ASCII.test(parsed.address)) return this.reply('utf8_undeclared');
    this.ask(this.hooks.rcptTo(parsed, this.session), (err) => {
      if (err) return this.replyError(err);
      const rcpts = this.session.envelope.rcptTo;
      const key = parsed.address.toLowerCase();
      const seen = rcpts.findIndex((r) => r.address.toLowerCase() === key);
      if (seen >= 0) rcpts[seen] = parsed;
      else rcpts.push(parsed);
      this.reply('recipient_ok');
    });
  }

  private dataCommand(): void {
    if (this.session.envelope.rcptTo.length === 0) {
      this.reply(this.session.envelope.mailFrom ? 'rcpt_first' : 'mail_first');
      return this.dataRefused();
    }
    const body = new MessageBody(
      this.opts.maxMessageSize,
      () => this.pauseFor(BODY_FULL, true),
      () => this.pauseFor(BODY_FULL, false),
    );
    const d: DataPhase = { reader: new DataReader(), body, reading: true };
    this.data = d;
    this.busy = true;
    this.write('354 End data with <CR><LF>.<CR><LF>\r\n');
    // A client that sends the final "." in a write of its own otherwise waits for a delayed ACK.
    // The 354 must be on its way first (drive() corks): quick ACK mode is set after the write.
    this.socket.uncork();
    quickAck(this.socket);
    this.hooks.data(body, this.session).then(
      (r) => this.dataAnswered(d, r),
      () => this.dataAnswered(d, new SmtpReplyError('local_error')),
    );
    // Content pipelined behind DATA (a client that did not wait for the 354) is content.
    const early = this.pending;
    this.pending = undefined;
    if (early) this.feedData(early);
  }

  /**
   * DATA was refused. DATA ends a pipelined group (RFC 2920 §3.1): a client has nothing to
   * send before its reply, so bytes already here are the message it sent without waiting
   * (behind an accepted DATA they are taken as content). Read as commands, they ran whatever
   * the body held: a RCPT added to the transaction, a whole second message accepted. 421, close.
   */
  private dataRefused(): void {
    if (this.pending && this.pending.length > 0) this.fail('data_unsynchronized');
  }

  private dataAnswered(d: DataPhase, result: SmtpReplyError | string): void {
    if (this.data !== d) return;
    if (!d.reading) return this.finishData(result);
    // Answered before the end of data (a deadline, a lost client): a 421 goes now; anything
    // else waits for the end, and the rest of the message is read and dropped.
    if (typeof result !== 'string' && result.responseCode === 421) return this.replyError(result);
    d.result = result;
    d.body.destroy(new Error('answered before the end of data'));
  }

  private finishData(result: SmtpReplyError | string): void {
    this.data = undefined;
    if (typeof result === 'string') {
      this.write(`250 ${result}\r\n`);
      this.unknownCommands = 0;
      this.junkCommands = 0;
    } else this.replyError(result);
    this.resetTransaction();
    this.pauseFor(BODY_FULL, false);
    this.hookDone();
  }

  private quit(): void {
    this.busy = true;
    const done = () => {
      this.reply('closing');
      this.close();
    };
    this.hooks.quit(this.session).then(done, done);
  }

  // ---- STARTTLS ----

  private startTls(arg: string): void {
    if (arg.trim()) return this.reply('command_syntax');
    if (this.session.secure) return this.reply('tls_active');
    const raw = this.raw;
    this.reply('tls_go_ahead');
    // Out before the TLS layer takes the socket over (drive() corked it).
    raw.uncork();
    this.upgrading = true;
    // Anything pipelined after STARTTLS arrived in plaintext: it is dropped, never answered.
    this.pending = undefined;
    raw.removeListener('data', this.onInput);
    raw.removeListener('close', this.onClose);
    if (this.paused !== 0) {
      this.paused = 0;
      raw.resume();
    }
    const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: this.opts.secureContext() });
    this.socket = secure;
    secure.on('error', () => {
      // A failed handshake (plaintext injected, wrong version): nothing to answer.
      secure.destroy();
      raw.destroy();
    });
    secure.on('close', this.onClose);
    secure.once('secure', () => {
      this.upgrading = false;
      this.session.secure = true;
      this.session.tlsOptions = cipherOf(secure);
      // RFC 3207 §4.2: the client starts over; nothing learnt in plaintext stands.
      this.session.helo = '';
      this.session.user = undefined;
      this.authStep = undefined;
      this.resetTransaction();
      this.turns++;
      secure.on('data', this.onInput);
    });
  }

  // ---- AUTH ----

  private auth(arg: string): void {
    if (!this.session.helo) return this.authRefused('helo_first');
    if (!this.session.secure) return this.authRefused('starttls_required');
    if (this.session.user) return this.reply('already_authenticated');
    const words = arg.trim().split(/\s+/);
    const mechanism = (words[0] ?? '').toUpperCase();
    if (mechanism !== 'PLAIN' && mechanism !== 'LOGIN') return this.authRefused('auth_mechanism');
    if (words.length > 2) return this.authRefused('command_syntax');
    const initial = words[1];
    if (mechanism === 'PLAIN') {
      if (initial === undefined) {
        this.authStep = { kind: 'plain' };
        return this.write('334 \r\n');
      }
      return this.authPlain(initial);
    }
    if (initial === undefined) {
      this.authStep = { kind: 'login-user' };
      return this.write('334 VXNlcm5hbWU6\r\n');
    }
    this.loginUser(initial);
  }

  private authContinue(text: string): void {
    const step = this.authStep!;
    this.authStep = undefined;
    const token = text.trim();
    if (token === '*') return this.authRefused('auth_cancelled');
    if (step.kind === 'plain') return this.authPlain(token);
    if (step.kind === 'login-user') return this.loginUser(token);
    const password = decode64(token);
    if (password === undefined) return this.authRefused('auth_syntax');
    this.authenticate({ method: 'LOGIN', username: step.username, password });
  }

  private authPlain(token: string): void {
    const decoded = decode64(token);
    const parts = decoded?.split('\x00');
    if (!parts || parts.length !== 3) return this.authRefused('auth_syntax');
    const [authzid, authcid, password] = parts as [string, string, string];
    const username = authcid || authzid;
    if (CONTROL.test(username) || CONTROL.test(authzid)) return this.authRefused('auth_syntax');
    this.authenticate({ method: 'PLAIN', username, password, ...(authzid ? { authzid } : {}) });
  }

  private loginUser(token: string): void {
    const username = decode64(token);
    if (!username || CONTROL.test(username)) return this.authRefused('auth_syntax');
    this.authStep = { kind: 'login-password', username };
    this.write('334 UGFzc3dvcmQ6\r\n');
  }

  /**
   * An AUTH refused before any password check counts as a command without AUTH: AUTH itself
   * is not counted (the policy's lockout judges the password checks), so "AUTH FOO", bad
   * base64 or "*", repeated, kept an unauthenticated client connected for ever.
   */
  private authRefused(name: ReplyName): void {
    if (++this.unauthenticatedCommands >= MAX_UNAUTHENTICATED) return this.fail('too_many_errors');
    this.reply(name);
  }

  private authenticate(auth: SmtpAuth): void {
    this.ask(this.hooks.auth(auth, this.session), (res) => {
      if (res instanceof SmtpReplyError) return this.replyError(res);
      this.session.user = res.user;
      this.reply('auth_ok');
    });
  }
}

/** An ESMTP parameter name as it may appear in a reply: 20 characters at most, no control characters. */
function paramName(key: string): string {
  return key.slice(0, 20).replace(CONTROL_G, '');
}

function decode64(token: string): string | undefined {
  if (!token || token.length % 4 !== 0 || !BASE64.test(token)) return undefined;
  return Buffer.from(token, 'base64').toString('utf8');
}

function cipherOf(s: tls.TLSSocket): { name: string; version: string } | undefined {
  const c = s.getCipher?.();
  return c ? { name: c.name, version: c.version } : undefined;
}
