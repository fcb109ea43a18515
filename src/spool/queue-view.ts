/**
 * The queue as the operator sees it (`queue list`, the admin API, the
 * console, metrics): read from the spool's files, never from the queue
 * manager's memory, so every process's messages show.
 */
import { promises as fsp } from 'node:fs';
import { QUEUE_STATES, type QueueId, type QueueState, type RecipientState } from '../envelope';
import type { Spool } from './store';

export interface QueueEntry {
  id: QueueId;
  state: QueueState;
  size: number;
  receivedAt: number;
  mailFrom: string;
  recipients: RecipientState[];
  attempts: number;
  nextAttemptAt?: number;
  lastError?: string;
  /** The enhanced status of the deferral that wrote lastError (each recipient has its own: lastStatus). */
  lastStatus?: string;
  holdReason?: string;
}

/** Everything in the spool, state by state. */
export async function listQueue(spool: Spool): Promise<QueueEntry[]> {
  const out: QueueEntry[] = [];
  for (const state of QUEUE_STATES) {
    for (const id of await spool.list(state)) {
      const e = await queueEntry(spool, id, state);
      if (e) out.push(e);
    }
  }
  return out;
}

export async function queueEntry(spool: Spool, id: QueueId, state?: QueueState): Promise<QueueEntry | undefined> {
  const st = state ?? (await spool.locate(id));
  if (!st) return undefined;
  try {
    const msg = await spool.read(id, st);
    const ds = await spool.readState(id);
    return {
      id,
      state: st,
      size: msg.fileSize - msg.dataOffset,
      receivedAt: msg.envelope.receivedAt,
      mailFrom: msg.envelope.mailFrom,
      recipients: ds?.recipients ?? msg.envelope.recipients.map((address) => ({ address, status: 'pending' as const })),
      attempts: ds?.attempts ?? 0,
      nextAttemptAt: ds?.nextAttemptAt,
      lastError: ds?.lastError,
      lastStatus: ds?.lastStatus,
      holdReason: msg.envelope.holdReason,
    };
  } catch {
    return undefined; // moved or removed while we looked
  }
}

/** The age in ms of the oldest message waiting (incoming, deferred, hold), by its file's time; 0 when none. */
export async function oldestAgeMs(spool: Spool, now: () => number): Promise<number> {
  let oldest = Infinity;
  for (const state of ['incoming', 'deferred', 'hold'] as const) {
    const ids = await spool.list(state);
    if (ids.length > 0) {
      const st = await fsp.stat(spool.pathOf(state, ids[0]!)).catch(() => undefined);
      if (st) oldest = Math.min(oldest, st.mtimeMs);
    }
  }
  return oldest === Infinity ? 0 : now() - oldest;
}
