/**
 * What the security scenarios share: /proc readings of a spawned gateway
 * (RSS, open fds, children), a policy file that lifts the per-address
 * volume quotas (so load tests measure the gateway, not the plan), and a
 * one-message sender.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { message, RawSmtp } from '../helpers/smtp-client';
export { childPids, rssMb } from '../helpers/process';

export const OPEN_QUOTAS = `
plans:
  open: {}
defaultPlan: open
classPlans:
  residential-dynamic: open
defaultClassPlan: open
`;

export function procStatus(pid: number, field: string): string {
  const m = new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? m[1]!.trim() : '';
}

export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One message over one connection; the final reply code (0: connection failed). */
export async function sendOne(port: number, opts: { ip: string; from: string; to: string; headers?: string[]; body?: string }): Promise<number> {
  let c: RawSmtp | undefined;
  try {
    c = await RawSmtp.connect(port, { localAddress: opts.ip });
    const g = await c.reply(5000);
    if (g.code !== 220) return g.code;
    await c.cmd('EHLO sec.test');
    const m = await c.cmd(`MAIL FROM:<${opts.from}>`);
    if (m.code !== 250) return m.code;
    const r = await c.cmd(`RCPT TO:<${opts.to}>`);
    if (r.code !== 250) return r.code;
    return (await c.data(message({ from: opts.from, to: opts.to, headers: opts.headers, body: opts.body }))).code;
  } catch {
    return 0;
  } finally {
    c?.close();
  }
}
