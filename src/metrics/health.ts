/**
 * Readiness probes that test what they claim: "spool writable" means a file
 * can be created, written, synced and removed in spool/tmp right now (an
 * access(2) check says yes to root even on a read-only or broken tree, and
 * says nothing when tmp/ is not a directory any more).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';

/** undefined when writable, else the reason (for /readyz). */
export async function spoolWriteProbe(spoolDir: string): Promise<string | undefined> {
  const file = path.join(spoolDir, 'tmp', `.readyz-${process.pid}-${randomBytes(4).toString('hex')}`);
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(file, 'wx', 0o600);
    await fh.writeFile('ok');
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fsp.unlink(file);
    return undefined;
  } catch (err) {
    await fh?.close().catch(() => undefined);
    const e = err as NodeJS.ErrnoException;
    return `${path.join(spoolDir, 'tmp')} not writable (${e.code ?? e.message})`;
  } finally {
    if (fh === undefined) await fsp.unlink(file).catch(() => undefined);
  }
}
