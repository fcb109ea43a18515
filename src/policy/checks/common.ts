/**
 * What the checks share: turning a configured action into a check result,
 * and naming the subject a counter belongs to (account or address).
 */
import type { ReplyName } from '../../replies';
import type { Subject } from '../../state/keys';
import type { ActionSpec } from '../action';
import { prefixOf } from '../ip';
import type { CheckResult, EvalContext } from '../rule';

export interface DefaultReplies {
  readonly reject: ReplyName;
  readonly tempfail: ReplyName;
}

export const POLICY_REPLIES: DefaultReplies = { reject: 'policy_reject', tempfail: 'policy_tempfail' };

/** A configured action as a check result; `accept` means "no objection" (next rule). */
export function fromAction(spec: ActionSpec, dflt: DefaultReplies, extra: Omit<CheckResult, 'outcome'> = {}, detail?: string): CheckResult {
  if (spec.action === 'accept') return { outcome: 'next', ...extra };
  const reply = spec.reply ?? (spec.action === 'reject' ? dflt.reject : spec.action === 'tempfail' ? dflt.tempfail : undefined);
  const d = detail ?? spec.detail;
  return { outcome: spec.action, ...(reply ? { reply } : {}), ...(d ? { detail: d } : {}), ...extra };
}

/** The client address as a counter subject (IPv6 by its prefix, quotas.yaml ipv6Prefix). */
export function ipSubject(ctx: Pick<EvalContext, 'ip' | 'data'>): Subject {
  return { kind: 'ip', id: prefixOf(ctx.ip, ctx.data.quotas.ipv6Prefix) ?? ctx.ip };
}

export function accountSubject(name: string): Subject {
  return { kind: 'a', id: name.toLowerCase() };
}

/** "1h 2m", "35s", "450ms" */
export function humanMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.ceil(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  return m % 60 ? `${h}h ${m % 60}m` : `${h}h`;
}
