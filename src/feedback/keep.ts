/**
 * Reports that did not count (unmapped, unauthenticated, from an unknown
 * sender, not a report) are kept for the abuse desk, one file per report
 * under <keep.dir>/<result>/, named by arrival time so the oldest go first
 * once a directory holds `max` files. Written to a temporary name, synced
 * and renamed, so a kept file is always whole.
 *
 * Talks to: the filesystem. Trusts: nothing (the bytes are stored as they came).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';

export class KeptReports {
  private seq = 0;
  constructor(
    readonly dir: string,
    private readonly max: number,
  ) {}

  /** Store one report; returns its path (undefined when keeping is off). */
  async keep(kind: string, queueId: string, message: Buffer): Promise<string | undefined> {
    if (this.max <= 0) return undefined;
    const dir = path.join(this.dir, kind);
    await fsp.mkdir(dir, { recursive: true, mode: 0o750 });
    const name = `${String(Date.now()).padStart(14, '0')}-${String(this.seq++ % 1000).padStart(3, '0')}-${queueId.replace(/[^A-Za-z0-9_-]/g, '')}.eml`;
    const tmp = path.join(dir, `.${name}.tmp`);
    const fh = await fsp.open(tmp, 'w', 0o640);
    try {
      await fh.writeFile(message);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, path.join(dir, name));
    await this.trim(dir);
    return path.join(dir, name);
  }

  /** Files kept per kind (for the admin API and tests). */
  async list(kind: string): Promise<string[]> {
    const names = await fsp.readdir(path.join(this.dir, kind)).catch(() => [] as string[]);
    return names.filter((n) => n.endsWith('.eml')).sort();
  }

  private async trim(dir: string): Promise<void> {
    const names = (await fsp.readdir(dir)).filter((n) => n.endsWith('.eml')).sort();
    for (const n of names.slice(0, Math.max(0, names.length - this.max))) await fsp.unlink(path.join(dir, n)).catch(() => undefined);
  }
}
