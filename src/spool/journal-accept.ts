/**
 * The acceptance path's way into the queue: the session's two hooks
 * (SessionDeps.onCommitted and .journal), built from the queue manager and
 * this process's acceptance journal.
 */
import type { Envelope, QueueId } from '../envelope';
import type { Handoff } from './handoff';
import type { Journal } from './journal';
import type { QueueManager } from './qmgr';

type Queue = Pick<QueueManager, 'notify' | 'reserveHandoff' | 'releaseHandoff'>;

/** After a queue-file commit: a held message waits for the operator; anything else is tried. */
export function committedToQueue(qmgr: Queue): (id: QueueId, held: boolean, handoff?: Handoff) => void {
  return (id, held, handoff) => {
    if (!held) qmgr.notify(id, handoff);
  };
}

/**
 * A small message tried at once is made durable in the journal instead of
 * a queue file, when its bytes fit in the queue manager's hand-off room
 * (reserved first: a journaled message's only readable copy stays in
 * memory until settled). False: commit a queue file instead.
 */
export function acceptIntoJournal(journal: Journal, qmgr: Queue): (envelope: Envelope, data: readonly Buffer[], size: number) => Promise<boolean> {
  return async (envelope, data, size) => {
    if (!qmgr.reserveHandoff(size)) return false;
    try {
      await journal.append(envelope, data);
    } catch (err) {
      qmgr.releaseHandoff(size);
      throw err;
    }
    qmgr.notify(envelope.id, { envelope, data, size, journaled: true });
    return true;
  };
}
