/**
 * Readiness probes that test what they claim: "spool writable" means a file
 * can be created, written, synced and removed in spool/tmp right now (an
 * access(2) check says yes to root even on a read-only or broken tree, and
 * says nothing when tmp/ is not a directory any more).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log';
import { onJournalSkippedBytes } from '../spool/journal';
import { injectedFault, storageHealth, type StorageFile } from '../spool/storage-faults';
import type { MetricsCatalogue } from './catalogue';

/**
 * undefined when writable, else the reason (for /readyz). `where`: journal
 * probes the acceptance journal's directory (after a journal write failed).
 */
export async function spoolWriteProbe(spoolDir: string, where: StorageFile = 'queue'): Promise<string | undefined> {
  const dir = path.join(spoolDir, where === 'journal' ? 'journal' : 'tmp');
  const file = path.join(dir, `.readyz-${process.pid}-${randomBytes(4).toString('hex')}`);
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(file, 'wx', 0o600);
    // Through the spool's fault seam, so an injected fault turns the probe red like a real one.
    const writeFault = injectedFault(where, 'write');
    if (writeFault) throw writeFault;
    await fh.writeFile('ok');
    const syncFault = injectedFault(where, 'sync');
    if (syncFault) throw syncFault;
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fsp.unlink(file);
    return undefined;
  } catch (err) {
    await fh?.close().catch(() => undefined);
    const e = err as NodeJS.ErrnoException;
    return `${dir} not writable (${e.code ?? e.message})`;
  } finally {
    // Also after a failed write: no probe file is left behind.
    await fsp.unlink(file).catch(() => undefined);
  }
}

/** How often a gateway whose spool writes failed checks whether they work again. */
const STORAGE_PROBE_MS = 2000;

/**
 * The spool's storage health, watched: each failed write or sync
 * (storage-faults.ts) counted and logged, and a probe for /readyz. After a
 * failure the gateway is not ready until a probe or a commit succeeds; the
 * probe then also runs every few seconds by itself, so the gateway recovers
 * when space returns without anyone asking /readyz.
 */
export function watchSpoolStorage(
  spoolDir: string,
  counters: Pick<MetricsCatalogue, 'storageErrors' | 'journalSkippedBytes'>,
  logger: Logger,
): { probe: () => Promise<string | undefined>; stop: () => void } {
  const probe = async (): Promise<string | undefined> => {
    const fault = storageHealth.current();
    const failure = (await spoolWriteProbe(spoolDir)) ?? (fault?.file === 'journal' ? await spoolWriteProbe(spoolDir, 'journal') : undefined);
    if (!failure && fault) {
      logger.info({ evt: 'recovery', code: fault.code, file: fault.file, op: fault.op, downMs: Date.now() - fault.since }, 'spool storage writable again');
      storageHealth.succeeded();
    }
    return failure;
  };
  const unwatch = [
    storageHealth.onFailure((file, op, code) => {
      counters.storageErrors.inc({ file, op, code });
      logger.error({ evt: 'error', file, op, code }, 'spool storage failed: answering 4xx to new mail until a write succeeds');
    }),
    onJournalSkippedBytes((bytes) => counters.journalSkippedBytes.inc(bytes)),
  ];
  const timer = setInterval(() => {
    if (storageHealth.current()) void probe();
  }, STORAGE_PROBE_MS);
  timer.unref();
  return {
    probe,
    stop() {
      clearInterval(timer);
      for (const u of unwatch) u();
    },
  };
}
