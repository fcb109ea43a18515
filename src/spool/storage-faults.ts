/**
 * The spool's storage health, and the test seam that breaks it.
 *
 * Every write and sync of a journal segment or queue file reports its
 * failure here: the gateway is then "degraded" (/readyz red, the
 * smarthost_spool_storage_degraded gauge, an alert) until a write and sync
 * succeed again (the next commit, or a probe every few seconds), so it
 * recovers by itself when space returns. New mail meanwhile gets the 4xx
 * of its own failed commit (452 4.3.1 for a full disk, 451 4.3.0 for EIO).
 *
 * The seam: tests set an injector that makes a given write or fdatasync
 * fail with EIO or ENOSPC (a failed write first writes half of its bytes,
 * as a nearly full disk does: a torn record). Nothing sets it in production.
 */
export type StorageFile = 'journal' | 'queue';
export type StorageOp = 'write' | 'sync';
export type FaultInjector = (file: StorageFile, op: StorageOp) => string | undefined;

/** Error codes kept as metric label values; anything else is "other". */
const KNOWN_CODES = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS']);

let injector: FaultInjector | undefined;

/** Test seam: make storage calls fail (undefined: stop). */
export function injectStorageFaults(fn: FaultInjector | undefined): void {
  injector = fn;
}

/** Throws the injected error for this call, if any. */
export function injectedFault(file: StorageFile, op: StorageOp): NodeJS.ErrnoException | undefined {
  const code = injector?.(file, op);
  if (!code) return undefined;
  const e = new Error(`${code}: injected ${op} fault on a ${file} file`) as NodeJS.ErrnoException;
  e.code = code;
  return e;
}

export interface StorageFault {
  file: StorageFile;
  op: StorageOp;
  code: string;
  since: number;
}

type Listener = (file: StorageFile, op: StorageOp, code: string) => void;

/** One per process: the spool and the journal share the disk. */
export class StorageHealth {
  private fault: StorageFault | undefined;
  private readonly listeners: Listener[] = [];

  failed(file: StorageFile, op: StorageOp, err: unknown): void {
    const raw = (err as NodeJS.ErrnoException | undefined)?.code;
    const code = raw && KNOWN_CODES.has(raw) ? raw : 'other';
    this.fault ??= { file, op, code, since: Date.now() };
    for (const l of this.listeners) l(file, op, code);
  }

  /** A write and sync went through: the disk works again. */
  succeeded(): void {
    this.fault = undefined;
  }

  current(): StorageFault | undefined {
    return this.fault;
  }

  /** Returns the unsubscribe. */
  onFailure(l: Listener): () => void {
    this.listeners.push(l);
    return () => this.listeners.splice(this.listeners.indexOf(l), 1);
  }
}

export const storageHealth = new StorageHealth();
