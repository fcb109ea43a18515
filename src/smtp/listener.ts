/**
 * One configured listener: an smtp-server instance with its TLS mode, AUTH
 * mode, limits and the session handlers. Binding errors are turned into a
 * message that names the listener, the address and the likely cause.
 */
import type { Socket } from 'node:net';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { Config, ListenerConfig } from '../config/schema';
import { proxyTrust } from '../fleet/proxy-from';
import type { Logger } from '../log';
import { bindHint, bindSocket, type BindError, type BoundSocket } from '../net/bound-socket';
import { quickAckUnavailable } from '../net/quick-ack';
import { replyLine } from '../replies';
import { adaptSmtpServer, sweepSlowClients } from './server-adapter';
import { SessionHandlers, type SessionDeps } from './session';

export interface TlsMaterial {
  key: string | Buffer;
  cert: string | Buffer;
}

export class ListenError extends Error {}

let quickAckWarned = false;

/** Once per process, when the native helper is missing (src/net/quick-ack.ts). */
function warnWithoutQuickAck(logger: Logger): void {
  const why = quickAckUnavailable();
  if (!why || quickAckWarned) return;
  quickAckWarned = true;
  logger.warn({ evt: 'quick_ack', why }, 'TCP quick ACK unavailable (native helper not built: npm run install); clients that send the final "." separately wait for delayed ACKs');
}

export class Listener {
  readonly server: SMTPServer;
  readonly handlers: SessionHandlers;
  private boundPort = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private readonly idleTimeoutMs: number;
  private socket: BoundSocket | undefined;

  constructor(
    readonly cfg: ListenerConfig,
    deps: SessionDeps,
    tls: () => TlsMaterial,
    private readonly logger: Logger,
  ) {
    adaptSmtpServer();
    const limits: Config['limits'] = deps.cfg.limits;
    this.idleTimeoutMs = limits.idleTimeoutMs;
    this.handlers = new SessionHandlers(cfg, deps);
    const h = this.handlers;
    const material = tls();
    const options: SMTPServerOptions & Record<string, unknown> = {
      name: deps.cfg.hostname,
      banner: 'smarthost ESMTP',
      secure: cfg.security === 'implicit',
      needsUpgrade: false,
      key: material.key,
      cert: material.cert,
      minVersion: deps.cfg.serverTls.minVersion,
      hideSTARTTLS: cfg.security !== 'starttls',
      hideENHANCEDSTATUSCODES: false,
      hideDSN: true,
      hideREQUIRETLS: true,
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: cfg.auth !== 'required',
      // MAIL/RCPT/DATA before AUTH: the library's own text would be "Error: authentication Required".
      authRequiredMessage: replyLine('auth_required'),
      disabledCommands: cfg.auth === 'required' ? [] : ['AUTH'],
      allowInsecureAuth: false,
      authOnlyAfterTls: true,
      disableReverseLookup: true,
      size: limits.maxMessageSize,
      maxClients: limits.maxConnections,
      socketTimeout: limits.idleTimeoutMs,
      closeTimeout: 5000,
      greetDelayMs: cfg.greetDelayMs,
      // Who must send a PROXY header is decided by proxyTrust below, not by the library's list.
      useProxy: false,
      logger: false,
      onConnect: (session, cb) => void h.onConnect(session, cb),
      onClose: (session) => h.onClose(session),
      onQuit: (session: SMTPServerSession) => h.onQuit(session),
      onAuth: (auth, session, cb) => void h.onAuth(auth, session, cb),
      onMailFrom: (address, session, cb) => void h.onMailFrom(address, session, cb),
      onRcptTo: (address, session, cb) => void h.onRcptTo(address, session, cb),
      onData: (stream, session, cb) => void h.onData(stream, session, cb as never),
    };
    this.server = new SMTPServer(options);
    // smtp-server matches `useProxy` by exact text and trusts everyone for "*"; the
    // balancers are matched here instead, as parsed CIDRs (src/fleet/proxy-from.ts).
    // Its header readers (v1, and v2 in src/fleet/proxy-protocol.ts) all ask this method.
    const trusted = proxyTrust(cfg.proxyFrom);
    (this.server as unknown as { _expectsProxyHeader(socket: Socket): boolean })._expectsProxyHeader = (socket) => trusted(socket.remoteAddress);
    this.server.on('error', (err) => this.logger.warn({ evt: 'error', listener: cfg.name, err: err.message }, 'listener error'));
  }

  /** Replace the certificate for new connections (certificate reload). */
  updateTls(material: TlsMaterial): void {
    const ctx: SecureContextOptions = { key: material.key, cert: material.cert };
    // Throws on a broken pair (key does not match, bad PEM) before anything is replaced.
    createSecureContext(ctx);
    this.server.updateSecureContext(ctx as never);
  }

  get port(): number {
    return this.boundPort;
  }

  /**
   * Reserve the address (bind, as root for ports below 1024) without
   * accepting; `socket`: one another process bound (a worker's, from the
   * primary). listen() starts accepting, after the privilege drop.
   */
  async bind(socket?: BoundSocket): Promise<void> {
    if (this.socket) return;
    const { address, port, name } = this.cfg;
    try {
      this.socket = socket ?? (await bindSocket(address, port));
    } catch (err) {
      throw new ListenError(`listener "${name}": cannot bind ${address}:${port}: ${bindHint((err as BindError).code ?? (err as Error).message)}`);
    }
  }

  async listen(): Promise<void> {
    await this.bind();
    const { address, port, name } = this.cfg;
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) =>
        reject(new ListenError(`listener "${name}": cannot bind ${address}:${port}: ${bindHint(err.code ?? err.message)}`));
      this.server.server.once('error', onError);
      this.server.listen(this.socket as never, () => {
        this.server.server.removeListener('error', onError);
        const a = this.server.server.address();
        this.boundPort = typeof a === 'object' && a ? a.port : port;
        // The uid says who accepts: the service user (process.user), never root (test/security/privilege.test.ts).
        this.logger.info({ evt: 'listening', listener: name, address, port: this.boundPort, role: this.cfg.role, security: this.cfg.security, uid: process.geteuid?.() }, 'listening');
        warnWithoutQuickAck(this.logger);
        this.startSweeper();
        resolve();
      });
    });
  }

  /** Slow clients (server-adapter.ts, patch 6): each command line within limits.idleTimeout. */
  private startSweeper(): void {
    const limit = this.idleTimeoutMs;
    this.sweeper = setInterval(() => {
      const cut = sweepSlowClients(this.server, limit, replyLine('command_timeout'));
      if (cut > 0) this.logger.info({ evt: 'rejection', listener: this.cfg.name, stage: 'command', reply: 'command_timeout', clients: cut }, 'slow clients disconnected');
    }, Math.max(50, Math.min(1000, Math.floor(limit / 4))));
    this.sweeper.unref();
  }

  close(): Promise<void> {
    clearInterval(this.sweeper);
    // Bound but never listening: the server does not own the socket yet.
    if (this.socket && !this.server.server.listening) {
      this.socket.close();
      this.socket = undefined;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
