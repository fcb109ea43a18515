/**
 * Group commit: callers that ask for a sync while one is running wait for
 * the *next* one, which then covers all of them (the running one may have
 * started before their write), so N concurrent commits cost about two
 * syncs, not N. Used for directory fsyncs (dir-sync.ts) and the journal's
 * fdatasync (journal.ts).
 */
export class GroupCommit {
  private running: Promise<void> | undefined;
  private next: Promise<void> | undefined;

  constructor(private readonly op: () => Promise<void>) {}

  sync(): Promise<void> {
    if (!this.running) return this.start();
    this.next ??= this.running.then(
      () => this.startNext(),
      () => this.startNext(),
    );
    return this.next;
  }

  /** Settles once no sync is running or queued. */
  async idle(): Promise<void> {
    while (this.running || this.next) await Promise.allSettled([this.running, this.next]);
  }

  private start(): Promise<void> {
    const p = this.op().finally(() => {
      if (this.running === p) this.running = undefined;
    });
    this.running = p;
    return p;
  }

  private startNext(): Promise<void> {
    this.next = undefined;
    return this.start();
  }
}
