/**
 * The admin audit log: one JSON line per action of the console or the admin
 * API (who by token name, when, what, on which message or sender, with the
 * reason), and per attempt refused to the read-only token; appended and
 * fsync'ed before the console's page answers, so an acknowledged action is
 * on disk. Counted in smarthost_admin_actions_total.
 */
import { promises as fsp } from 'node:fs';
import type { Counter } from 'prom-client';
import type { Access, OperateCall } from './server';

export interface AuditEntry {
  readonly at: string;
  /** The token's name: operator, or read (a refused attempt). */
  readonly token: 'operator' | 'read';
  readonly action: string;
  /** A queue id, "account:NAME", "ip:ADDR", or "policy". */
  readonly subject: string;
  readonly reason?: string;
  /** Whether it was done (false: refused or nothing to act on). */
  readonly ok: boolean;
  readonly detail?: string;
}

/** How much of the file's end the console reads to show the newest entries. */
const TAIL_BYTES = 256 * 1024;

export class AuditLog {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(readonly file: string, private readonly counter?: Counter<'action' | 'token'>, private readonly clock: () => number = Date.now) {}

  /** Appends one entry durably (writes are serialised: lines never interleave). */
  record(e: { role: Access; action: string; subject: string; reason?: string; ok: boolean; detail?: string }): Promise<void> {
    const entry: AuditEntry = {
      at: new Date(this.clock()).toISOString(),
      token: e.role === 'operate' ? 'operator' : 'read',
      action: e.action,
      subject: e.subject,
      ...(e.reason ? { reason: e.reason } : {}),
      ok: e.ok,
      ...(e.detail ? { detail: e.detail } : {}),
    };
    const write = async () => {
      const fh = await fsp.open(this.file, 'a', 0o600);
      try {
        await fh.write(`${JSON.stringify(entry)}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      this.counter?.inc({ action: e.action, token: entry.token });
    };
    const p = this.chain.then(write);
    this.chain = p.catch(() => undefined);
    return p;
  }

  /** The newest entries first (at most `n`). */
  async newest(n: number): Promise<AuditEntry[]> {
    let fh;
    try {
      fh = await fsp.open(this.file, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    try {
      const { size } = await fh.stat();
      const start = Math.max(0, size - TAIL_BYTES);
      const buf = Buffer.alloc(size - start);
      await fh.read(buf, 0, buf.length, start);
      const lines = buf.toString('utf8').split('\n').filter(Boolean);
      if (start > 0) lines.shift(); // cut mid-line
      const out: AuditEntry[] = [];
      for (const l of lines.reverse().slice(0, n)) {
        try {
          out.push(JSON.parse(l) as AuditEntry);
        } catch {
          // a torn last line after a crash: skip it
        }
      }
      return out;
    } finally {
      await fh.close();
    }
  }
}

/** An /api call as an audit entry: the route pattern is the action (bounded), the message or sender its subject. */
export function apiAuditEntry(call: OperateCall): { role: Access; action: string; subject: string; reason?: string; ok: boolean; detail: string } {
  const b = call.body !== null && typeof call.body === 'object' ? (call.body as Record<string, unknown>) : {};
  const text = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const subject =
    call.params.id ??
    (call.params.name ? `account:${call.params.name}` : undefined) ??
    (call.query.get('account') ? `account:${call.query.get('account')}` : undefined) ??
    (call.query.get('ip') ? `ip:${call.query.get('ip')}` : undefined) ??
    (text(b.account) ? `account:${text(b.account)}` : text(b.user) ? `account:${text(b.user)}` : text(b.ip) ? `ip:${text(b.ip)}` : '');
  const op = call.params.op ? ` ${call.params.op}` : '';
  return {
    role: call.role,
    action: `${call.method} ${call.route}`,
    subject,
    ...(text(b.reason) ? { reason: text(b.reason) } : {}),
    ok: call.status < 400,
    detail: `api${op}: HTTP ${call.status}`,
  };
}
