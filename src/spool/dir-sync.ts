/**
 * Group commit for directory entries: a rename is durable only after the
 * directory is fsync'd; concurrent commits into one directory share the
 * syncs (group-commit.ts), so N of them cost about two, not N.
 */
import { closeSync, fsync, openSync } from 'node:fs';
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

/** One threadpool trip: opening and closing a directory are cheap metadata calls, done inline. */
function fsyncDir(dir: string): Promise<void> {
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
