/**
 * One outbound SMTP connection (RFC 5321), the wire layer under
 * src/relay/client.ts: connect, greeting, EHLO (HELO fallback), STARTTLS
 * (RFC 3207), AUTH PLAIN/LOGIN (RFC 4954), command batches and the message
 * data. It knows SMTP, not delivery policy: client.ts decides what to send
 * and what a reply means for a recipient.
 *
 * What it talks to: one server, over net/tls sockets. What it trusts: none
 * of the server's bytes — replies go through ReplyReader (bounded); a reply
 * nobody waits for is a protocol error (421 excepted: the server closing);
 * at STARTTLS, whatever the server sent after its "220" in plaintext is
 * discarded before the handshake (CVE-2011-0411: a man in the middle could
 * otherwise inject replies that we would read as coming from inside TLS),
 * and the extensions are read again from the EHLO inside TLS. Nor its pace:
 * one reply may take at most socketTimeout however it trickles in, the
 * message body has a deadline of its own (DataDeadline: dataTimeoutMs,
 * minDataRate) however slowly the server reads it, and the reply to its end
 * waits dataDoneTimeoutMs (RFC 5321's 10 minutes).
 *
 * Results are values: every method resolves, with an SmtpError on failure
 * (the fields classify.ts reads: code, originalCode, response, responseCode,
 * command, timeoutType, in the shapes nodemailer's SMTPConnection used, so
 * the classification did not change with the client). Any failure closes the
 * connection and emits 'end' once; so does the server closing it.
 *
 * Cost per message, the reason this exists: one write for the envelope
 * batch (RFC 2920 PIPELINING: [RSET,] MAIL, RCPT…, DATA), one for the body
 * and its end (corked), one promise per batch, one timer for the body's
 * deadline — no per-command closures, no Transform stream in front of the
 * socket.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import type { Readable } from 'node:stream';
import type { SmtpErrorLike } from '../classify';
import { DataDeadline } from './data-deadline';
import { DotStuffer } from './dot-stuff';
import { ReplyReader, type Reply } from './reply-reader';

export type { Reply } from './reply-reader';

export type SmtpError = Error & SmtpErrorLike & { recipient?: string; rejectedErrors?: SmtpError[] };

/** How the session treats STARTTLS: never, when offered (refusal → plaintext), or mandatory. */
export type StartTls = 'none' | 'opportunistic' | 'required';

export interface ConnectionOptions {
  readonly ip: string;
  readonly port: number;
  readonly localAddress?: string;
  /** EHLO name. */
  readonly name: string;
  /** The whole set-up, connect to the end of STARTTLS, is bounded by this. */
  readonly connectTimeoutMs: number;
  /** Waiting for the greeting, or for the TLS handshake, is bounded by this too. */
  readonly greetingTimeoutMs: number;
  /** Inactivity on an open connection; also the longest wait for one reply, however it trickles in. */
  readonly socketTimeoutMs: number;
  /** The message body: the longest it may go without a write, and its head start (DataDeadline). */
  readonly dataTimeoutMs: number;
  /** The message body: bytes per second it must average beyond that head start (0: progress only). */
  readonly minDataRate: number;
  /** The wait for the reply to the message's end, in place of socketTimeoutMs (RFC 5321 §4.5.3.2.6). */
  readonly dataDoneTimeoutMs: number;
  readonly startTls: StartTls;
  readonly tlsOptions: tls.ConnectionOptions;
}

/** The replies a batch got, and the error that ended it early (then replies may be short). */
export interface Exchange {
  readonly replies: Reply[];
  readonly err?: SmtpError;
}

/** How long to wait for the server to close after QUIT before dropping the socket. */
const CLOSE_GRACE_MS = 5000;
/** Body bytes gathered before a write (the socket's own high-water mark). */
const HOLD_BYTES = 16 * 1024;
/** TCP keepalive on pooled connections (NAT mappings). */
const KEEPALIVE_MS = 30_000;

export function smtpError(message: string, code: string, command?: string, response?: string): SmtpError {
  const e = new Error(response ? `${message}: ${response}` : message) as SmtpError & { code: string };
  e.code = code;
  if (command) (e as { command?: string }).command = command;
  if (response) {
    (e as { response?: string }).response = response;
    const n = Number(/^\d+/.exec(response)?.[0]);
    if (n) (e as { responseCode?: number }).responseCode = n;
  }
  return e;
}

function timeoutError(message: string, timeoutType: string): SmtpError {
  const e = smtpError(message, 'ETIMEDOUT', 'CONN');
  (e as { timeoutType?: string }).timeoutType = timeoutType;
  return e;
}

/** A socket error (refused, reset, TLS alert, certificate) with its own code kept as originalCode. */
function socketError(err: NodeJS.ErrnoException, code: string): SmtpError {
  const e = smtpError(err.message, code, 'CONN');
  if (err.code) (e as { originalCode?: string }).originalCode = err.code;
  return e;
}

/** The RFC 3463 status of a failure whose code is shared by others that need another (classify.ts reads it). */
function withStatus(e: SmtpError, status: string): SmtpError {
  (e as { status?: string }).status = status;
  return e;
}

interface Waiter {
  readonly need: number;
  readonly replies: Reply[];
  readonly done: (x: Exchange) => void;
  /** STARTTLS: after this batch, read nothing more from the plaintext socket. */
  readonly lastPlaintext: boolean;
}

export class SmtpConnection extends EventEmitter {
  destroyed = false;
  /** STARTTLS succeeded. */
  secure = false;
  /** EHLO keywords (upper case) of the session as it is now (inside TLS after STARTTLS). */
  readonly extensions = new Set<string>();
  /** SIZE limit the server announced (0: none). */
  maxSize = 0;
  /** SASL mechanisms the server announced. */
  readonly authMechanisms = new Set<string>();

  private socket: net.Socket;
  /** The TCP socket under it all (under TLS after STARTTLS): a reset must be sent on this one. */
  private readonly tcp: net.Socket;
  private readonly reader = new ReplyReader();
  private readonly waiters: Waiter[] = [];
  private phaseTimer: NodeJS.Timeout | undefined;
  /** While the message body goes out: when to look at its deadline again. */
  private dataTimer: NodeJS.Timeout | undefined;
  /**
   * When the wait for the next reply began (0: none awaited, or the body is still going out).
   * The socket's timeout is inactivity only, and every byte resets it: a server that trickles
   * stray CRLFs or endless "250-" lines would hold us forever. Checked on each read, so silence
   * stays the socket timeout's and a batch costs no timer.
   */
  private waitingSince = 0;
  /**
   * The reply awaited is the one to the message's end: it may take dataDoneTimeoutMs, any other
   * socketTimeoutMs (a server filtering the message may be silent for minutes; giving up
   * sooner defers a message it has very likely delivered: a duplicate at the next attempt).
   */
  private awaitingDataDone = false;
  private readonly deadline: number;
  /** The first error that failed the connection. */
  private failure: SmtpError | undefined;
  /** The data phase in progress: its source, so a failure can stop reading it. */
  private source: Readable | undefined;
  private readonly onData = (chunk: Buffer): void => this.read(chunk);
  private readonly onError = (err: Error): void => {
    this.fail(socketError(err, 'ESOCKET'));
  };
  /** Before the TCP connection is up: refused, unreachable… (Postfix: "connect to …", 4.4.1). */
  private readonly onConnectError = (err: Error): void => {
    this.fail(withStatus(socketError(err, 'ESOCKET'), '4.4.1'));
  };
  private readonly onClose = (): void => this.closedByPeer();
  private readonly onTimeout = (): void => {
    this.fail(timeoutError('Timeout', this.timeoutType()));
  };

  constructor(private readonly opts: ConnectionOptions) {
    super();
    this.deadline = Date.now() + opts.connectTimeoutMs;
    this.socket = this.tcp = new net.Socket();
  }

  /** The TLS socket after STARTTLS (peer certificate, authorized), else undefined. */
  get tlsSocket(): tls.TLSSocket | undefined {
    return this.secure ? (this.socket as tls.TLSSocket) : undefined;
  }

  /**
   * Connect and set the session up: greeting, EHLO (HELO when EHLO is
   * refused), STARTTLS at the configured level and EHLO again inside TLS.
   */
  async open(): Promise<SmtpError | undefined> {
    const greeting = await this.connect();
    if (greeting.err) return greeting.err;
    this.clearPhase();
    const g = greeting.replies[0];
    if (g.code !== 220) return this.fail(smtpError('Invalid greeting', 'EPROTOCOL', 'CONN', g.text));
    const name = this.opts.name.replace(/[\r\n]+/g, '');
    let ehlo = await this.hello(name);
    if (ehlo.err) return ehlo.err;
    const wantTls = this.opts.startTls === 'required' || (this.opts.startTls === 'opportunistic' && ehlo.extensions.has('STARTTLS'));
    if (wantTls && ehlo.esmtp) {
      const st = await this.exchange(['STARTTLS'], true);
      if (st.err) return st.err;
      const r = st.replies[0];
      if (r.code !== 220) {
        // A 421 has already failed the connection (dispatch): there is no plaintext session to
        // go on with, and reporting one would defer its mail instead of trying the next MX.
        if (this.destroyed) return this.failure ?? smtpError('Connection closed', 'ECONNECTION', 'STARTTLS', r.text);
        if (this.opts.startTls === 'required') {
          // Tried even when not offered; refused then, the server has no TLS (Postfix: 4.7.4). Offered and refused: its reply says why.
          const e = smtpError('Error upgrading connection with STARTTLS', 'ETLS', 'STARTTLS', r.text);
          return this.fail(ehlo.extensions.has('STARTTLS') ? e : withStatus(e, '4.7.4'));
        }
        // Refused: go on in plaintext with what the server announced for it, without AUTH.
        this.adopt(ehlo.extensions, ehlo.maxSize, new Set());
        return undefined;
      }
      const tlsErr = await this.upgrade();
      if (tlsErr) return tlsErr;
      ehlo = await this.hello(name);
      if (ehlo.err) return ehlo.err;
    }
    this.adopt(ehlo.extensions, ehlo.maxSize, ehlo.auth);
    return undefined;
  }

  /** AUTH PLAIN (or LOGIN when only that is offered). The caller checks the session is encrypted. */
  async login(user: string, pass: string): Promise<SmtpError | undefined> {
    const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
    if (!this.authMechanisms.has('PLAIN') && this.authMechanisms.has('LOGIN')) {
      for (const [cmd, expect] of [['AUTH LOGIN', 334], [b64(user), 334], [b64(pass), 235]] as const) {
        const r = await this.exchange([cmd]);
        if (r.err) return r.err;
        const reply = r.replies[0];
        if (reply.code !== expect) return smtpError('Invalid login', 'EAUTH', 'AUTH LOGIN', reply.text);
      }
      return undefined;
    }
    const r = await this.exchange([`AUTH PLAIN ${b64(`\u0000${user}\u0000${pass}`)}`]);
    if (r.err) return r.err;
    const reply = r.replies[0];
    if (reply.code !== 235) return smtpError('Invalid login', 'EAUTH', 'AUTH PLAIN', reply.text);
    return undefined;
  }

  /**
   * Send commands in one write and collect one reply for each. With
   * PIPELINING that is the whole envelope; without it, one command at a time.
   */
  exchange(commands: readonly string[], lastPlaintext = false): Promise<Exchange> {
    if (this.destroyed) return Promise.resolve({ replies: [], err: smtpError('Connection closed', 'ECONNECTION', 'CONN') });
    return new Promise((done) => {
      if (this.waiters.length === 0) this.waitingSince = Date.now();
      this.waiters.push({ need: commands.length, replies: [], done, lastPlaintext });
      this.socket.write(`${commands.join('\r\n')}\r\n`);
    });
  }

  /**
   * The message after a 354: the source, dot-stuffed, then ".", and the
   * server's one reply. A message up to HOLD_BYTES, end included, goes out
   * in one write. A source that fails mid-way closes the connection: the server
   * must not take a truncated message. Until its end is written the body is
   * bounded by its DataDeadline (one timer, looked at again when it fires);
   * out of time, the connection fails with DATA_TIMEOUT (4.4.2). The wait for
   * the reply after that is dataDoneTimeout's (replyWait).
   */
  sendData(source: Readable): Promise<Exchange> {
    if (this.destroyed) {
      source.destroy();
      return Promise.resolve({ replies: [], err: smtpError('Connection closed', 'ECONNECTION', 'CONN') });
    }
    return new Promise((resolve) => {
      let ended = false;
      const done = (x: Exchange): void => {
        // A reply before our end of data leaves the rest of the body to be read as commands:
        // keep the reply, drop the connection.
        if (!ended && !x.err) this.fail(smtpError('Server replied before the end of the message', 'EPROTOCOL', 'DATA', x.replies[0]?.text));
        resolve(x);
      };
      this.waiters.push({ need: 1, replies: [], done, lastPlaintext: false });
      const stuffer = new DotStuffer();
      const socket = this.socket;
      const began = Date.now();
      const deadline = new DataDeadline(this.opts.dataTimeoutMs, this.opts.minDataRate, began);
      let sent = 0;
      const check = (): void => {
        const now = Date.now();
        const left = deadline.left(now);
        if (left > 0) {
          this.dataTimer = setTimeout(check, left);
          return;
        }
        this.dataTimer = undefined;
        const secs = ((now - began) / 1000).toFixed(1);
        // Reset, not closed: a close would leave what the kernel still holds of the body (up to its
        // send buffer, megabytes) to drip out to the slow reader long after we gave up on it.
        this.fail(timeoutError(`4.4.2 Timeout sending the message: ${sent} bytes written in ${secs} s, the server reads too slowly`, 'DATA_TIMEOUT'), true);
      };
      this.dataTimer = setTimeout(check, this.opts.dataTimeoutMs);
      // Chunks are held and written together (one writev) at the end, or when HOLD_BYTES
      // have gathered: a message arrives in several chunks (the DKIM header, the
      // client's packets), and a write each would be a system call each.
      let held: Buffer[] = [];
      let heldBytes = 0;
      const flush = (last?: Buffer): boolean => {
        socket.cork();
        let ok = true;
        for (const b of held) ok = socket.write(b);
        if (last) ok = socket.write(last);
        socket.uncork();
        const bytes = heldBytes + (last?.length ?? 0);
        sent += bytes;
        deadline.wrote(bytes, Date.now());
        held = [];
        heldBytes = 0;
        return ok;
      };
      this.source = source;
      source.on('data', (chunk: Buffer | string) => {
        const out = stuffer.stuff(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
        held.push(out);
        heldBytes += out.length;
        if (heldBytes >= HOLD_BYTES && !flush()) {
          source.pause();
          socket.once('drain', () => source.resume());
        }
      });
      source.once('end', () => {
        this.source = undefined;
        if (this.destroyed) return;
        ended = true;
        this.waitingSince = Date.now();
        this.replyWait(true);
        flush(stuffer.end());
        this.clearDataTimer();
      });
      source.once('error', (err) => {
        this.source = undefined;
        this.fail(smtpError(`Cannot read queued message: ${err.message}`, 'ESTREAM', 'API'));
      });
    });
  }

  /** QUIT, then close our side; the socket is dropped if the server does not close within a grace period. */
  quit(): void {
    if (this.destroyed) return;
    const socket = this.socket;
    this.shutdown();
    socket.end('QUIT\r\n');
    const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  }

  /** Drop the connection now. */
  close(): void {
    if (this.destroyed) return;
    const socket = this.socket;
    this.shutdown();
    socket.destroy();
  }

  // ---- set-up ----

  /** Open the TCP connection and wait for the greeting. */
  private connect(): Promise<Exchange> {
    return new Promise((done) => {
      const socket = this.socket;
      this.phase(this.deadline - Date.now(), timeoutError('Connection timeout', 'CONNECT_TIMEOUT'));
      socket.once('error', this.onConnectError);
      socket.once('close', this.onClose);
      this.waiters.push({ need: 1, replies: [], done, lastPlaintext: false });
      socket.connect({ host: this.opts.ip, port: this.opts.port, ...(this.opts.localAddress ? { localAddress: this.opts.localAddress } : {}) }, () => {
        this.phase(this.setupTime(), timeoutError('Greeting never received', 'GREETING_TIMEOUT'));
        this.listen(socket);
      });
    });
  }

  /** EHLO, or HELO when EHLO is refused; the keywords it announced. */
  private async hello(name: string): Promise<{ err?: SmtpError; esmtp: boolean; extensions: Set<string>; maxSize: number; auth: Set<string> }> {
    const none = { esmtp: false, extensions: new Set<string>(), maxSize: 0, auth: new Set<string>() };
    const e = await this.exchange([`EHLO ${name}`]);
    if (e.err) return { ...none, err: e.err };
    const r = e.replies[0];
    if (r.code === 421) return { ...none, err: this.fail(smtpError('Server terminates connection', 'ECONNECTION', 'EHLO', r.text)) };
    if (r.code >= 200 && r.code < 300) return { esmtp: true, ...parseEhlo(r.text) };
    if (this.opts.startTls === 'required') {
      // No EHLO, no STARTTLS: required TLS not offered (4.7.4), whatever the refusal said.
      return { ...none, err: this.fail(withStatus(smtpError('EHLO failed but HELO does not support required STARTTLS', 'ECONNECTION', 'EHLO', r.text), '4.7.4')) };
    }
    const h = await this.exchange([`HELO ${name}`]);
    if (h.err) return { ...none, err: h.err };
    const hr = h.replies[0];
    if (hr.code < 200 || hr.code >= 300) return { ...none, err: this.fail(smtpError('Invalid HELO', 'EPROTOCOL', 'HELO', hr.text)) };
    return none;
  }

  /** TLS over the connected socket (after the server's 220 to STARTTLS). */
  private upgrade(): Promise<SmtpError | undefined> {
    return new Promise((done) => {
      const plain = this.socket;
      // The plain socket keeps its error listener (fail() is idempotent): an error on it
      // after the handshake began must not go unhandled.
      this.unlisten(plain);
      // Every way the handshake fails is Postfix's "Cannot start TLS: handshake failure", 4.7.5.
      const handshake = (e: SmtpError): SmtpError => withStatus(e, '4.7.5');
      this.phase(this.setupTime(), handshake(timeoutError('TLS handshake timed out', 'UPGRADE_TIMEOUT')));
      let secured: tls.TLSSocket;
      try {
        secured = tls.connect({ ...this.opts.tlsOptions, socket: plain }, () => {
          this.secure = true;
          this.clearPhase();
          this.listen(secured);
          done(undefined);
        });
      } catch (err) {
        done(this.fail(handshake(socketError(err as NodeJS.ErrnoException, 'ETLS'))));
        return;
      }
      this.socket = secured;
      secured.once('error', (err) => done(this.fail(handshake(socketError(err, 'ESOCKET')))));
      // A timeout fails the connection first and destroys the socket: report the timeout.
      secured.once('close', () => done(this.failure ?? this.fail(handshake(smtpError('Connection closed unexpectedly', 'ETLS', 'CONN')))));
    });
  }

  /** Time left for a set-up step: greetingTimeout, cut short by the connect deadline. */
  private setupTime(): number {
    return Math.min(this.opts.greetingTimeoutMs, Math.max(this.deadline - Date.now(), 1));
  }

  private phase(ms: number, err: SmtpError): void {
    this.clearPhase();
    this.phaseTimer = setTimeout(() => this.fail(err), Math.max(ms, 0));
  }

  private clearPhase(): void {
    if (this.phaseTimer) clearTimeout(this.phaseTimer);
    this.phaseTimer = undefined;
  }

  private clearDataTimer(): void {
    if (this.dataTimer) clearTimeout(this.dataTimer);
    this.dataTimer = undefined;
  }

  /** Attach the session's listeners to the (plain or TLS) socket. */
  private listen(socket: net.Socket): void {
    socket.removeAllListeners('error');
    socket.removeAllListeners('close');
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.once('close', this.onClose);
    socket.on('end', this.onClose);
    socket.setTimeout(this.replyTimeoutMs());
    socket.on('timeout', this.onTimeout);
    socket.setKeepAlive(true, KEEPALIVE_MS);
    // Each batch is one write already; Nagle would only hold it for the previous ACK.
    socket.setNoDelay(true);
  }

  private adopt(extensions: Set<string>, maxSize: number, auth: Set<string>): void {
    this.clearPhase();
    for (const k of extensions) this.extensions.add(k);
    this.maxSize = maxSize;
    for (const m of auth) this.authMechanisms.add(m);
  }

  /** Detach the session's listeners (all but 'error') from a socket. */
  private unlisten(socket: net.Socket): void {
    socket.off('data', this.onData);
    socket.off('close', this.onClose);
    socket.off('end', this.onClose);
    socket.off('timeout', this.onTimeout);
    socket.setTimeout(0);
  }

  // ---- replies ----

  /** The reply awaited next is the one to the message's end, or any other (silence and trickle alike). */
  private replyWait(dataDone: boolean): void {
    if (dataDone === this.awaitingDataDone) return;
    this.awaitingDataDone = dataDone;
    this.socket.setTimeout(this.replyTimeoutMs());
  }

  private replyTimeoutMs(): number {
    return this.awaitingDataDone ? this.opts.dataDoneTimeoutMs : this.opts.socketTimeoutMs;
  }

  private timeoutType(): string {
    return this.awaitingDataDone ? 'DATA_DONE_TIMEOUT' : 'SOCKET_TIMEOUT';
  }

  private read(chunk: Buffer): void {
    if (this.waitingSince !== 0 && Date.now() - this.waitingSince > this.replyTimeoutMs()) {
      this.fail(timeoutError('Timeout waiting for a reply', this.timeoutType()));
      return;
    }
    const err = this.reader.push(chunk, (reply) => this.dispatch(reply));
    if (err) this.fail(smtpError(err, 'EPROTOCOL', 'CONN'));
  }

  /** Hand a reply to the batch waiting for it; false stops reading the chunk. */
  private dispatch(reply: Reply): boolean {
    if (this.destroyed) return false;
    const w = this.waiters[0];
    if (!w) {
      // RFC 5321 §3.8: 421 may come at any time, the server is closing.
      if (reply.code === 421) this.fail(smtpError('Server closed the connection', 'ECONNECTION', 'CONN', reply.text));
      else this.fail(smtpError('Unexpected Response', 'EPROTOCOL', 'CONN', reply.text));
      return false;
    }
    w.replies.push(reply);
    const complete = w.replies.length === w.need;
    if (complete) this.waiters.shift();
    // A reply is progress: the clock starts again for the next one, if any is awaited.
    this.waitingSince = this.waiters.length ? Date.now() : 0;
    this.replyWait(false);
    if (reply.code === 421) {
      // The rest of the batch is not coming: the server is closing.
      if (complete) w.done({ replies: w.replies });
      this.fail(smtpError('Server closed the connection', 'ECONNECTION', 'CONN', reply.text));
      return false;
    }
    if (!complete) return true;
    w.done({ replies: w.replies });
    if (w.lastPlaintext && reply.code === 220) {
      // STARTTLS accepted: anything after the 220 in this chunk, or already buffered, was
      // sent in plaintext and must not be read as if it came through TLS.
      this.socket.off('data', this.onData);
      this.reader.reset();
      return false;
    }
    return true;
  }

  // ---- ending ----

  private closedByPeer(): void {
    if (this.destroyed) return;
    const rest = this.reader.remainder();
    const failure = /^[45]\d\d[ -]/.test(rest) ? rest : undefined;
    this.fail(smtpError('Connection closed unexpectedly', 'ECONNECTION', 'CONN', failure));
  }

  /**
   * Fail the connection: every waiting batch gets `err`, the socket goes (with a TCP reset when
   * `reset`: nothing still queued for the server is sent), 'end' once. Returns `err`.
   */
  private fail(err: SmtpError, reset = false): SmtpError {
    if (this.destroyed) return this.failure ?? err;
    this.failure = err;
    const waiting = this.waiters.splice(0);
    const socket = this.socket;
    this.shutdown();
    if (reset && !this.tcp.destroyed) {
      try {
        this.tcp.resetAndDestroy();
      } catch {
        // Not a TCP handle after all (ERR_INVALID_HANDLE_TYPE): closed below, without the reset.
      }
    }
    socket.destroy();
    for (const w of waiting) w.done({ replies: w.replies, err });
    return err;
  }

  private shutdown(): void {
    this.destroyed = true;
    this.clearPhase();
    this.clearDataTimer();
    const socket = this.socket;
    this.unlisten(socket);
    // Errors while tearing down (a TLS alert after we closed) are of no interest now.
    socket.removeAllListeners('error');
    socket.on('error', () => undefined);
    if (this.source) {
      this.source.destroy();
      this.source = undefined;
    }
    // Waiters still queued (a quit or close during a batch) learn it now.
    for (const w of this.waiters.splice(0)) w.done({ replies: w.replies, err: smtpError('Connection closed', 'ECONNECTION', 'CONN') });
    this.emit('end');
  }
}

/** EHLO keywords, SIZE limit and AUTH mechanisms from an EHLO reply. */
export function parseEhlo(text: string): { extensions: Set<string>; maxSize: number; auth: Set<string> } {
  const extensions = new Set<string>();
  const auth = new Set<string>();
  let maxSize = 0;
  const lines = text.split('\n');
  for (let i = 1; i < lines.length; i++) {
    // "AUTH=LOGIN PLAIN" is how some older servers spell "AUTH LOGIN PLAIN".
    const words = lines[i].slice(4).trim().replace(/^AUTH=/i, 'AUTH ').split(/[ \t]+/);
    const keyword = words[0].toUpperCase();
    if (!keyword) continue;
    extensions.add(keyword);
    // RFC 1870: SIZE takes digits only. Anything else ("-1", "0x400", "1e3") is no limit, as in
    // Postfix: read by Number() it became a limit that bounced (5.3.4) mail never offered.
    if (keyword === 'SIZE') maxSize = /^\d+$/.test(words[1] ?? '') ? Number(words[1]) : 0;
    if (keyword === 'AUTH') for (const m of words.slice(1)) auth.add(m.toUpperCase());
  }
  return { extensions, maxSize, auth };
}
