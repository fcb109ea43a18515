/**
 * Keeps the garbage of a large message's streams at a few MB.
 *
 * Every byte of a spilled message passes through about three short-lived
 * Buffers: the socket read (src/smtp/data-reader.ts passes on slices of
 * it), the DKIM pass over the spill file
 * and the relay's read of the queue file (the spool copy reuses one buffer).
 * V8 frees young ArrayBuffers only in a scavenge, and starts one for their
 * sake only when they add up to twice its default maximum semi-space: 32 MB
 * (Heap::AllocateExternalBackingStore; --max-semi-space-size does not move
 * it, measured on Node 20). Streaming allocates too few JS objects to
 * trigger a scavenge any other way, so any large message raised the
 * gateway's peak RSS by 36–39 MB, whatever its size: Buffers waiting to be
 * collected, whose pages glibc then kept (test/e2e/large-message.test.ts).
 *
 * Those streams report their chunks here (small messages never do: the hot
 * path is unchanged) and every 4 MB reported a young-generation GC runs:
 * 0.3–0.5 ms each, 25 of them for a 25 MB message (7–14 ms of its
 * 300–400 ms of CPU). Peak RSS growth: 2–4 MB for a 25 or 48 MB message,
 * 8–9 MB for the first large message of a process (which also grows V8's
 * heap and glibc's). Every 2 MB: 5–6 MB for the first, twice the scavenges.
 *
 * V8's gc() exists only with --expose-gc; set at run time, the flag exposes
 * it to a new context (what Jest does for --logHeapUsage). Where that fails
 * nothing breaks: the 32 MB window simply stays.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Bytes of short-lived chunks between two young-generation collections. */
export const RECLAIM_EVERY = 4 * 1024 * 1024;

type Gc = (opts: { type: 'minor' | 'major' }) => void;

let gc: Gc | undefined | null = null; // null: not looked up yet
let pending = 0;

function youngGc(): Gc | undefined {
  if (gc === null) {
    try {
      setFlagsFromString('--expose-gc');
      const fn: unknown = runInNewContext('typeof gc === "function" ? gc : undefined');
      gc = typeof fn === 'function' ? (fn as Gc) : undefined;
    } catch {
      gc = undefined;
    }
  }
  return gc;
}

/** Count `bytes` of a large message's short-lived chunks; collect them every RECLAIM_EVERY. */
export function reclaim(bytes: number): void {
  pending += bytes;
  if (pending < RECLAIM_EVERY) return;
  pending = 0;
  youngGc()?.({ type: 'minor' });
}
