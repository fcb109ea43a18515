/**
 * V8's heap sized for a long-running gateway rather than a short script.
 *
 * Old generation: by default V8 lets it grow to 2-4× what the last full
 * collection left alive before collecting again; a gateway's live heap is
 * small and steady (sessions in flight, queue index, policy state), so that
 * headroom was most of its memory under load. 1.5× keeps the peak close to
 * what is alive, at the price of more (mostly concurrent) full collections.
 *
 * New generation: V8 grows each semi-space up to 16 MB (32 MB of new space,
 * touched in full under load). Capped at SEMI_SPACE_MB: more scavenges (each
 * costs the survivors, i.e. the sessions in flight, not the garbage).
 *
 * Figures (peers harness relay job) and the trade-off: docs/performance.md.
 *
 * Set at run time, before the gateway is built: `smarthost start` is run as
 * `node …/main.js start` (no place for node flags). V8 reads both flags
 * afresh when it uses them (the growing factor at each full collection, the
 * semi-space growth factor each time new space grows), so the cap is a
 * growth factor of 1 once new space reached its size, set again after each
 * collection. An operator's own flags (NODE_OPTIONS or node's command line)
 * are left as they are.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';

export const HEAP_GROWING_PERCENT = 50;
export const SEMI_SPACE_MB = 4;

function operatorSets(flag: RegExp): boolean {
  return [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => flag.test(a));
}

/** Let new space grow (V8's factor 2) until it holds two SEMI_SPACE_MB semi-spaces, then not. */
function capNewSpace(): void {
  const cap = 2 * SEMI_SPACE_MB * 1024 * 1024;
  let factor = 0;
  const clamp = (): void => {
    const size = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
    const want = size >= cap ? 1 : 2;
    if (want !== factor) setFlagsFromString(`--semi-space-growth-factor=${(factor = want)}`);
  };
  clamp();
  new PerformanceObserver(clamp).observe({ entryTypes: ['gc'] });
}

export function sizeHeapForServer(): void {
  if (!operatorSets(/^--heap[-_]growing[-_]percent/)) setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  if (!operatorSets(/^--(max|min)[-_]semi[-_]space[-_]size|^--semi[-_]space[-_]growth[-_]factor/)) capNewSpace();
}
