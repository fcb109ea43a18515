/**
 * Group commit for directory entries: a rename is durable only after the
 * directory is fsync'd. Callers that arrive while a sync of the same
 * directory is running wait for the *next* sync, which then covers all of
 * them, so N concurrent commits cost about two directory syncs, not N.
 */
import { closeSync, fsync, openSync } from 'node:fs';

interface DirState {
  running: Promise<void> | undefined;
  next: Promise<void> | undefined;
}

export class DirSyncer {
  private readonly dirs = new Map<string, DirState>();
  constructor(private readonly enabled: boolean) {}

  sync(dir: string): Promise<void> {
    if (!this.enabled) return Promise.resolve();
    let st = this.dirs.get(dir);
    if (!st) {
      st = { running: undefined, next: undefined };
      this.dirs.set(dir, st);
    }
    const state = st;
    if (!state.running) {
      state.running = fsyncDir(dir).finally(() => {
        state.running = undefined;
      });
      return state.running;
    }
    // A sync is in flight and may have started before our rename: wait for
    // it, then share one more.
    state.next ??= state.running.then(
      () => this.startNext(dir, state),
      () => this.startNext(dir, state),
    );
    return state.next;
  }

  private startNext(dir: string, state: DirState): Promise<void> {
    state.next = undefined;
    state.running = fsyncDir(dir).finally(() => {
      state.running = undefined;
    });
    return state.running;
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
