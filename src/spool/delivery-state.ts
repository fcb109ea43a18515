/**
 * What one attempt does to a message's delivery state: the recipients'
 * outcomes recorded, those past their lifetime expired, the next retry
 * chosen. Lifetimes and backoff are per recipient: a route may carry its
 * own (a backup MX's primary holds its mail longer); the soonest retry any
 * pending recipient asks for wins. Pure: the queue manager writes the result.
 */
import { domainOf, type DeliveryState, type QueueId, type RecipientOutcome, type RecipientState } from '../envelope';
import type { RelayConfig } from '../relay/config';
import { routeFor } from '../relay/routes';

/** The state of a message that has never been tried: every recipient pending. */
export function freshDeliveryState(id: QueueId, recipients: readonly string[], now: number): DeliveryState {
  return { id, version: 0, attempts: 0, nextAttemptAt: now, recipients: recipients.map((address) => ({ address, status: 'pending' as const })) };
}

/** Applies outcomes to their pending recipients; returns those that matched one. */
export function recordOutcomes(ds: DeliveryState, outcomes: readonly RecipientOutcome[]): RecipientOutcome[] {
  const recorded: RecipientOutcome[] = [];
  for (const o of outcomes) {
    const r = ds.recipients.find((x) => x.address === o.address && x.status === 'pending');
    if (!r) continue;
    recorded.push(o);
    if (o.kind === 'delivered') {
      r.status = 'delivered';
      r.remoteMta = o.remoteMta;
      r.lastError = undefined;
      r.lastStatus = undefined;
    } else if (o.kind === 'bounced') {
      r.status = 'bounced';
      r.statusCode = o.statusCode;
      r.lastError = o.error;
      r.lastStatus = o.statusCode;
      r.remoteMta = o.remoteMta;
      r.reported = false;
    } else {
      r.lastError = o.error;
      r.lastStatus = o.statusCode;
      r.remoteMta = o.remoteMta;
      ds.lastError = o.error;
      ds.lastStatus = o.statusCode;
    }
  }
  return recorded;
}

/** Pending recipients past their lifetime become unreported bounces (4.4.7); returns them. */
export function expireOverdue(ds: DeliveryState, receivedAt: number, now: number, cfg: RelayConfig): RecipientState[] {
  const expiring = ds.recipients.filter((r) => r.status === 'pending' && now - receivedAt >= retryScheduleFor(cfg, r.address).maxLifetimeMs);
  for (const r of expiring) {
    r.status = 'bounced';
    r.statusCode = '4.4.7';
    r.lastError = `delivery time expired after ${ds.attempts} attempts; last error: ${r.lastError ?? 'none'}`;
    r.reported = false;
  }
  return expiring;
}

/**
 * The soonest retry any pending recipient's schedule asks for after attempt
 * number `ds.attempts`, never past its lifetime. A recipient the delivery
 * agent's shaping deferred (`shaped`: address → retryAt) is retried at the
 * time it gave instead of on the backoff schedule.
 */
export function nextRetryAt(ds: DeliveryState, receivedAt: number, now: number, cfg: RelayConfig, shaped: ReadonlyMap<string, number> = new Map()): number {
  let next = Infinity;
  for (const r of ds.recipients) {
    if (r.status !== 'pending') continue;
    const s = retryScheduleFor(cfg, r.address);
    const delay = s.backoffMs[Math.max(0, Math.min(ds.attempts - 1, s.backoffMs.length - 1))]!;
    next = Math.min(next, shaped.get(r.address) ?? now + delay, receivedAt + s.maxLifetimeMs);
  }
  return next;
}

/** Recipients deferred by the agent's traffic shaping (provider suspended, rate reached): address → retryAt. */
export function shapingRetries(outcomes: readonly RecipientOutcome[]): Map<string, number> {
  return new Map(outcomes.flatMap((o) => (o.kind === 'deferred' && o.retryAt !== undefined ? [[o.address, o.retryAt] as const] : [])));
}

/** An attempt counts (for the backoff schedule) unless shaping deferred every recipient of it: that is not a failure. */
export function countsAsAttempt(outcomes: readonly RecipientOutcome[]): boolean {
  return outcomes.length === 0 || outcomes.some((o) => o.kind !== 'deferred' || o.retryAt === undefined);
}

/** The retry schedule for one recipient: its route's own, else relay.backoff / relay.maxLifetime. */
function retryScheduleFor(cfg: RelayConfig, address: string): { backoffMs: number[]; maxLifetimeMs: number } {
  const plan = routeFor(cfg, domainOf(address));
  const hop = plan.kind === 'relay' && plan.via === 'route' ? plan.hop : undefined;
  return { backoffMs: hop?.backoffMs ?? cfg.backoffMs, maxLifetimeMs: hop?.maxLifetimeMs ?? cfg.maxLifetimeMs };
}
