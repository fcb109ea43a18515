/**
 * How smtp-server (3.21.x, pinned in package.json) is adapted. Each change
 * below patches one method of SMTPConnection's prototype, and each is
 * covered by a test that fails if an upgrade changes the behaviour:
 * 1 test/policy/gateway.test.ts (554 5.7.1 at connect), 2 and 3
 * test/e2e/submission.test.ts, 4 test/e2e/intercept.test.ts, 5
 * test/security/open-relay.test.ts, 6 test/security/slowloris.test.ts.
 *
 * 1. Reply text that already starts with an RFC 3463 enhanced status
 *    ("5.7.1 ...") is sent as is: smtp-server would otherwise derive an
 *    enhanced code from the basic code alone (554 → 5.6.0, wrong for a
 *    relay denial). Our replies come from src/replies.ts.
 * 2. 538 (AUTH before STARTTLS) carries 5.7.11 (RFC 3463/4954
 *    "encryption required for requested authentication mechanism"), not
 *    the library's 5.7.0.
 * 3. AUTH is not advertised in EHLO before TLS on listeners that only
 *    allow AUTH over TLS (the library advertises it and then refuses it).
 * 4. The greeting pause: the library waits a fixed 100 ms before every
 *    greeting (early-talker detection). That is a policy decision, so the
 *    listener's `greetDelayMs` sets it (0 on authenticated submission).
 * 5. Source routes: the library strips "@relay:" from `<@relay:user@dest>`
 *    (RFC 5321 appendix C) before any handler sees the address. The parsed
 *    address is marked `sourceRoute: true` so the RCPT stage can refuse
 *    routed address forms with a precise reply instead of ignoring them
 *    (test/security/open-relay.test.ts).
 * 6. Slow clients (slowloris): the library's idle timeout is the socket's,
 *    which every byte resets, so a client trickling a byte a second is
 *    never idle. `sweepSlowClients` (run by each Listener about once a
 *    second) gives every command line a deadline instead, measured from
 *    when the server is ready for it, like Postfix's
 *    smtpd_per_record_deadline: a client that has not completed a command
 *    within the idle timeout gets 421 4.4.2 and is disconnected. Time the
 *    server spends (a handler, DATA being judged) never counts; a DATA
 *    transfer has its own total deadline (limits.dataTimeout, session.ts).
 *    (test/security/exhaustion.test.ts)
 * 7. QUIT gives the connection slot back before the 221 is sent: the
 *    library reports a session's end (onClose) only after the socket's
 *    close event, by which time a client that got its 221 has often
 *    connected again, and was counted twice (smtp-source with 20 sessions
 *    against maxConnectionsPerIp 20 was refused after 19-62 messages). The
 *    listener's `onQuit(session)` runs first and the 221 waits for it.
 *    (test/security/per-ip-limit.test.ts)
 * 8. Session ids: the library makes each connection's id (our logs' `sid`,
 *    the key of the session's state) from crypto.randomBytes(10) turned
 *    into a BigInt: a CSPRNG call (and a getpid system call inside
 *    OpenSSL) per connection, ~1 % of the relay job's CPU profile, for an
 *    id that needs only to be unique and never reaches the client. Ours:
 *    a random tag per process (so workers' ids differ) and a counter, in
 *    the library's format (16 characters, base 32). Connections that carry
 *    a PROXY header keep the library's path.
 *    (test/e2e/session-ids.test.ts)
 * 9. QUIT closes the connection once the 221 has left (Postfix's smtpd
 *    does the same): the library only ends its side and keeps the
 *    descriptor until the client closes or a 5 s deadline passes. A client
 *    that resets the connection after reading its 221 (smtp-source sets
 *    SO_LINGER 0) then made Node build an ECONNRESET error, stack included,
 *    for every session: ~2 % of the relay job's CPU profile.
 *    (test/e2e/quit-close.test.ts)
 * 10. TCP quick ACK after the 354 (src/net/quick-ack.ts): a client that
 *    writes the message and then the final "." separately otherwise waits
 *    at least 40 ms per message for the kernel's delayed ACK.
 *    (test/e2e/data-quick-ack.test.ts)
 */
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { SMTPServer } from 'smtp-server';
import { quickAck } from '../net/quick-ack';

// The connection class is not exported by name; reach it the way the
// server itself constructs connections.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { SMTPConnection } = require('smtp-server/lib/smtp-connection') as { SMTPConnection: { prototype: ConnectionProto } };

interface ConnectionProto {
  send(code: number, data?: string | string[], context?: string | false): void;
  _getEnhancedStatusCode(code: number, context?: string | false): string;
  init(): void;
  connectionReady(next?: () => void): void;
  _setListeners(cb: () => void): void;
  _parseAddressCommand(name: string, command: string): false | { address: string; sourceRoute?: boolean };
  _onCommand(command: Buffer, callback?: () => void): void;
  handler_QUIT(command: Buffer, callback: () => void): void;
  session: unknown;
  secure: boolean;
  _socket: net.Socket;
  _server: { options: Record<string, unknown>; connections: Set<unknown> } & SMTPServer;
  name: string;
}

interface ServerProto {
  options: { ignoredHosts?: string[] };
  _expectsProxyHeader(socket: net.Socket): boolean;
  _handleProxy(socket: net.Socket, cb: (err: Error | null, opts?: Record<string, unknown>) => void): void;
}

const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;
let applied = false;

// Patch 8: 8 base-32 characters of random tag per process, then an 8-character counter.
const SESSION_TAG = BigInt(`0x${randomBytes(5).toString('hex')}`).toString(32).padStart(8, '0');
let sessionCount = 0;

/** A session id unique in this process (counter) and across processes (random tag), as smtp-server formats its own. */
export function nextSessionId(): string {
  sessionCount = (sessionCount + 1) % 32 ** 8;
  return SESSION_TAG + sessionCount.toString(32).padStart(8, '0');
}

export function adaptSmtpServer(): void {
  if (applied) return;
  applied = true;
  const proto = SMTPConnection.prototype;

  const origSend = proto.send;
  proto.send = function send(this: ConnectionProto, code, data, context) {
    if (typeof data === 'string' && ENHANCED_PREFIX.test(data)) context = false;
    else if (Array.isArray(data) && !this.secure && this._server.options.authOnlyAfterTls === true) {
      data = data.filter((line) => !/^AUTH\b/i.test(line));
    }
    origSend.call(this, code, data, context);
    // Patch 10: the 354 is written (synchronously, as the kernel takes it); acknowledge the content at once.
    if (code === 354) quickAck(this._socket);
  };

  const origEnhanced = proto._getEnhancedStatusCode;
  proto._getEnhancedStatusCode = function getEnhanced(this: ConnectionProto, code, context) {
    const derived = origEnhanced.call(this, code, context);
    return code === 538 && derived ? '5.7.11' : derived;
  };

  const origParse = proto._parseAddressCommand;
  proto._parseAddressCommand = function parseAddress(this: ConnectionProto, name, command) {
    const parsed = origParse.call(this, name, command);
    if (parsed && /:\s*<\s*@/.test(String(command ?? ''))) parsed.sourceRoute = true;
    return parsed;
  };

  const origOnCommand = proto._onCommand;
  proto._onCommand = function onCommand(this: ConnectionProto & SlowState, command, callback) {
    // A complete command line arrived: the client's deadline restarts.
    this._idleFrom = Date.now();
    return origOnCommand.call(this, command, callback);
  };

  const origQuit = proto.handler_QUIT;
  const quitAndClose = (conn: ConnectionProto, command: Buffer, callback: () => void) => {
    origQuit.call(conn, command, callback);
    // Patch 9: the 221 is written and end() called; close the descriptor now.
    const sock = conn._socket;
    if (sock.destroyed) return;
    if (sock.writableFinished) sock.destroy();
    else sock.once('finish', () => sock.destroy());
  };
  proto.handler_QUIT = function handleQuit(this: ConnectionProto, command, callback) {
    const onQuit = this._server.options.onQuit as ((session: unknown) => Promise<void>) | undefined;
    if (!onQuit) return quitAndClose(this, command, callback);
    // The hook never fails the QUIT: its errors are its own to log.
    void onQuit(this.session).then(
      () => quitAndClose(this, command, callback),
      () => quitAndClose(this, command, callback),
    );
  };

  const serverProto = SMTPServer.prototype as unknown as ServerProto;
  const origHandleProxy = serverProto._handleProxy;
  serverProto._handleProxy = function handleProxy(this: ServerProto, socket, callback) {
    if (this._expectsProxyHeader(socket)) return origHandleProxy.call(this, socket, callback);
    // The library's branch for a socket without a PROXY header, with our id.
    const ignore = this.options.ignoredHosts && this.options.ignoredHosts.includes(socket.remoteAddress ?? '');
    setImmediate(() => callback(null, { id: nextSessionId(), ignore }));
  };

  proto.init = function init(this: ConnectionProto) {
    this._setListeners(() => {
      const opts = this._server.options;
      if (typeof opts.maxClients === 'number' && opts.maxClients && this._server.connections.size > opts.maxClients) {
        return this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
      }
      const delay = typeof opts.greetDelayMs === 'number' ? opts.greetDelayMs : 100;
      if (delay <= 0) return this.connectionReady();
      setTimeout(() => this.connectionReady(), delay).unref();
    });
  };
}

/** What the slow-client sweep reads from smtp-server's connection objects (3.21.x internals). */
interface SlowState {
  _idleFrom?: number;
  _ready?: boolean;
  _closing?: boolean;
  _upgrading?: boolean;
  _handlerPending?: boolean;
  _dataStream?: unknown;
  _parser?: false | { _dataMode?: boolean };
  send(code: number, data?: string | string[], context?: string | false): void;
}

/**
 * Disconnects (421 4.4.2) every client that owes a complete command line
 * for longer than `limitMs`, however many bytes it trickles meanwhile
 * (patch 6 above). Returns how many were cut.
 */
export function sweepSlowClients(server: SMTPServer, limitMs: number, text: string, now = Date.now()): number {
  let cut = 0;
  const conns = (server as unknown as { connections: Set<SlowState> }).connections;
  for (const c of conns) {
    if (c._closing) continue;
    const serversTurn = !c._ready || c._upgrading || c._handlerPending || Boolean(c._dataStream) || (c._parser && c._parser._dataMode);
    if (serversTurn || c._idleFrom === undefined) {
      // Not the client's turn (or DATA, which has its own deadline): its time starts later.
      c._idleFrom = now;
      continue;
    }
    if (now - c._idleFrom >= limitMs) {
      c.send(421, text, false);
      cut++;
    }
  }
  return cut;
}
