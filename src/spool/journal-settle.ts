/**
 * Journal settling. A journaled message (its only durable copy a record in
 * this process's acceptance journal, handoff.ts) is "in the journal" from
 * the start of its attempt until it is settled, one of two ways:
 * - delivered to every recipient: the journal gets a done record and no
 *   queue file is ever written (the common case);
 * - anything else (deferred, bounced, held or deleted by an operator): it
 *   is materialised, made an ordinary queue file in active/, so every path
 *   after that works on files; then the journal forgets it.
 * Talks to: the journal (done records), the spool (commit).
 */
import type { QueueId } from '../envelope';
import type { Handoff } from './handoff';
import type { Journal } from './journal';
import type { Spool } from './store';

export class JournalSettler {
  private readonly inJournal = new Map<QueueId, Handoff>();

  constructor(
    private readonly journal: Journal | undefined,
    private readonly spool: Pick<Spool, 'commit'>,
  ) {}

  /** A journaled message's attempt starts: the journal holds its only durable copy until settled. */
  begin(id: QueueId, handoff: Handoff): void {
    this.inJournal.set(id, handoff);
  }

  /** In its attempt, with no queue file yet. */
  holds(id: QueueId): boolean {
    return this.inJournal.has(id);
  }

  /** Delivered: the journal copy is no longer needed. */
  settle(id: QueueId): void {
    this.inJournal.delete(id);
    this.journal?.done(id);
  }

  /** It will wait: a queue file in active/ first, then settled. Nothing to do for a message not in the journal. */
  async materialise(id: QueueId): Promise<void> {
    const h = this.inJournal.get(id);
    if (!h) return;
    await this.spool.commit(h.envelope, { prefix: Buffer.alloc(0), chunks: h.data }, 'active');
    this.settle(id);
  }
}
