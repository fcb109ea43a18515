/**
 * Fleet test helpers: a gateway process configured for a shared Redis, its
 * admin API, and one SMTP transaction over a RawSmtp connection.
 */
import { promises as fsp } from 'node:fs';
import { prepareGateway, type GatewaySpec } from '../helpers/gateway';
import { freePort, spawnGateway, type GatewayProcess } from '../helpers/process';
import { authPlain, message, RawSmtp } from '../helpers/smtp-client';

export const ADMIN_TOKEN = 'fleet-admin-token';

export interface FleetNode {
  readonly name: string;
  readonly dir: string;
  readonly intercept: number;
  readonly submission: number;
  readonly adminPort: number;
  proc: GatewayProcess;
  api(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }>;
  stop(): Promise<void>;
}

export interface NodeSpec {
  readonly name: string;
  readonly state: Record<string, unknown>;
  readonly policyFiles?: Record<string, string>;
  readonly relay: Record<string, unknown>;
  readonly netblocks?: GatewaySpec['netblocks'];
  /** Extra keys on the intercept listener (e.g. proxyFrom). */
  readonly intercept?: Record<string, unknown>;
  /** Extra top-level config (e.g. process: { workers: 2 }). */
  readonly config?: Record<string, unknown>;
}

export async function startNode(spec: NodeSpec): Promise<FleetNode> {
  const intercept = await freePort();
  const submission = await freePort();
  const adminPort = await freePort();
  const { dir, configFile } = await prepareGateway({
    netblocks: spec.netblocks,
    policyFiles: spec.policyFiles,
    config: {
      listeners: [
        { name: 'submission', role: 'submission', address: '127.0.0.1', port: submission, security: 'starttls' },
        { name: 'intercept', role: 'intercept', address: '127.0.0.1', port: intercept, security: 'none', greetDelay: '0ms', ...spec.intercept },
      ],
      admin: { address: '127.0.0.1', port: adminPort, token: ADMIN_TOKEN },
      relay: spec.relay,
      state: spec.state,
      ...spec.config,
    },
  });
  const proc = await spawnGateway(configFile, adminPort);
  const node: FleetNode = {
    name: spec.name,
    dir,
    intercept,
    submission,
    adminPort,
    proc,
    async api(method, path, body) {
      const r = await fetch(`http://127.0.0.1:${adminPort}${path}`, {
        method,
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    },
    async stop() {
      await node.proc.kill('SIGTERM');
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
  return node;
}

/** An intercept connection from `ip`, greeted and EHLO'd. */
export async function interceptClient(port: number, ip: string): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port, { localAddress: ip });
  const greet = await c.reply();
  if (greet.code !== 220) throw new Error(`greeting from ${ip}: ${greet.text}`);
  await c.cmd('EHLO client.test');
  return c;
}

/** A submission connection: STARTTLS, AUTH PLAIN; returns the AUTH reply too. */
export async function submissionClient(port: number, ip: string, user: string, pass: string): Promise<{ c: RawSmtp; auth: string }> {
  const c = await RawSmtp.connect(port, { localAddress: ip });
  await c.reply();
  await c.cmd('EHLO client.test');
  await c.starttls();
  await c.cmd('EHLO client.test');
  const auth = await c.cmd(`AUTH PLAIN ${authPlain(user, pass)}`);
  return { c, auth: auth.text };
}

/**
 * One transaction. Returns the first refusal ("451 4.7.1 ...") or the final
 * DATA reply ("250 2.0.0 Ok: queued as ...").
 */
export async function send(c: RawSmtp, from: string, to: string, headers: string[] = []): Promise<string> {
  const m = await c.cmd(`MAIL FROM:<${from}>`);
  if (m.code !== 250) return m.text;
  const r = await c.cmd(`RCPT TO:<${to}>`);
  if (r.code !== 250) {
    await c.cmd('RSET');
    return r.text;
  }
  const d = await c.data(message({ from, to, headers }));
  return d.text;
}

export async function eventually<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
