/**
 * The queue manager: decides *when* each message is tried (the delivery
 * agent in src/relay decides *how*) and what becomes of it after an
 * attempt: every recipient delivered or bounced → removed (with a DSN for
 * bounces), otherwise deferred until the next retry, or expired and
 * bounced once past its maximum lifetime. hold/ is never scheduled;
 * operators move messages in and out (after the attempt, if one is running).
 * Its pieces, one file each:
 * - scheduler.ts: the active window, new mail against due retries, the scan;
 * - handoff.ts: first attempts from memory, without re-reading the file;
 * - journal-settle.ts: a journaled message until delivered or made a queue file;
 * - delivery-state.ts: outcomes recorded, expiry, the next retry (per route);
 * - bounces.ts: DSNs; queue-view.ts: what `queue list` shows.
 * Talks to: Spool (files), DeliveryAgent (sockets).
 */
import { Readable } from 'node:stream';
import type { Envelope, QueueId, QueueState, RecipientOutcome } from '../envelope';
import type { Logger } from '../log';
import type { RelayConfig } from '../relay/config';
import type { DeliveryAgent } from '../relay/types';
import { BounceReporter } from './bounces';
import { countsAsAttempt, expireOverdue, freshDeliveryState, nextRetryAt, recordOutcomes, shapingRetries } from './delivery-state';
import { Handoffs, type Handoff } from './handoff';
import { recoverJournal, type Journal } from './journal';
import { JournalSettler } from './journal-settle';
import { listQueue, oldestAgeMs, queueEntry, type QueueEntry } from './queue-view';
import { Scheduler, type ScheduledFrom } from './scheduler';
import type { Spool, SpooledMessage } from './store';

export type { QueueEntry } from './queue-view';

export interface OutcomeEvent {
  id: QueueId;
  envelope: Envelope;
  outcome: RecipientOutcome;
  /** Milliseconds from acceptance to this outcome. */
  delayMs: number;
}

export interface QueueObserver {
  outcome?(e: OutcomeEvent): void;
  expired?(id: QueueId, recipients: number): void;
}

/** An operator's hold or delete of a message in its attempt, applied when the attempt ends. */
type PendingOp = 'hold' | 'delete';

/** How soon a journaled message that could not be written to the spool (full disk) is tried again. */
const JOURNAL_RETRY_MS = 2000;

export class QueueManager {
  private readonly scheduler: Scheduler;
  private readonly handoffs = new Handoffs();
  private readonly settling: JournalSettler;
  private readonly bounces: BounceReporter;
  private readonly pendingOps = new Map<QueueId, PendingOp>();
  private readonly observers: QueueObserver[] = [];

  constructor(
    private readonly spool: Spool,
    private readonly agent: DeliveryAgent,
    private readonly cfg: RelayConfig,
    private readonly opts: {
      hostname: string;
      logger: Logger;
      scanIntervalMs?: number;
      now?: () => number;
      /**
       * 'first-attempt' (a worker process of a multi-process gateway): only
       * messages handed over by this process are tried, once; what defers is
       * passed to `onDeferred` for the primary's queue manager to retry.
       */
      mode?: 'full' | 'first-attempt';
      onDeferred?: (id: QueueId, nextAttemptAt: number) => void;
      /** This process's acceptance journal (journal.ts). */
      journal?: Journal;
      /** Where every process's journal segments are (a dead worker's are recovered from there). */
      journalDir?: string;
    },
  ) {
    const now = (): number => this.now();
    this.settling = new JournalSettler(opts.journal, spool);
    this.bounces = new BounceReporter({ spool, hostname: opts.hostname, logger: opts.logger, now, enqueue: (id) => this.notify(id) });
    this.scheduler = new Scheduler({
      window: cfg.activeWindow,
      now,
      logger: opts.logger,
      listIncoming: () => spool.list('incoming'),
      // A failure to record the outcome (full disk) must not crash the gateway, nor leave the
      // message in active/ until a restart: it is parked in deferred/ for a later retry.
      attempt: (id, from) =>
        this.attempt(id, from).catch(async (err: Error) => {
          opts.logger.error({ evt: 'error', queueId: id, err: err.message }, 'delivery attempt failed; retrying later');
          await this.parkAfterFailure(id);
        }),
    });
  }

  private get firstAttemptOnly(): boolean {
    return this.opts.mode === 'first-attempt';
  }

  private now(): number {
    return this.opts.now ? this.opts.now() : Date.now();
  }

  observe(o: QueueObserver): void {
    this.observers.push(o);
  }

  async start(): Promise<void> {
    if (this.firstAttemptOnly) return;
    for (const id of await this.spool.list('deferred')) {
      const ds = await this.spool.readState(id);
      this.scheduler.defer(id, ds?.nextAttemptAt ?? this.now());
    }
    await this.scheduler.start(this.opts.scanIntervalMs ?? 1000);
  }

  async stop(): Promise<void> {
    await this.scheduler.stop();
  }

  /** Resolves when no delivery is in progress. */
  idle(): Promise<void> {
    return this.scheduler.idle();
  }

  depth(): { incoming: number; active: number; deferred: number } {
    return this.scheduler.depth();
  }

  /**
   * Room to hold one more message of `size` bytes in memory until it is
   * settled? Reserves it: a journaled message's data must stay here (the
   * journal is only read at recovery). False: commit a queue file instead.
   */
  reserveHandoff(size: number): boolean {
    return !this.scheduler.stopped && this.handoffs.reserve(size);
  }

  releaseHandoff(size: number): void {
    this.handoffs.release(size);
  }

  /** Called by the acceptance path right after a commit in this process. */
  notify(id: QueueId, handoff?: Handoff): void {
    if (this.scheduler.isQueuedOrActive(id)) return;
    if (handoff) this.handoffs.offer(id, handoff);
    this.scheduler.enqueue(id);
    this.scheduler.pump();
  }

  /** A message another process deferred: schedule its retry here. */
  adoptDeferred(id: QueueId, nextAttemptAt: number): void {
    this.scheduler.defer(id, nextAttemptAt);
  }

  /**
   * A worker died: its in-flight messages (active/, ids carrying its tag)
   * go back to incoming/ for this queue manager. Not ours in flight only.
   * So do those it had moved to deferred/ without living to tell us
   * (onDeferred): scheduled here from their delivery state, not left until
   * a restart.
   */
  async requeueActive(idSuffix: string): Promise<number> {
    let n = 0;
    if (this.opts.journalDir) n += (await recoverJournal(this.opts.journalDir, this.spool, this.opts.logger, idSuffix)).recovered;
    for (const id of await this.spool.list('active')) {
      if (!id.endsWith(idSuffix) || this.scheduler.isActive(id)) continue;
      try {
        await this.spool.move(id, 'active', 'incoming');
        n++;
      } catch {
        // settled meanwhile
      }
    }
    for (const id of await this.spool.list('deferred')) {
      if (!id.endsWith(idSuffix) || this.scheduler.isDeferred(id) || this.scheduler.isActive(id)) continue;
      const ds = await this.spool.readState(id).catch(() => undefined);
      this.scheduler.defer(id, ds?.nextAttemptAt ?? this.now());
      n++;
    }
    if (n > 0) await this.scheduler.scan();
    this.scheduler.pump();
    return n;
  }

  /** Deferred to a later retry: here, or by the primary when this is a worker. */
  private deferUntil(id: QueueId, at: number): void {
    if (this.firstAttemptOnly) this.opts.onDeferred?.(id, at);
    else this.scheduler.defer(id, at);
  }

  /**
   * An attempt that could not record its outcome (a full disk): the old
   * delivery state stays (a recipient delivered meanwhile may get the
   * message again: at least once), the message goes back to deferred/ and
   * is retried after the first backoff step. If even the rename fails, it is
   * tried again then. (test/security/disk-full.test.ts)
   */
  private async parkAfterFailure(id: QueueId): Promise<void> {
    const delay = this.cfg.backoffMs[0] ?? 60_000;
    try {
      await this.settling.materialise(id);
    } catch {
      // Still only in the journal (safe, and recovered at the next start if it stays so), where
      // the queue tools cannot see it: tried again soon rather than after a whole backoff step.
      if (!this.scheduler.stopped) setTimeout(() => void this.parkAfterFailure(id), Math.min(delay, JOURNAL_RETRY_MS)).unref();
      return;
    }
    try {
      await this.spool.move(id, 'active', 'deferred', { sync: false });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        if (!this.scheduler.stopped) setTimeout(() => void this.parkAfterFailure(id), delay).unref();
        return;
      }
      // Settled meanwhile, or already renamed into deferred/ by the attempt itself.
      if ((await this.spool.locate(id).catch(() => undefined)) !== 'deferred' || this.scheduler.isDeferred(id)) return;
    }
    this.deferUntil(id, this.now() + delay);
  }

  /** Opens the message for its attempt: from its hand-off if there is one, else its queue file moved to active/. */
  private async activate(id: QueueId, from: ScheduledFrom): Promise<{ msg: SpooledMessage; handoff?: Handoff } | undefined> {
    const log = this.opts.logger;
    const handoff = this.handoffs.take(id);
    if (handoff?.journaled) this.settling.begin(id, handoff);
    try {
      if (!handoff?.journaled) await this.spool.move(id, from, 'active', { sync: false });
    } catch (err) {
      // Gone (deleted by an operator) or held meanwhile: nothing to do.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.error({ evt: 'error', queueId: id, err }, 'cannot activate message');
      return undefined;
    }
    try {
      const msg = handoff ? { envelope: handoff.envelope, state: 'active' as const, dataOffset: -1, fileSize: handoff.size, mtimeMs: 0 } : await this.spool.read(id, 'active');
      return { msg, handoff };
    } catch (err) {
      log.error({ evt: 'error', queueId: id, err }, 'unreadable queue file left in active');
      return undefined;
    }
  }

  private async attempt(id: QueueId, from: ScheduledFrom): Promise<void> {
    const opened = await this.activate(id, from);
    if (!opened) return;
    const { msg, handoff } = opened;
    const env = msg.envelope;
    // A fresh handoff has no delivery state on disk yet.
    const stored = handoff ? undefined : await this.spool.readState(id);
    let hasMeta = stored !== undefined;
    const ds = stored ?? freshDeliveryState(id, env.recipients, this.now());
    const pending = ds.recipients.filter((r) => r.status === 'pending');
    const op = this.pendingOps.get(id);
    if (op) {
      await this.settling.materialise(id);
      return this.applyPendingOp(id, op);
    }

    let outcomes: RecipientOutcome[] = [];
    if (pending.length > 0) {
      outcomes = await this.agent.deliver({
        id,
        mailFrom: env.mailFrom,
        recipients: pending.map((r) => r.address),
        open: () => (handoff ? Readable.from(handoff.data) : this.spool.openData(msg)),
        size: handoff ? handoff.size : msg.fileSize - msg.dataOffset,
        smtpUtf8: env.smtpUtf8,
        pool: env.egress?.pool,
        released: env.holdReason !== undefined,
      });
    }
    const now = this.now();
    // Deferred by the agent's traffic shaping (provider suspended or rate reached): retried then, not a failed attempt.
    const retryAt = shapingRetries(outcomes);
    if (countsAsAttempt(outcomes)) ds.attempts++;
    ds.firstAttemptAt ??= now;
    for (const outcome of recordOutcomes(ds, outcomes)) {
      for (const obs of this.observers) obs.outcome?.({ id, envelope: env, outcome, delayMs: now - env.receivedAt });
    }
    const expiring = expireOverdue(ds, env.receivedAt, now, this.cfg);
    if (expiring.length > 0) {
      for (const obs of this.observers) obs.expired?.(id, expiring.length);
      this.opts.logger.warn({ evt: 'expiration', queueId: id, recipients: expiring.length }, 'message expired');
    }
    if (this.settling.holds(id)) {
      // The common case ends here: delivered on the first attempt, no queue file ever written.
      if (ds.recipients.every((r) => r.status === 'delivered') && !this.pendingOps.has(id)) return this.settling.settle(id);
      await this.settling.materialise(id);
    }
    if (await this.bounces.report(msg, ds)) hasMeta = true;
    if (ds.recipients.every((r) => r.status !== 'pending')) {
      await this.spool.remove(id, 'active', { hasMeta });
      return;
    }
    ds.nextAttemptAt = nextRetryAt(ds, env.receivedAt, now, this.cfg, retryAt);
    ds.version++;
    await this.spool.writeState(ds);
    const late = this.pendingOps.get(id);
    if (late) return this.applyPendingOp(id, late);
    await this.spool.move(id, 'active', 'deferred');
    this.deferUntil(id, ds.nextAttemptAt);
  }

  private async applyPendingOp(id: QueueId, op: PendingOp): Promise<void> {
    this.pendingOps.delete(id);
    if (op === 'delete') await this.spool.remove(id, 'active');
    else await this.spool.move(id, 'active', 'hold');
    this.opts.logger.info({ evt: 'queue_op', queueId: id, op }, 'operator action applied after delivery attempt');
  }

  // ---- operator actions (queue flush/hold/release/delete) ----

  /** Make deferred messages due now; returns how many. */
  flush(id?: QueueId): number {
    return this.scheduler.flush(id);
  }

  /** Accepted into the journal and not yet settled (waiting for, or in, its first attempt). */
  private isJournaled(id: QueueId): boolean {
    return this.settling.holds(id) || this.handoffs.isWaitingJournaled(id);
  }

  async hold(id: QueueId, reason = 'operator'): Promise<boolean> {
    if (this.isJournaled(id)) {
      this.pendingOps.set(id, 'hold');
      return true;
    }
    const state = await this.spool.locate(id);
    if (!state || state === 'hold') return false;
    if (state === 'active') {
      this.pendingOps.set(id, 'hold');
      return true;
    }
    await this.spool.move(id, state, 'hold');
    this.scheduler.forget(id);
    this.opts.logger.info({ evt: 'queue_op', queueId: id, op: 'hold', reason }, 'message held');
    return true;
  }

  async release(id: QueueId): Promise<boolean> {
    const state = await this.spool.locate(id);
    if (state !== 'hold') return false;
    await this.spool.move(id, 'hold', 'incoming');
    this.opts.logger.info({ evt: 'queue_op', queueId: id, op: 'release' }, 'message released');
    this.notify(id);
    return true;
  }

  async delete(id: QueueId): Promise<boolean> {
    if (this.isJournaled(id)) {
      this.pendingOps.set(id, 'delete');
      return true;
    }
    const state = await this.spool.locate(id);
    if (!state) return false;
    if (state === 'active') {
      this.pendingOps.set(id, 'delete');
      return true;
    }
    await this.spool.remove(id, state);
    this.scheduler.forget(id);
    this.opts.logger.info({ evt: 'queue_op', queueId: id, op: 'delete' }, 'message deleted');
    return true;
  }

  // ---- views (queue-view.ts) ----

  /** Everything in the spool, for `queue list` and the admin API. */
  list(): Promise<QueueEntry[]> {
    return listQueue(this.spool);
  }

  entry(id: QueueId, state?: QueueState): Promise<QueueEntry | undefined> {
    return queueEntry(this.spool, id, state);
  }

  /** The oldest waiting message's age in ms (for metrics). */
  oldestAgeMs(): Promise<number> {
    return oldestAgeMs(this.spool, () => this.now());
  }
}
