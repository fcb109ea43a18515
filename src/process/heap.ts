/**
 * V8's old generation sized for a long-running gateway rather than a
 * short script. By default V8 lets the old generation grow to 2-4× what the
 * last full collection left alive before collecting again; a gateway's live
 * heap is small and steady (sessions in flight, queue index, policy state),
 * so that headroom was most of its memory under load. 1.5× keeps the peak
 * close to what is alive, at the price of more (mostly concurrent) full
 * collections: on the peers harness's relay job, peak PSS 91-110 → 81-82 MiB
 * with CPU per message within the run-to-run noise (docs/performance.md).
 *
 * Set at run time, before the gateway is built: `smarthost start` is run as
 * `node …/main.js start` (no place for node flags), and V8 reads this flag
 * afresh at every full collection. An operator's own --heap-growing-percent
 * (NODE_OPTIONS or node's command line) is left as it is.
 */
import { setFlagsFromString } from 'node:v8';

export const HEAP_GROWING_PERCENT = 50;

export function sizeHeapForServer(): void {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => /^--heap[-_]growing[-_]percent/.test(a));
  if (!given) setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
