/**
 * Scheduling: which message is tried next, and how many at once. Postfix's
 * qmgr model: a bounded active window; each time it has room it takes one
 * message from incoming and one due message from deferred, so a backlog of
 * retries cannot starve new mail. incoming/ is scanned every interval for
 * messages committed by other processes (and before a restart).
 *
 * Holds ids and times only: what an attempt does, and where a message's
 * file goes, is the queue manager's (qmgr.ts). Talks to: nothing but the
 * two functions it is given.
 */
import type { QueueId } from '../envelope';
import type { Logger } from '../log';

export type ScheduledFrom = 'incoming' | 'deferred';

export interface SchedulerOptions {
  /** At most this many attempts at once (relay.activeWindow). */
  window: number;
  now: () => number;
  logger: Logger;
  /** The ids in incoming/ on disk. */
  listIncoming: () => Promise<QueueId[]>;
  /** One attempt; settles (never rejects) once the message has left active/ or was parked. */
  attempt: (id: QueueId, from: ScheduledFrom) => Promise<void>;
}

export class Scheduler {
  private readonly incoming: QueueId[] = [];
  private readonly queued = new Set<QueueId>();
  private readonly deferred = new Map<QueueId, number>();
  private readonly active = new Set<QueueId>();
  private idleWaiters: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private scanning = false;
  private stopping = false;

  constructor(private readonly opts: SchedulerOptions) {}

  get stopped(): boolean {
    return this.stopping;
  }

  /** Waiting in incoming or in its attempt now. */
  isQueuedOrActive(id: QueueId): boolean {
    return this.queued.has(id) || this.active.has(id);
  }

  isActive(id: QueueId): boolean {
    return this.active.has(id);
  }

  isDeferred(id: QueueId): boolean {
    return this.deferred.has(id);
  }

  /** New mail, tried in arrival order (call pump() to start it). */
  enqueue(id: QueueId): void {
    if (this.isQueuedOrActive(id)) return;
    this.queued.add(id);
    this.incoming.push(id);
  }

  /** Tried again once `at` has passed. */
  defer(id: QueueId, at: number): void {
    this.deferred.set(id, at);
  }

  /** Held or deleted by an operator: no longer scheduled. */
  forget(id: QueueId): void {
    this.deferred.delete(id);
    if (this.queued.delete(id)) {
      const i = this.incoming.indexOf(id);
      if (i >= 0) this.incoming.splice(i, 1);
    }
  }

  /** Deferred messages (one, or all) due now; returns how many. */
  flush(id?: QueueId): number {
    let n = 0;
    for (const key of this.deferred.keys()) {
      if (id === undefined || key === id) {
        this.deferred.set(key, 0);
        n++;
      }
    }
    this.pump();
    return n;
  }

  /** Scans incoming/ now, then every `intervalMs`. */
  async start(intervalMs: number): Promise<void> {
    await this.scan();
    this.timer = setInterval(() => void this.tick(), intervalMs);
    this.timer.unref();
    this.pump();
  }

  /** No new attempts; resolves when those in progress are done. */
  stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    return this.idle();
  }

  /** Resolves when no attempt is in progress. */
  idle(): Promise<void> {
    if (this.active.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  depth(): { incoming: number; active: number; deferred: number } {
    return { incoming: this.incoming.length, active: this.active.size, deferred: this.deferred.size };
  }

  /** Picks up messages committed by other processes (and after restarts). */
  async scan(): Promise<void> {
    if (this.scanning) return;
    this.scanning = true;
    try {
      for (const id of await this.opts.listIncoming()) this.enqueue(id);
    } finally {
      this.scanning = false;
    }
  }

  /** Starts attempts while the window has room, alternating incoming and due deferred messages. */
  pump(): void {
    if (this.stopping) return;
    let takeIncoming = true;
    while (this.active.size < this.opts.window) {
      let id: QueueId | undefined;
      let from: ScheduledFrom = 'incoming';
      const due = this.nextDue();
      if ((takeIncoming || due === undefined) && this.incoming.length > 0) {
        id = this.incoming.shift()!;
        this.queued.delete(id);
      } else if (due !== undefined) {
        id = due;
        from = 'deferred';
        this.deferred.delete(due);
      }
      if (id === undefined) break;
      takeIncoming = !takeIncoming;
      this.active.add(id);
      const started = id;
      void this.opts.attempt(started, from).finally(() => {
        this.active.delete(started);
        if (this.active.size === 0) for (const w of this.idleWaiters.splice(0)) w();
        this.pump();
      });
    }
  }

  private async tick(): Promise<void> {
    if (this.stopping) return;
    await this.scan().catch((err: Error) => this.opts.logger.error({ evt: 'error', err }, 'incoming scan failed'));
    this.pump();
  }

  private nextDue(): QueueId | undefined {
    const now = this.opts.now();
    let best: QueueId | undefined;
    let bestAt = Infinity;
    for (const [id, at] of this.deferred) {
      if (at <= now && at < bestAt) {
        best = id;
        bestAt = at;
      }
    }
    return best;
  }
}
