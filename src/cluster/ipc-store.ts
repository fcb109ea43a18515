/**
 * The state store across the processes of one gateway (no Redis): the
 * primary owns the one in-memory store and answers its workers over the
 * cluster IPC channel, so a quota is one quota however many processes
 * accept mail. Every StateStore operation is one request/response pair and
 * runs atomically in the primary (its event loop serialises them), exactly
 * as one Lua script would in Redis.
 *
 * Requests made in the same event-loop turn travel as one IPC message, and
 * so do the answers: a message costs six state operations (connection count
 * up and down, open connections, hourly peek, two counts), and one message
 * each way per operation made one gateway process per core slower than a
 * single process (bench full-procs, CPU per message).
 *
 * The console's record of an accepted message (src/console/activity.ts:
 * five operations, each waiting for the one before) runs in the primary:
 * the worker hands it over in its next batch and waits for no answer; the
 * primary's app records it (App.recordActivity).
 * Five round trips per message, one after the other, were more than half
 * of the IPC messages and primary wake-ups of the peers relay job
 * (docs/performance.md).
 * Talks to: the primary over process.send (worker side); the workers'
 * IPC channels (primary side). Trusts: its own processes only.
 */
import type { Worker } from 'node:cluster';
import type { Logger } from '../log';
import { isConnectionKey, type Subject } from '../state/keys';
import type { StateStore } from '../state/store';

const METHODS = ['hit', 'hitMany', 'peekMany', 'undo', 'record', 'count', 'incr', 'get', 'ttl', 'del', 'addToSet', 'setSize', 'rank', 'top', 'turn', 'setUntil', 'getUntil'] as const;
type Method = (typeof METHODS)[number];

interface Request {
  id: number;
  method: Method;
  args: unknown[];
}
interface Response {
  id: number;
  ok: boolean;
  value?: unknown;
  error?: string;
}
/** An accepted message for the console's sender activity (recordActivity), answered by nobody. */
interface Activity {
  s: Subject;
  recipients: readonly string[];
  now: number;
}
interface RequestBatch {
  t: 'state-req';
  reqs: Request[];
  acts: Activity[];
}
interface ResponseBatch {
  t: 'state-res';
  res: Response[];
}

/** Collects items during one event-loop turn and hands them over together. */
function batcher<T>(flush: (items: T[]) => void): (item: T) => void {
  let items: T[] = [];
  return (item) => {
    items.push(item);
    if (items.length > 1) return;
    setImmediate(() => {
      const out = items;
      items = [];
      flush(out);
    });
  };
}

export interface IpcState {
  /** A StateStore whose every call is answered by the primary. */
  store: StateStore;
  /** SenderActivity's forward: the primary records it (no answer, no wait). */
  forwardActivity(s: Subject, recipients: readonly string[], now: number): void;
}

/** Worker side: the primary's store, and the activity hand-over, in the same batches. */
export function createIpcStateStore(timeoutMs = 5000): IpcState {
  if (!process.send) throw new Error('the IPC state store needs an IPC channel to the primary');
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  process.on('message', (m: ResponseBatch) => {
    if (!m || m.t !== 'state-res' || !Array.isArray(m.res)) return;
    for (const r of m.res) {
      const p = pending.get(r.id);
      if (!p) continue;
      pending.delete(r.id);
      clearTimeout(p.timer);
      if (r.ok) p.resolve(r.value);
      else p.reject(new Error(r.error ?? 'state store error'));
    }
  });
  const send = batcher<Request | Activity>((items) => {
    const batch: RequestBatch = { t: 'state-req', reqs: [], acts: [] };
    for (const item of items) {
      if ('method' in item) batch.reqs.push(item);
      else batch.acts.push(item);
    }
    process.send!(batch);
  });
  const call = (method: Method, args: unknown[]) =>
    new Promise<unknown>((resolve, reject) => {
      const id = nextId++;
      // A primary that does not answer makes the check fail like any store failure (tempfail), never hang.
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`state store: no answer from the primary within ${timeoutMs} ms`));
      }, timeoutMs);
      pending.set(id, { resolve, reject, timer });
      send({ id, method, args });
    });
  const store: Record<string, unknown> = { kind: 'memory (shared by the primary)', close: async () => undefined };
  for (const m of METHODS) store[m] = (...args: unknown[]) => call(m, args);
  return { store: store as unknown as StateStore, forwardActivity: (s, recipients, now) => send({ s, recipients, now }) };
}

/**
 * Primary side: answer a worker's state requests from the one store. The
 * open-connection counters a worker holds (isConnectionKey) are tallied and
 * given back when it exits: a worker that dies never gets to close its
 * sessions, and its addresses would otherwise stay counted (refused for
 * "too many connections") for as long as they keep connecting.
 */
export function serveStateStore(worker: Worker, store: StateStore, logger: Logger, recordActivity: (s: Subject, recipients: readonly string[], now: number) => Promise<void>): void {
  const answer = batcher<Response>((res) => {
    if (worker.isConnected()) worker.send({ t: 'state-res', res } satisfies ResponseBatch);
  });
  const held = new Map<string, { n: number; ttlMs: number }>();
  worker.once('exit', () => {
    for (const [key, h] of held) if (h.n > 0) void store.incr(key, -h.n, h.ttlMs, Date.now()).catch(() => undefined);
    held.clear();
  });
  worker.on('message', (m: RequestBatch) => {
    if (!m || m.t !== 'state-req' || !Array.isArray(m.reqs)) return;
    // In arrival order: each operation is atomic in this one event loop, as before.
    for (const r of m.reqs) {
      if (!METHODS.includes(r.method)) continue;
      if (r.method === 'incr' && typeof r.args[0] === 'string' && isConnectionKey(r.args[0])) {
        const [key, by, ttlMs] = r.args as [string, number, number];
        const n = (held.get(key)?.n ?? 0) + by;
        if (n === 0) held.delete(key);
        else held.set(key, { n, ttlMs });
      }
      const fn = (store[r.method] as (...a: unknown[]) => Promise<unknown>).bind(store);
      fn(...r.args).then(
        (value) => answer({ id: r.id, ok: true, value }),
        (err: Error) => answer({ id: r.id, ok: false, error: err.message }),
      );
    }
    for (const a of Array.isArray(m.acts) ? m.acts : []) {
      recordActivity(a.s, a.recipients, a.now).catch((err: Error) => logger.error({ evt: 'error', err: err.message }, 'recording sender activity failed'));
    }
  });
}
