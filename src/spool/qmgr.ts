/**
 * The queue manager: decides *when* each message is tried (the delivery
 * agent in src/relay decides *how*). Postfix's qmgr model:
 * - a bounded active window; each time it has room it takes one message
 *   from incoming and one due message from deferred, so a backlog of
 *   retries cannot starve new mail;
 * - after an attempt a message is settled: every recipient delivered or
 *   bounced → removed (with a DSN for bounces), otherwise deferred with
 *   the next retry time from the backoff schedule, or expired and bounced
 *   once past its maximum lifetime (a route may carry its own schedule and
 *   lifetime, e.g. a backup MX's primary: per recipient, soonest retry wins);
 * - hold/ is never scheduled; operators move messages in and out.
 * First attempts from memory and journal settling are handoff.ts.
 * Talks to: Spool (files), DeliveryAgent (sockets), the DSN builder, Handoffs.
 */
import { promises as fsp } from 'node:fs';
import { Readable } from 'node:stream';
import type { Logger } from '../log';
import { domainOf, type DeliveryState, type Envelope, type QueueId, type QueueState, type RecipientOutcome, type RecipientState } from '../envelope';
import type { RelayConfig } from '../relay/config';
import { buildDsn } from '../relay/dsn';
import { routeFor } from '../relay/routes';
import type { DeliveryAgent } from '../relay/types';
import { Handoffs, type Handoff } from './handoff';
import { recoverJournal, type Journal } from './journal';
import { newQueueId } from './queue-id';
import type { Spool, SpooledMessage } from './store';

export interface QueueEntry {
  id: QueueId;
  state: QueueState;
  size: number;
  receivedAt: number;
  mailFrom: string;
  recipients: RecipientState[];
  attempts: number;
  nextAttemptAt?: number;
  lastError?: string;
  holdReason?: string;
}

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

type PendingOp = 'hold' | 'delete';

/** How soon a journaled message that could not be written to the spool (full disk) is tried again. */
const JOURNAL_RETRY_MS = 2000;

export class QueueManager {
  private readonly incoming: QueueId[] = [];
  private readonly queued = new Set<QueueId>();
  private readonly deferred = new Map<QueueId, number>();
  private readonly active = new Set<QueueId>();
  private readonly pendingOps = new Map<QueueId, PendingOp>();
  private readonly observers: QueueObserver[] = [];
  private readonly handoffs: Handoffs;
  private timer: NodeJS.Timeout | undefined;
  private stopping = false;
  private idleWaiters: Array<() => void> = [];
  private scanning = false;

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
    this.handoffs = new Handoffs(opts.journal);
  }

  /** The retry schedule for one recipient: its route's own, else relay.backoff / relay.maxLifetime. */
  private scheduleFor(address: string): { backoffMs: number[]; maxLifetimeMs: number } {
    const plan = routeFor(this.cfg, domainOf(address));
    const hop = plan.kind === 'relay' && plan.via === 'route' ? plan.hop : undefined;
    return { backoffMs: hop?.backoffMs ?? this.cfg.backoffMs, maxLifetimeMs: hop?.maxLifetimeMs ?? this.cfg.maxLifetimeMs };
  }

  private get firstAttemptOnly(): boolean {
    return this.opts.mode === 'first-attempt';
  }

  /** A message another process deferred: schedule its retry here. */
  adoptDeferred(id: QueueId, nextAttemptAt: number): void {
    this.deferred.set(id, nextAttemptAt);
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
      if (!id.endsWith(idSuffix) || this.active.has(id)) continue;
      try {
        await this.spool.move(id, 'active', 'incoming');
        n++;
      } catch {
        // settled meanwhile
      }
    }
    for (const id of await this.spool.list('deferred')) {
      if (!id.endsWith(idSuffix) || this.deferred.has(id) || this.active.has(id)) continue;
      const ds = await this.spool.readState(id).catch(() => undefined);
      this.deferred.set(id, ds?.nextAttemptAt ?? this.now());
      n++;
    }
    if (n > 0) await this.scanIncoming();
    this.pump();
    return n;
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
      this.deferred.set(id, ds?.nextAttemptAt ?? this.now());
    }
    await this.scanIncoming();
    const interval = this.opts.scanIntervalMs ?? 1000;
    this.timer = setInterval(() => void this.tick(), interval);
    this.timer.unref();
    this.pump();
  }

  /**
   * Room to hold one more message of `size` bytes in memory until it is
   * settled? Reserves it: a journaled message's data must stay here (the
   * journal is only read at recovery). False: commit a queue file instead.
   */
  reserveHandoff(size: number): boolean {
    return !this.stopping && this.handoffs.reserve(size);
  }

  releaseHandoff(size: number): void {
    this.handoffs.release(size);
  }

  /** Called by the acceptance path right after a commit in this process. */
  notify(id: QueueId, handoff?: Handoff): void {
    if (this.queued.has(id) || this.active.has(id)) return;
    if (handoff) this.handoffs.offer(id, handoff);
    this.queued.add(id);
    this.incoming.push(id);
    this.pump();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    await this.idle();
  }

  /** Resolves when no delivery is in progress. */
  idle(): Promise<void> {
    if (this.active.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  depth(): { incoming: number; active: number; deferred: number } {
    return { incoming: this.incoming.length, active: this.active.size, deferred: this.deferred.size };
  }

  private async tick(): Promise<void> {
    if (this.stopping) return;
    await this.scanIncoming().catch((err: Error) => this.opts.logger.error({ evt: 'error', err }, 'incoming scan failed'));
    this.pump();
  }

  /** Picks up messages committed by other processes (and after restarts). */
  private async scanIncoming(): Promise<void> {
    if (this.scanning) return;
    this.scanning = true;
    try {
      for (const id of await this.spool.list('incoming')) {
        if (!this.queued.has(id) && !this.active.has(id)) {
          this.queued.add(id);
          this.incoming.push(id);
        }
      }
    } finally {
      this.scanning = false;
    }
  }

  private nextDue(): QueueId | undefined {
    const now = this.now();
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

  private pump(): void {
    if (this.stopping) return;
    let takeIncoming = true;
    while (this.active.size < this.cfg.activeWindow) {
      let id: QueueId | undefined;
      let from: QueueState = 'incoming';
      const due = this.nextDue();
      if ((takeIncoming || due === undefined) && this.incoming.length > 0) {
        id = this.incoming.shift();
        this.queued.delete(id!);
      } else if (due !== undefined) {
        id = due;
        from = 'deferred';
        this.deferred.delete(due);
      }
      if (id === undefined) break;
      takeIncoming = !takeIncoming;
      this.active.add(id);
      // A failure to record the outcome (full disk) must not crash the gateway, nor leave the
      // message in active/ until a restart: it is parked in deferred/ for a later retry.
      void this.attempt(id, from)
        .catch(async (err: Error) => {
          this.opts.logger.error({ evt: 'error', queueId: id, err: err.message }, 'delivery attempt failed; retrying later');
          await this.parkAfterFailure(id!);
        })
        .finally(() => {
          this.active.delete(id!);
          if (this.active.size === 0) for (const w of this.idleWaiters.splice(0)) w();
          this.pump();
        });
    }
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
      await this.materialise(id);
    } catch {
      // Still only in the journal (safe, and recovered at the next start if it stays so), where
      // the queue tools cannot see it: tried again soon rather than after a whole backoff step.
      if (!this.stopping) setTimeout(() => void this.parkAfterFailure(id), Math.min(delay, JOURNAL_RETRY_MS)).unref();
      return;
    }
    try {
      await this.spool.move(id, 'active', 'deferred', { sync: false });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        if (!this.stopping) setTimeout(() => void this.parkAfterFailure(id), delay).unref();
        return;
      }
      // Settled meanwhile, or already renamed into deferred/ by the attempt itself.
      if ((await this.spool.locate(id).catch(() => undefined)) !== 'deferred' || this.deferred.has(id)) return;
    }
    const at = this.now() + delay;
    if (this.firstAttemptOnly) this.opts.onDeferred?.(id, at);
    else this.deferred.set(id, at);
  }

  /**
   * A journaled message that will wait (deferred, bounced, held, deleted
   * by an operator) becomes an ordinary queue file in active/ first, so
   * every path after this one works on files; then the journal forgets it.
   */
  private async materialise(id: QueueId): Promise<void> {
    const h = this.handoffs.inJournalCopy(id);
    if (!h) return;
    await this.spool.commit(h.envelope, { prefix: Buffer.alloc(0), chunks: h.data }, 'active');
    this.handoffs.settle(id);
  }

  private async attempt(id: QueueId, from: QueueState): Promise<void> {
    const log = this.opts.logger;
    const handoff = this.handoffs.take(id);
    try {
      if (!handoff?.journaled) await this.spool.move(id, from, 'active', { sync: false });
    } catch (err) {
      // Gone (deleted by an operator) or held meanwhile: nothing to do.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.error({ evt: 'error', queueId: id, err }, 'cannot activate message');
      return;
    }
    let msg: SpooledMessage;
    try {
      msg = handoff ? { envelope: handoff.envelope, state: 'active', dataOffset: -1, fileSize: handoff.size, mtimeMs: 0 } : await this.spool.read(id, 'active');
    } catch (err) {
      log.error({ evt: 'error', queueId: id, err }, 'unreadable queue file left in active');
      return;
    }
    const env = msg.envelope;
    // A fresh handoff has no delivery state on disk yet.
    const stored = handoff ? undefined : await this.spool.readState(id);
    let hasMeta = stored !== undefined;
    const ds: DeliveryState = stored ?? {
      id,
      version: 0,
      attempts: 0,
      nextAttemptAt: this.now(),
      recipients: env.recipients.map((address) => ({ address, status: 'pending' as const })),
    };
    const pending = ds.recipients.filter((r) => r.status === 'pending');
    const op = this.pendingOps.get(id);
    if (op) {
      await this.materialise(id);
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
    ds.attempts++;
    ds.firstAttemptAt ??= now;
    for (const o of outcomes) {
      const r = ds.recipients.find((x) => x.address === o.address && x.status === 'pending');
      if (!r) continue;
      for (const obs of this.observers) obs.outcome?.({ id, envelope: env, outcome: o, delayMs: now - env.receivedAt });
      if (o.kind === 'delivered') {
        r.status = 'delivered';
        r.remoteMta = o.remoteMta;
        r.lastError = undefined;
      } else if (o.kind === 'bounced') {
        r.status = 'bounced';
        r.statusCode = o.statusCode;
        r.lastError = o.error;
        r.remoteMta = o.remoteMta;
        r.reported = false;
      } else {
        r.lastError = o.error;
        r.remoteMta = o.remoteMta;
        ds.lastError = o.error;
      }
    }
    const stillPending = ds.recipients.filter((r) => r.status === 'pending');
    // Lifetimes are per recipient: a route may hold its mail longer (a backup MX's primary).
    const expiring = stillPending.filter((r) => now - env.receivedAt >= this.scheduleFor(r.address).maxLifetimeMs);
    if (expiring.length > 0) {
      for (const r of expiring) {
        r.status = 'bounced';
        r.statusCode = '4.4.7';
        r.lastError = `delivery time expired after ${ds.attempts} attempts; last error: ${r.lastError ?? 'none'}`;
        r.reported = false;
      }
      for (const obs of this.observers) obs.expired?.(id, expiring.length);
      log.warn({ evt: 'expiration', queueId: id, recipients: expiring.length }, 'message expired');
    }
    if (this.handoffs.inJournalCopy(id)) {
      // The common case ends here: delivered on the first attempt, no queue file ever written.
      if (ds.recipients.every((r) => r.status === 'delivered') && !this.pendingOps.has(id)) return this.handoffs.settle(id);
      await this.materialise(id);
    }
    if (await this.reportBounces(msg, ds)) hasMeta = true;
    if (ds.recipients.every((r) => r.status !== 'pending')) {
      await this.spool.remove(id, 'active', { hasMeta });
      return;
    }
    // The soonest retry any pending recipient's schedule asks for, never past its lifetime.
    let next = Infinity;
    for (const r of ds.recipients) {
      if (r.status !== 'pending') continue;
      const s = this.scheduleFor(r.address);
      const delay = s.backoffMs[Math.min(ds.attempts - 1, s.backoffMs.length - 1)]!;
      next = Math.min(next, now + delay, env.receivedAt + s.maxLifetimeMs);
    }
    ds.nextAttemptAt = next;
    ds.version++;
    await this.spool.writeState(ds);
    const late = this.pendingOps.get(id);
    if (late) return this.applyPendingOp(id, late);
    await this.spool.move(id, 'active', 'deferred');
    if (this.firstAttemptOnly) this.opts.onDeferred?.(id, ds.nextAttemptAt);
    else this.deferred.set(id, ds.nextAttemptAt);
  }

  /**
   * Bounced recipients not yet reported get one DSN to the sender; none for
   * the null sender or for our own DSNs. The DSN is committed before the
   * state that marks it sent: a crash in between may send it twice, never zero times.
   */
  /** Returns whether the delivery state was written. */
  private async reportBounces(msg: SpooledMessage, ds: DeliveryState): Promise<boolean> {
    const env = msg.envelope;
    const unreported = ds.recipients.filter((r) => r.status === 'bounced' && r.reported === false);
    if (unreported.length === 0) return false;
    if (msg.dataOffset < 0) msg = await this.spool.read(env.id, 'active');
    for (const r of unreported) {
      this.opts.logger.info({ evt: 'bounce', queueId: env.id, rcpt: r.address, status: r.statusCode, error: r.lastError }, 'recipient bounced');
    }
    if (env.mailFrom !== '' && !env.isBounce) {
      const headers = await readHeaderBlock(this.spool.openData(msg, msg.dataOffset + 64 * 1024));
      const dsn = buildDsn({
        hostname: this.opts.hostname,
        originalSender: env.mailFrom,
        queueId: env.id,
        arrivalDate: new Date(env.receivedAt),
        failed: unreported.map((r) => ({ address: r.address, status: r.statusCode ?? '5.0.0', diagnostic: r.lastError ?? '', remoteMta: r.remoteMta })),
        originalHeaders: headers,
      });
      const id = newQueueId();
      const bounceEnv: Envelope = {
        id,
        receivedAt: this.now(),
        client: { listener: 'local', role: 'submission', ip: '127.0.0.1', tls: false },
        mailFrom: '',
        recipients: [env.mailFrom],
        size: dsn.length,
        smtpUtf8: env.smtpUtf8,
        verdicts: [],
        isBounce: true,
      };
      await this.spool.commit(bounceEnv, { prefix: Buffer.alloc(0), chunks: [dsn] });
      this.notify(id);
    }
    for (const r of unreported) r.reported = true;
    ds.version++;
    await this.spool.writeState(ds);
    return true;
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

  async hold(id: QueueId, reason = 'operator'): Promise<boolean> {
    if (this.handoffs.isJournaled(id)) {
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
    this.forget(id);
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
    if (this.handoffs.isJournaled(id)) {
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
    this.forget(id);
    this.opts.logger.info({ evt: 'queue_op', queueId: id, op: 'delete' }, 'message deleted');
    return true;
  }

  private forget(id: QueueId): void {
    this.deferred.delete(id);
    if (this.queued.delete(id)) {
      const i = this.incoming.indexOf(id);
      if (i >= 0) this.incoming.splice(i, 1);
    }
  }

  /** Everything in the spool, for `queue list` and the admin API. */
  async list(): Promise<QueueEntry[]> {
    const out: QueueEntry[] = [];
    for (const state of ['incoming', 'active', 'deferred', 'hold'] as const) {
      for (const id of await this.spool.list(state)) {
        const e = await this.entry(id, state);
        if (e) out.push(e);
      }
    }
    return out;
  }

  async entry(id: QueueId, state?: QueueState): Promise<QueueEntry | undefined> {
    const st = state ?? (await this.spool.locate(id));
    if (!st) return undefined;
    try {
      const msg = await this.spool.read(id, st);
      const ds = await this.spool.readState(id);
      return {
        id,
        state: st,
        size: msg.fileSize - msg.dataOffset,
        receivedAt: msg.envelope.receivedAt,
        mailFrom: msg.envelope.mailFrom,
        recipients: ds?.recipients ?? msg.envelope.recipients.map((address) => ({ address, status: 'pending' as const })),
        attempts: ds?.attempts ?? 0,
        nextAttemptAt: ds?.nextAttemptAt,
        lastError: ds?.lastError,
        holdReason: msg.envelope.holdReason,
      };
    } catch {
      return undefined; // moved or removed while we looked
    }
  }

  /** The oldest message's age in ms per state (for metrics). */
  async oldestAgeMs(): Promise<number> {
    let oldest = Infinity;
    for (const state of ['incoming', 'deferred', 'hold'] as const) {
      const ids = await this.spool.list(state);
      if (ids.length > 0) {
        const st = await fsp.stat(this.spool.pathOf(state, ids[0]!)).catch(() => undefined);
        if (st) oldest = Math.min(oldest, st.mtimeMs);
      }
    }
    return oldest === Infinity ? 0 : this.now() - oldest;
  }
}

/** The header block of a message (up to the first empty line), bounded by the stream's end. */
async function readHeaderBlock(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) {
    chunks.push(c as Buffer);
    const all = Buffer.concat(chunks);
    const end = all.indexOf('\r\n\r\n');
    if (end >= 0) {
      (stream as unknown as { destroy?: () => void }).destroy?.();
      return all.subarray(0, end + 2);
    }
  }
  return Buffer.concat(chunks);
}
