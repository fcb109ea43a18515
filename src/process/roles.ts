/**
 * Process roles. A gateway process is composed of two parts (this folder):
 * - the acceptor (acceptor.ts): the SMTP listeners, and the first attempt
 *   of what they accept;
 * - the queue owner (queue-owner.ts): recovery, retries, the admin API,
 *   the mailbox-log follower, the Postfix services.
 * One process (`single`) has both; a multi-process gateway
 * (src/cluster/supervisor.ts) has one `primary` that owns the queue and
 * `worker`s that accept. Everything else is built the same for every role (src/app.ts).
 */
export type ProcessRoleName = 'single' | 'primary' | 'worker';

export interface ProcessRole {
  /** Runs the listeners and the acceptance journal; its queue manager makes first attempts. */
  readonly accepts: boolean;
  /** Owns the queue: every retry, recovery, the admin API and what else one process does for all. */
  readonly ownsQueue: boolean;
}

export const PROCESS_ROLES: Readonly<Record<ProcessRoleName, ProcessRole>> = {
  single: { accepts: true, ownsQueue: true },
  primary: { accepts: false, ownsQueue: true },
  worker: { accepts: true, ownsQueue: false },
};

/** One part's share of start and stop; the app calls each part's step in turn. */
export interface ProcessPart {
  /** Reserves its addresses without accepting (the part that needs root). */
  bind(): Promise<void>;
  /** Before the queue manager starts. */
  prepare(): Promise<void>;
  /** Open for business. */
  open(): Promise<void>;
  /** Closes what bind() and open() opened; also after either failed. */
  close(): Promise<void>;
}
