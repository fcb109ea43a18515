/**
 * Readiness probes that test what they claim: "spool writable" means a file
 * can be created, written, synced and removed in spool/tmp right now (an
 * access(2) check says yes to root even on a read-only or broken tree, and
 * says nothing when tmp/ is not a directory any more).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { injectedFault, type StorageFile } from '../spool/storage-faults';

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
