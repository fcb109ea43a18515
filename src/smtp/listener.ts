/**
 * One configured listener: an SmtpServer (src/smtp/server.ts) with its TLS
 * mode, AUTH mode, limits and the session handlers. Binding errors are
 * turned into a message that names the listener, the address and the
 * likely cause.
 */
import type { ListenerConfig } from '../config/listener';
import type { Config } from '../config/schema';
import { proxyTrust } from '../fleet/proxy-from';
import type { Logger } from '../log';
import { bindHint, bindSocket, type BindError, type BoundSocket } from '../net/bound-socket';
import { quickAckUnavailable } from '../net/quick-ack';
import { SmtpServer } from './server';
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
  readonly server: SmtpServer;
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
    const limits: Config['limits'] = deps.cfg.limits;
    this.idleTimeoutMs = limits.idleTimeoutMs;
    this.handlers = new SessionHandlers(cfg, deps);
    const material = tls();
    this.server = new SmtpServer(
      {
        hostname: deps.cfg.hostname,
        security: cfg.security,
        authRequired: cfg.auth === 'required',
        maxMessageSize: limits.maxMessageSize,
        greetDelayMs: cfg.greetDelayMs,
        tls: { key: material.key, cert: material.cert, minVersion: deps.cfg.serverTls.minVersion },
        maxConnections: limits.maxConnections,
        closeTimeoutMs: 5000,
        // Who must send a PROXY header: the balancers, as parsed CIDRs (src/fleet/proxy-from.ts).
        proxyTrusted: proxyTrust(cfg.proxyFrom),
      },
      this.handlers,
    );
    this.server.netServer.on('error', (err) => this.logger.warn({ evt: 'error', listener: cfg.name, err: err.message }, 'listener error'));
  }

  /** Replace the certificate for new connections (certificate reload). */
  updateTls(material: TlsMaterial): void {
    // Throws on a broken pair (key does not match, bad PEM) before anything is replaced.
    this.server.updateSecureContext({ key: material.key, cert: material.cert });
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
      const net = this.server.netServer;
      net.once('error', onError);
      this.server.listen(this.socket, () => {
        net.removeListener('error', onError);
        const a = net.address();
        this.boundPort = typeof a === 'object' && a ? a.port : port;
        // The uid says who accepts: the service user (process.user), never root (test/security/privilege.test.ts).
        this.logger.info({ evt: 'listening', listener: name, address, port: this.boundPort, role: this.cfg.role, security: this.cfg.security, uid: process.geteuid?.() }, 'listening');
        warnWithoutQuickAck(this.logger);
        this.startSweeper();
        resolve();
      });
    });
  }

  /** Slow clients (src/smtp/connection.ts): each command line within limits.idleTimeout. */
  private startSweeper(): void {
    const limit = this.idleTimeoutMs;
    this.sweeper = setInterval(() => {
      const cut = this.server.sweep(limit, 'command_timeout');
      if (cut > 0) this.logger.info({ evt: 'rejection', listener: this.cfg.name, stage: 'command', reply: 'command_timeout', clients: cut }, 'slow clients disconnected');
    }, Math.max(50, Math.min(1000, Math.floor(limit / 4))));
    this.sweeper.unref();
  }

  close(): Promise<void> {
    clearInterval(this.sweeper);
    // Bound but never listening: the server does not own the socket yet.
    if (this.socket && !this.server.netServer.listening) {
      this.socket.close();
      this.socket = undefined;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
