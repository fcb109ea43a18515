/**
 * The admin HTTP listener (loopback by default):
 *   GET  /healthz            alive
 *   GET  /readyz             listeners bound, spool writable, registered checks; 503 + reasons otherwise
 *                            (warnOnly checks are listed under `warnings` and never fail it)
 *   GET  /metrics            Prometheus exposition (registered by src/metrics)
 *   /api/...                 operator actions, bearer token required
 * Routes are registered by the modules that own them (queue, accounts,
 * policy), so this file knows HTTP and nothing about mail.
 */
import http from 'node:http';
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

interface Route {
  method: string;
  pattern: RegExp;
  keys: string[];
  handler: Handler;
}

export class AdminServer {
  private readonly routes: Route[] = [];
  private readonly readyChecks: Array<{ name: string; check: ReadyCheck; warnOnly?: boolean }> = [];
  private metricsProvider: (() => Promise<{ contentType: string; body: string }>) | undefined;
  private server: http.Server | undefined;
  private boundPort = 0;
  private socket: BoundSocket | undefined;

  constructor(
    private readonly opts: { address: string; port: number; token: string; logger: Logger },
  ) {}

  /** `path` like /api/queue/:id/hold */
  route(method: string, path: string, handler: Handler): void {
    const keys: string[] = [];
    const pattern = new RegExp(`^${path.replace(/:([a-z]+)/g, (_m, k: string) => (keys.push(k), '([^/]+)'))}$`);
    this.routes.push({ method, pattern, keys, handler });
  }

  /** A readiness check; `warnOnly`: reported in /readyz but never makes it fail (a degraded but serving part). */
  readiness(name: string, check: ReadyCheck, opts: { warnOnly?: boolean } = {}): void {
    this.readyChecks.push({ name, check, warnOnly: opts.warnOnly });
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
    this.server = http.createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', (err: NodeJS.ErrnoException) =>
        reject(new Error(`admin listener: cannot bind ${this.opts.address}:${this.opts.port}: ${bindHint(err.code ?? err.message)}`)),
      );
      this.server!.listen(this.socket as never, () => resolve());
    });
    const a = this.server.address();
    this.boundPort = typeof a === 'object' && a ? a.port : this.opts.port;
    this.opts.logger.info({ evt: 'listening', listener: 'admin', address: this.opts.address, port: this.boundPort, uid: process.geteuid?.() }, 'admin listening');
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

  private authorised(req: http.IncomingMessage): boolean {
    const h = req.headers.authorization ?? '';
    const m = /^Bearer (.+)$/.exec(h);
    if (!m) return false;
    const given = Buffer.from(m[1]!);
    const want = Buffer.from(this.opts.token);
    return given.length === want.length && timingSafeEqual(given, want);
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
      if (!url.pathname.startsWith('/api/')) return send(404, { error: 'not found' });
      if (!this.authorised(req)) return send(401, { error: 'missing or wrong bearer token' });
      for (const r of this.routes) {
        if (r.method !== req.method) continue;
        const m = r.pattern.exec(url.pathname);
        if (!m) continue;
        const params: Record<string, string> = {};
        r.keys.forEach((k, i) => (params[k] = decodeURIComponent(m[i + 1]!)));
        const body = req.method === 'POST' || req.method === 'PUT' ? await readJson(req) : undefined;
        const out = await r.handler({ method: req.method, path: url.pathname, params, query: url.searchParams, body });
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
