/**
 * Group commit for directory entries: a rename is durable only after the
 * directory is fsync'd; concurrent commits into one directory share the
 * syncs (group-commit.ts), so N of them cost about two, not N.
 */
import { closeSync, fsync, openSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { GroupCommit } from './group-commit';

export class DirSyncer {
  private readonly dirs = new Map<string, GroupCommit>();
  constructor(private readonly enabled: boolean) {}

  sync(dir: string): Promise<void> {
    if (!this.enabled) return Promise.resolve();
    let g = this.dirs.get(dir);
    if (!g) {
      g = new GroupCommit(() => fsyncDir(dir));
      this.dirs.set(dir, g);
    }
    return g.sync();
  }
}

/**
 * mkdir -p whose result survives a power cut: a new directory's name is an
 * entry in its parent, durable only once the parent is fsync'd, so every
 * parent from the first directory created down to `dir`'s is synced. The
 * parent is synced even when nothing was created: a previous start may
 * have been cut before it did so.
 */
export async function mkdirDurable(dir: string, sync: boolean): Promise<void> {
  const first = await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  if (!sync) return;
  const parents: string[] = [];
  for (let d = dir; d !== (first ? path.dirname(first) : path.dirname(dir)); d = path.dirname(d)) parents.push(path.dirname(d));
  for (const p of parents) await fsyncDir(p);
}

/** One threadpool trip: opening and closing a directory are cheap metadata calls, done inline. */
export function fsyncDir(dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let fd: number;
    try {
      fd = openSync(dir, 'r');
    } catch (err) {
      return reject(err as Error);
    }
    fsync(fd, (err) => {
      closeSync(fd);
      if (err) reject(err);
      else resolve();
    });
  });
}
