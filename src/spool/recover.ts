/**
 * Start-up recovery, run before listeners open: whatever a crash left
 * behind becomes either a committed message or nothing.
 * - tmp/ holds only unacknowledged writes: deleted.
 * - active/ was mid-delivery: back to incoming/ (delivered at least once;
 *   a retry may duplicate, it never loses).
 * - meta/ files with no message: orphans of a finished message, deleted.
 * - a message file whose envelope line cannot be read goes to corrupt/.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log';
import { QUEUE_STATES } from '../envelope';
import type { Spool } from './store';

export interface RecoveryReport {
  tmpRemoved: number;
  activeRequeued: number;
  orphanMetaRemoved: number;
  corrupt: number;
}

export async function recoverSpool(spool: Spool, logger: Logger): Promise<RecoveryReport> {
  const report: RecoveryReport = { tmpRemoved: 0, activeRequeued: 0, orphanMetaRemoved: 0, corrupt: 0 };
  for (const name of await fsp.readdir(path.join(spool.dir, 'tmp'))) {
    await fsp.rm(path.join(spool.dir, 'tmp', name), { force: true, recursive: true });
    report.tmpRemoved++;
  }
  for (const id of await spool.list('active')) {
    await spool.move(id, 'active', 'incoming');
    report.activeRequeued++;
  }
  const present = new Set<string>();
  for (const state of QUEUE_STATES) {
    for (const id of await spool.list(state)) {
      try {
        await spool.read(id, state);
        present.add(id);
      } catch {
        await fsp.mkdir(path.join(spool.dir, 'corrupt'), { recursive: true, mode: 0o700 });
        await fsp.rename(spool.pathOf(state, id), path.join(spool.dir, 'corrupt', id));
        report.corrupt++;
      }
    }
  }
  for (const name of await fsp.readdir(path.join(spool.dir, 'meta'))) {
    const id = name.replace(/\.json$/, '');
    if (!present.has(id)) {
      await fsp.rm(path.join(spool.dir, 'meta', name), { force: true });
      report.orphanMetaRemoved++;
    }
  }
  logger.info({ evt: 'recovery', ...report }, 'spool recovered');
  return report;
}
