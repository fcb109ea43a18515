/**
 * The accepting side of one listener: TCP connections in, a PROXY header
 * read where the peer is a trusted balancer (src/fleet/proxy-protocol.ts),
 * the TLS handshake first on an implicit-TLS listener, then an
 * SmtpConnection (src/smtp/connection.ts) per client.
 *
 * Bounds: `maxConnections` connections at once (the next is answered 421
 * and closed); a socket still owing its PROXY header or its TLS handshake
 * counts among them (beyond the limit: 421 before the header, or closed
 * before the handshake) and gets the idle timeout for it. A socket owing its
 * TLS handshake also counts against its address's limit from the accept (the
 * hooks' `admit`; beyond it, closed); one owing its PROXY header is the
 * balancer's, not yet a client's, and counts under `maxConnections` only.
 * Every command line has the same deadline
 * (`sweep`, run by the Listener). Closing stops accepting, lets sessions
 * finish for `closeTimeoutMs`, then answers the rest 421 and closes them.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import tls, { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import { readProxyHeader, type ProxyHeader } from '../fleet/proxy-protocol';
import type { ReplyName } from '../replies';
import { SmtpConnection, type ConnectionHooks, type ConnectionOptions } from './connection';

export interface ServerOptions extends Omit<ConnectionOptions, 'secureContext'> {
  tls: SecureContextOptions;
  maxConnections: number;
  closeTimeoutMs: number;
  /** Peers that must (and alone may) send a PROXY header. */
  proxyTrusted(address: string | undefined): boolean;
}

// 8 base-32 characters of random tag per process (workers' ids differ), then an 8-character counter.
const SESSION_TAG = BigInt(`0x${randomBytes(5).toString('hex')}`).toString(32).padStart(8, '0');
let sessionCount = 0;

/** A session id (our logs' `sid`): unique in this process (counter) and across processes (random tag). */
export function nextSessionId(): string {
  sessionCount = (sessionCount + 1) % 32 ** 8;
  return SESSION_TAG + sessionCount.toString(32).padStart(8, '0');
}

export class SmtpServer {
  readonly netServer: net.Server;
  readonly connections = new Set<SmtpConnection>();
  /** Sockets before their session: owing the PROXY header or the TLS handshake, since when. */
  private readonly pendingSockets = new Map<net.Socket, number>();
  private context: SecureContext;
  private readonly connOpts: ConnectionOptions;

  constructor(
    private readonly opts: ServerOptions,
    private readonly hooks: ConnectionHooks,
  ) {
    this.context = createSecureContext(opts.tls);
    this.connOpts = { ...opts, secureContext: () => this.context };
    this.netServer = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
  }

  /** New connections use this certificate (certificate reload); throws on a broken pair. */
  updateSecureContext(options: SecureContextOptions): void {
    this.context = createSecureContext({ ...this.opts.tls, ...options });
  }

  private accept(socket: net.Socket): void {
    socket.on('error', () => undefined);
    const trusted = this.opts.proxyTrusted(socket.remoteAddress);
    if (trusted || this.opts.security === 'implicit') {
      // A socket owing its PROXY header or its handshake holds a descriptor (and a TLS socket) like
      // a session, and counts as one: uncounted, 2,000 handshakes never finished were all held
      // with maxConnections 5, until the deadline. Over the limit: no TLS to answer in, so dropped;
      // a balancer's plaintext connection gets its 421 at once (it passes it on), header unread.
      if (this.connections.size + this.pendingSockets.size >= this.opts.maxConnections) {
        return this.opts.security === 'implicit' ? void socket.destroy() : this.afterProxy(socket, { peer: {} });
      }
    }
    if (!trusted) return this.afterProxy(socket, { peer: {} });
    this.pendingSockets.set(socket, Date.now());
    readProxyHeader(socket).then(
      (header) => {
        this.pendingSockets.delete(socket);
        this.afterProxy(socket, header);
      },
      () => this.pendingSockets.delete(socket),
    );
  }

  private afterProxy(socket: net.Socket, { peer, rest }: ProxyHeader): void {
    const remote = { address: peer.remoteAddress ?? socket.remoteAddress ?? '', port: peer.remotePort ?? socket.remotePort ?? 0 };
    // What came with the header is the client's first bytes: SMTP (checked for early talk) or the TLS hello.
    if (this.opts.security !== 'implicit') return this.open(socket, remote, false, rest);
    if (rest) socket.unshift(rest);
    const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: this.context });
    this.pendingSockets.set(secure, Date.now());
    const sid = nextSessionId();
    const failed = () => {
      this.pendingSockets.delete(secure);
      secure.destroy();
      socket.destroy();
      this.hooks.abandon?.(sid);
    };
    secure.once('error', failed);
    // A client that leaves mid-handshake (no TLS error then) gives its place back at once.
    secure.once('close', failed);
    secure.once('secure', () => {
      secure.removeListener('error', failed);
      secure.removeListener('close', failed);
      this.pendingSockets.delete(secure);
      this.open(secure, remote, true, undefined, sid);
    });
    // Its address's share from now: counted only once a session began, one address filled
    // maxConnections with handshakes it never started, until the deadline. Over: closed (no
    // TLS to answer in); once the session began, its connect hook answers 421 instead.
    this.hooks.admit?.(sid, remote.address).then(
      (ok) => {
        if (!ok && this.pendingSockets.has(secure)) failed();
      },
      () => undefined,
    );
  }

  private open(socket: net.Socket, remote: { address: string; port: number }, secure: boolean, early?: Buffer, sid = nextSessionId()): void {
    if (socket.destroyed) return this.hooks.abandon?.(sid);
    const conn = new SmtpConnection(socket, sid, remote, secure, this.connOpts, this.hooks, (c) => this.connections.delete(c));
    this.connections.add(conn);
    if (this.connections.size + this.pendingSockets.size > this.opts.maxConnections) return conn.refuse('too_many_connections');
    if (early) conn.received(early);
    conn.start();
  }

  /** Every client owing a command line (or a handshake, or a PROXY header) for `limitMs`: cut. Returns how many clients were cut. */
  sweep(limitMs: number, reply: ReplyName, now = Date.now()): number {
    let cut = 0;
    for (const c of this.connections) if (c.sweep(now, limitMs, reply)) cut++;
    for (const [socket, since] of this.pendingSockets) {
      if (now - since < limitMs) continue;
      this.pendingSockets.delete(socket);
      socket.destroy();
    }
    return cut;
  }

  listen(handle: unknown, cb: () => void): void {
    this.netServer.listen(handle as net.ListenOptions, cb);
  }

  close(cb: () => void): void {
    let called = false;
    const done = () => {
      if (called) return;
      called = true;
      clearTimeout(timer);
      cb();
    };
    this.netServer.close(done);
    for (const socket of this.pendingSockets.keys()) socket.destroy();
    this.pendingSockets.clear();
    const timer = setTimeout(() => {
      for (const c of this.connections) c.shutdown();
      done();
    }, this.opts.closeTimeoutMs);
    timer.unref();
  }
}
