/**
 * The state store across the processes of one gateway (no Redis): the
 * primary owns the one in-memory store and answers its workers over the
 * cluster IPC channel, so a quota is one quota however many processes
 * accept mail. Every StateStore operation is one request/response pair and
 * runs atomically in the primary (its event loop serialises them), exactly
 * as one Lua script would in Redis.
 * Talks to: the primary over process.send (worker side); the workers'
 * IPC channels (primary side). Trusts: its own processes only.
 */
import type { Worker } from 'node:cluster';
import type { StateStore } from '../state/store';

const METHODS = ['hit', 'hitMany', 'peekMany', 'undo', 'record', 'count', 'incr', 'get', 'ttl', 'del', 'addToSet', 'setSize'] as const;
type Method = (typeof METHODS)[number];

interface Request {
  t: 'state-req';
  id: number;
  method: Method;
  args: unknown[];
}
interface Response {
  t: 'state-res';
  id: number;
  ok: boolean;
  value?: unknown;
  error?: string;
}

/** Worker side: a StateStore whose every call is answered by the primary. */
export function createIpcStateStore(timeoutMs = 5000): StateStore {
  if (!process.send) throw new Error('the IPC state store needs an IPC channel to the primary');
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  process.on('message', (m: Response) => {
    if (!m || m.t !== 'state-res') return;
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    clearTimeout(p.timer);
    if (m.ok) p.resolve(m.value);
    else p.reject(new Error(m.error ?? 'state store error'));
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
      process.send!({ t: 'state-req', id, method, args } satisfies Request);
    });
  const store: Record<string, unknown> = { kind: 'memory (shared by the primary)', close: async () => undefined };
  for (const m of METHODS) store[m] = (...args: unknown[]) => call(m, args);
  return store as unknown as StateStore;
}

/** Primary side: answer a worker's state requests from the one store. */
export function serveStateStore(worker: Worker, store: StateStore): void {
  worker.on('message', (m: Request) => {
    if (!m || m.t !== 'state-req' || !METHODS.includes(m.method)) return;
    const fn = (store[m.method] as (...a: unknown[]) => Promise<unknown>).bind(store);
    fn(...m.args).then(
      (value) => worker.isConnected() && worker.send({ t: 'state-res', id: m.id, ok: true, value } satisfies Response),
      (err: Error) => worker.isConnected() && worker.send({ t: 'state-res', id: m.id, ok: false, error: err.message } satisfies Response),
    );
  });
}
