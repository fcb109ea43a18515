/**
 * The entry point for signals that reach containment from OUTSIDE the SMTP
 * conversation: a mailbox provider's complaint (an ARF report, RFC 5965),
 * a content scanner's verdict on a message (rspamd), a DNSBL listing change
 * of an intercept address. The feeds that produce them (src/containment/
 * feedback…, src/content/…) authenticate and map their input first; this
 * file only fixes the contract they code against:
 *
 *   await containment.external(who, signal, n)
 *
 *   who      { account: 'name' }  the authenticated account that sent it
 *            { ip: 'address' }    an intercept client (an IPv6 address is
 *                                 folded to the quotas' ipv6Prefix here)
 *   signal   'complaint'    n VERIFIED complaints about mail `who` sent
 *                           (the caller checked the report's DKIM/DMARC
 *                           against the configured providers and mapped it
 *                           to `who`; an unverified report must never come
 *                           here). Counted over 14 days; fires at
 *                           max(complaints, complaintShare × recipients
 *                           in 14 days) — a strong signal (weight 2 by
 *                           default: one is enough to hold a residential
 *                           account for the abuse desk).
 *            'contentSpam'  n messages from `who` the content scanner
 *                           judged spam (its reject/add-header action, not
 *                           a soft score). Counted over 24 hours; fires at
 *                           contentSpamPerDay.
 *            'dnsblListed'  n > 0: the address is now listed (kept for
 *                           holdFor); n = 0: it was delisted (cleared).
 *   n        a count ≥ 0 (default 1); fractions are refused.
 *
 * The call records the signal in the state store (so a fleet shares it),
 * scores the subject at once and applies the response (sticky hold or
 * suspension, the account's suspended flag, the event: log, metric, abuse
 * desk webhook) — a complaint contains an account even if it sends nothing
 * more through this node. It resolves to what containment decided. With
 * containment off (no containment.yaml, `enabled: false`) it records
 * nothing and answers response 'none'. It throws only on a bad argument
 * (a bug in the caller) or a state store failure.
 *
 * Talks to: nothing (types and argument checks). Trusts: nothing.
 */
import type { ResponseName, SignalName } from './config';

export const EXTERNAL_SIGNALS = ['complaint', 'contentSpam', 'dnsblListed'] as const;
export type ExternalSignal = (typeof EXTERNAL_SIGNALS)[number];

/** Who the signal is about: an account on submission, an address on intercept. */
export type ExternalSubject = { readonly account: string } | { readonly ip: string };

export interface ExternalResult {
  /** "account:NAME" or "ip:ADDRESS" (as in containment events). */
  readonly subject: string;
  /** The response in force after this signal (sticky or from the score). */
  readonly response: ResponseName | 'none';
  readonly score: number;
  readonly fired: readonly SignalName[];
}

/** Argument check for Containment.external (a caller's bug is an exception, not a verdict). */
export function checkExternal(who: ExternalSubject, signal: ExternalSignal, n: number): void {
  if (!EXTERNAL_SIGNALS.includes(signal)) throw new TypeError(`containment.external: unknown signal "${String(signal)}" (${EXTERNAL_SIGNALS.join(', ')})`);
  if (!Number.isInteger(n) || n < 0) throw new TypeError(`containment.external: n must be an integer ≥ 0, got ${n}`);
  const id = 'account' in who ? who.account : 'ip' in who ? who.ip : undefined;
  if (typeof id !== 'string' || id.length === 0) throw new TypeError('containment.external: give { account } or { ip }');
}
