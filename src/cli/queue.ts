/**
 * `smarthost queue …` (mailq / postqueue / postsuper): talks to the running
 * gateway's admin API so its schedule stays consistent.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { QueueEntry } from '../spool/qmgr';
import { adminCall, CliError, configFrom } from './common';

/** What the command accepts (usage.ts describes each; a test compares). */
export const QUEUE_OPTIONS = { config: { type: 'string', short: 'c' }, json: { type: 'boolean' } } satisfies ParseArgsConfig['options'];

export async function runQueue(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: QUEUE_OPTIONS,
  });
  const [op, id] = positionals;
  const cfg = configFrom(values, { serving: false });
  const need = (what: string) => {
    if (!id) throw new CliError(`queue ${what} needs a queue id`, 2);
    return id;
  };
  switch (op) {
    case 'list': {
      const r = await adminCall(cfg, 'GET', '/api/queue');
      if (r.status !== 200) throw new CliError(`queue list failed: ${JSON.stringify(r.body)}`);
      const entries = r.body as QueueEntry[];
      if (values.json) process.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
      else process.stdout.write(formatList(entries));
      return 0;
    }
    case 'show': {
      const r = await adminCall(cfg, 'GET', `/api/queue/${encodeURIComponent(need('show'))}`);
      if (r.status !== 200) throw new CliError(`${id}: ${(r.body as { error?: string }).error ?? r.status}`);
      process.stdout.write(`${JSON.stringify(r.body, null, 2)}\n`);
      return 0;
    }
    case 'flush': {
      const r = await adminCall(cfg, 'POST', id ? `/api/queue/${encodeURIComponent(id)}/flush` : '/api/queue/flush');
      if (r.status !== 200) throw new CliError(`flush failed: ${(r.body as { error?: string }).error ?? r.status}`);
      process.stdout.write(`${JSON.stringify(r.body)}\n`);
      return 0;
    }
    case 'delete':
    case 'hold':
    case 'release': {
      const r = await adminCall(cfg, 'POST', `/api/queue/${encodeURIComponent(need(op))}/${op}`);
      if (r.status !== 200) throw new CliError(`${op} ${id}: ${(r.body as { error?: string }).error ?? r.status}`);
      process.stdout.write(`${id}: ${op} done\n`);
      return 0;
    }
    default:
      throw new CliError(op === undefined ? 'queue needs list, show, flush, delete, hold or release' : `unknown queue command "${op}"`, 2);
  }
}

function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

export function formatList(entries: QueueEntry[]): string {
  if (entries.length === 0) return 'Mail queue is empty\n';
  const now = Date.now();
  // STATUS before LAST ERROR: the free text stays the last column, whatever it holds.
  const lines = [['ID', 'STATE', 'SIZE', 'AGE', 'SENDER', 'RECIPIENTS', 'STATUS', 'LAST ERROR'].join('\t')];
  for (const e of entries) {
    const pending = e.recipients.filter((r) => r.status === 'pending').map((r) => r.address);
    lines.push([e.id, e.state, String(e.size), age(now - e.receivedAt), e.mailFrom || '<>', pending.join(','), e.lastStatus ?? '', e.lastError ?? e.holdReason ?? ''].join('\t'));
  }
  return `${lines.join('\n')}\n-- ${entries.length} message(s)\n`;
}
