/**
 * First attempts from memory: a message this process just committed is
 * handed to the queue manager with its bytes, so the first attempt need not
 * re-read what was just written. Bounded in bytes (HANDOFF_MAX_BYTES): past
 * that, messages are read back from their queue files like any other.
 *
 * A journaled message (spool.journal: its only durable copy is a record in
 * this process's acceptance journal) always keeps its hand-off, since there
 * is no queue file to read; once its attempt starts, journal-settle.ts holds
 * it until it is settled.
 *
 * Talks to: nothing. Trusts: the queue manager to take what it offers.
 */
import type { Envelope, QueueId } from '../envelope';

export interface Handoff {
  envelope: Envelope;
  data: readonly Buffer[];
  size: number;
  /** Its durable copy is in the journal, not a queue file (bytes reserved with reserve()). */
  journaled?: boolean;
}

const HANDOFF_MAX_BYTES = 64 * 1024 * 1024;

export class Handoffs {
  private readonly waiting = new Map<QueueId, Handoff>();
  private bytes = 0;

  /**
   * Room for a journaled message of `size` bytes (the acceptance path asks
   * before appending to the journal); false: commit a queue file instead.
   */
  reserve(size: number): boolean {
    if (this.bytes + size > HANDOFF_MAX_BYTES) return false;
    this.bytes += size;
    return true;
  }

  release(size: number): void {
    this.bytes -= size;
  }

  /** A committed message's bytes, kept for its first attempt when there is room (journaled: always, reserved). */
  offer(id: QueueId, handoff: Handoff): void {
    if (handoff.journaled) this.waiting.set(id, handoff);
    else if (this.bytes + handoff.size <= HANDOFF_MAX_BYTES) {
      this.waiting.set(id, handoff);
      this.bytes += handoff.size;
    }
  }

  /** The hand-off for the attempt starting now, if any. */
  take(id: QueueId): Handoff | undefined {
    const h = this.waiting.get(id);
    if (h) {
      this.waiting.delete(id);
      this.bytes -= h.size;
    }
    return h;
  }

  /** A journaled message waiting for its first attempt. */
  isWaitingJournaled(id: QueueId): boolean {
    return this.waiting.get(id)?.journaled === true;
  }
}
