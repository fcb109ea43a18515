/**
 * The admin HTTP listener (loopback by default):
 *   GET  /healthz            alive
 *   GET  /readyz             listeners bound, spool writable, registered checks; 503 + reasons otherwise
 *                            (warnOnly checks are listed under `warnings` and never fail it)
 *   GET  /metrics            Prometheus exposition (registered by src/metrics)
 *   /console/...             the abuse desk's web console when mounted (src/console: its own
 *                            sessions, logged in with one of the same two tokens)
 *   /api/...                 bearer token required: the operator token for every route, the
 *                            read-only token (NOC) for the views only; a route that changes
 *                            anything is 'operate' (every non-GET unless registered 'read')
 * Every 'operate' call, done or refused, is told to the auditor (src/admin/audit.ts).
 * Over TLS when given a certificate (src/admin/config.ts decides when it must be).
 * Routes are registered by the modules that own them (queue, accounts,
 * policy), so this file knows HTTP and nothing about mail.
 */
import http from 'node:http';
import https from 'node:https';
import { timingSafeEqual } from 'node:crypto';
import type { Logger } from '../log';
import { bindHint, bindSocket, type BindError, type BoundSocket } from '../net/bound-socket';

export type ReadyCheck = () => Promise<string | undefined>;

export interface ApiRequest {
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
}

export interface ApiResponse {
  status: number;
  body: unknown;
}

type Handler = (req: ApiRequest) => Promise<ApiResponse>;

/** An /api call that changes state (or was refused for the read-only token), for the audit log. */
export interface OperateCall {
  role: Access;
  method: string;
  /** The route's pattern (/api/queue/:id/:op): a bounded name. */
  route: string;
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
  status: number;
}

/** A sub-application served under a path prefix (the console), with the raw request. */
export type MountHandler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => Promise<void>;

/** 'read': views (queue, policy, containment, grants, fleet); 'operate': anything that changes state. */
export type Access = 'read' | 'operate';

interface Route {
  method: string;
  pattern: RegExp;
  path: string;
  keys: string[];
  handler: Handler;
  access: Access;
}

export class AdminServer {
  private readonly routes: Route[] = [];
  private readonly readyChecks: Array<{ name: string; check: ReadyCheck; warnOnly?: boolean }> = [];
  private mounted: { prefix: string; handler: MountHandler } | undefined;
  private auditor: ((call: OperateCall) => Promise<void>) | undefined;
  private metricsProvider: (() => Promise<{ contentType: string; body: string }>) | undefined;
  private server: http.Server | https.Server | undefined;
  private boundPort = 0;
  private socket: BoundSocket | undefined;

  constructor(
    private readonly opts: {
      address: string;
      port: number;
      /** The operator token. */
      token: string;
      /** The read-only token, if any. */
      readToken?: string;
      tls?: { cert: string | Buffer; key: string | Buffer };
      logger: Logger;
    },
  ) {}

  /**
   * `path` like /api/queue/:id/hold. `access` defaults to 'read' for GET and
   * 'operate' for everything else: a POST that only reads (policy explain)
   * says 'read' explicitly.
   */
  route(method: string, path: string, handler: Handler, access: Access = method === 'GET' ? 'read' : 'operate'): void {
    const keys: string[] = [];
    const pattern = new RegExp(`^${path.replace(/:([a-z]+)/g, (_m, k: string) => (keys.push(k), '([^/]+)'))}$`);
    this.routes.push({ method, path, pattern, keys, handler, access });
  }

  /** Every /api route and who may call it (docs, and the tests that hold every mutating route to the operator). */
  routeTable(): Array<{ method: string; path: string; access: Access }> {
    return this.routes.map(({ method, path, access }) => ({ method, path, access }));
  }

  /** Whether the API is served over TLS. */
  get secure(): boolean {
    return this.opts.tls !== undefined;
  }

  /** A renewed certificate for new connections (reload); throws on a broken pair, keeping the one in use. */
  updateTls(tls: { cert: string | Buffer; key: string | Buffer }): void {
    if (this.server instanceof https.Server) this.server.setSecureContext(tls);
  }

  /** A readiness check; `warnOnly`: reported in /readyz but never makes it fail (a degraded but serving part). */
  readiness(name: string, check: ReadyCheck, opts: { warnOnly?: boolean } = {}): void {
    this.readyChecks.push({ name, check, warnOnly: opts.warnOnly });
  }

  /** Told of every 'operate' call, done or refused, after it answered (src/admin/audit.ts). */
  audit(auditor: (call: OperateCall) => Promise<void>): void {
    this.auditor = auditor;
  }

  /** Serve `prefix` and everything under it with `handler` (one mount: the console). */
  mount(prefix: string, handler: MountHandler): void {
    this.mounted = { prefix, handler };
  }

  metrics(provider: () => Promise<{ contentType: string; body: string }>): void {
    this.metricsProvider = provider;
  }

  get port(): number {
    return this.boundPort;
  }

  /** Reserve the admin address before the privilege drop; listen() serves, after it. */
  async bind(): Promise<void> {
    if (this.socket) return;
    const { address, port } = this.opts;
    try {
      this.socket = await bindSocket(address, port);
    } catch (err) {
      throw new Error(`admin listener: cannot bind ${address}:${port}: ${bindHint((err as BindError).code ?? (err as Error).message)}`);
    }
  }

  async listen(): Promise<void> {
    await this.bind();
    const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => void this.handle(req, res);
    this.server = this.opts.tls ? https.createServer({ ...this.opts.tls, minVersion: 'TLSv1.2' }, onRequest) : http.createServer(onRequest);
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', (err: NodeJS.ErrnoException) =>
        reject(new Error(`admin listener: cannot bind ${this.opts.address}:${this.opts.port}: ${bindHint(err.code ?? err.message)}`)),
      );
      this.server!.listen(this.socket as never, () => resolve());
    });
    const a = this.server.address();
    this.boundPort = typeof a === 'object' && a ? a.port : this.opts.port;
    this.opts.logger.info({ evt: 'listening', listener: 'admin', address: this.opts.address, port: this.boundPort, tls: this.secure, uid: process.geteuid?.() }, 'admin listening');
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server) {
        this.socket?.close();
        this.socket = undefined;
        return resolve();
      }
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  /** Which token the request carries: the operator's, the read-only one, or none. */
  private access(req: http.IncomingMessage): Access | undefined {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    return m ? this.tokenAccess(m[1]!) : undefined;
  }

  /** What a token may do: 'operate', 'read', or undefined for none (compared in constant time). */
  tokenAccess(token: string): Access | undefined {
    const given = Buffer.from(token);
    const is = (token: string | undefined) => {
      if (!token) return false;
      const want = Buffer.from(token);
      return given.length === want.length && timingSafeEqual(given, want);
    };
    if (is(this.opts.token)) return 'operate';
    if (is(this.opts.readToken)) return 'read';
    return undefined;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const send = (status: number, body: unknown, type = 'application/json') => {
      res.writeHead(status, { 'content-type': type });
      res.end(typeof body === 'string' ? body : JSON.stringify(body, null, 2));
    };
    try {
      if (req.method === 'GET' && url.pathname === '/healthz') return send(200, 'ok\n', 'text/plain');
      if (req.method === 'GET' && url.pathname === '/readyz') {
        const failures: string[] = [];
        const warnings: string[] = [];
        for (const c of this.readyChecks) {
          const why = await c.check().catch((e: Error) => e.message);
          if (why) (c.warnOnly ? warnings : failures).push(`${c.name}: ${why}`);
        }
        const warned = warnings.length ? { warnings } : {};
        return failures.length ? send(503, { ready: false, failures, ...warned }) : send(200, { ready: true, ...warned });
      }
      if (req.method === 'GET' && url.pathname === '/metrics') {
        if (!this.metricsProvider) return send(404, 'metrics not enabled\n', 'text/plain');
        const m = await this.metricsProvider();
        return send(200, m.body, m.contentType);
      }
      const mount = this.mounted;
      if (mount && (url.pathname === mount.prefix || url.pathname.startsWith(`${mount.prefix}/`))) return await mount.handler(req, res, url);
      if (!url.pathname.startsWith('/api/')) return send(404, { error: 'not found' });
      const access = this.access(req);
      if (!access) return send(401, { error: 'missing or wrong bearer token' });
      for (const r of this.routes) {
        if (r.method !== req.method) continue;
        const m = r.pattern.exec(url.pathname);
        if (!m) continue;
        const params: Record<string, string> = {};
        r.keys.forEach((k, i) => (params[k] = decodeURIComponent(m[i + 1]!)));
        const audited = (status: number, body?: unknown) =>
          r.access === 'operate' ? this.auditor?.({ role: access, method: r.method, route: r.path, params, query: url.searchParams, body, status }).catch((err: Error) => this.opts.logger.error({ evt: 'error', err: err.message }, 'audit log write failed')) : undefined;
        if (r.access === 'operate' && access !== 'operate') {
          await audited(403);
          return send(403, { error: 'this token may only read: the operator token is needed to change anything' });
        }
        const body = req.method === 'POST' || req.method === 'PUT' ? await readJson(req) : undefined;
        const out = await r.handler({ method: req.method, path: url.pathname, params, query: url.searchParams, body });
        await audited(out.status, body);
        return send(out.status, out.body);
      }
      return send(404, { error: 'no such endpoint' });
    } catch (err) {
      this.opts.logger.error({ evt: 'error', err }, 'admin request failed');
      send(500, { error: (err as Error).message });
    }
  }
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > 1024 * 1024) throw new Error('request body too large');
    chunks.push(c as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  return text ? JSON.parse(text) : {};
}
