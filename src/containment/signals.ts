/**
 * Behaviour signals, kept in the state store (so a fleet shares them and
 * they survive policy reloads). A subject is an account (submission) or a
 * client address (intercept; IPv6 by prefix). Every operation is told the
 * time, so simulations and tests inject their clock.
 *
 *   volume               recipients in the last hour, against the sender's
 *                        own baseline: its daily average over 14 days
 *                        (excluding the last hour)
 *   newRecipients        recipients not written to in the last 30 days,
 *                        per hour and per day (a compromised account writes
 *                        to strangers; newsletters and people to the same
 *                        correspondents again)
 *   newDomainsPerHour    recipient domains not seen in 30 days, per hour
 *   refusedPerHour       recipients refused by remote servers (relay 5xx)
 *                        plus RCPTs refused at our door
 *   authNetworksPerHour  distinct /24 (IPv4) or /48 (IPv6) networks with a
 *                        successful AUTH in the last hour
 *   sameBodyPerDay       recipients of one body fingerprint in 24 hours
 *   dnsblListed          the address became listed (a listing change)
 *
 * Talks to: the state store. Trusts: the caller's subject and facts.
 */
import { createHash } from 'node:crypto';
import { escapeId } from '../state/keys';
import type { StateStore } from '../state/store';

export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;
const KNOWN_WINDOW = 30 * DAY;
const BASELINE_WINDOW = 14 * DAY;

export interface CSubject {
  readonly kind: 'a' | 'ip';
  readonly id: string;
}

export const subjectName = (s: CSubject): string => (s.kind === 'a' ? `account:${s.id}` : `ip:${s.id}`);

const k = (s: CSubject, what: string): string => `sh:ctm:{${s.kind}:${escapeId(s.id)}}:${what}`;

export const ckeys = {
  rcpt1h: (s: CSubject) => k(s, 'r1h'),
  rcpt14d: (s: CSubject) => k(s, 'r14d'),
  known: (s: CSubject) => k(s, 'known'),
  knownDomains: (s: CSubject) => k(s, 'kdom'),
  new1h: (s: CSubject) => k(s, 'n1h'),
  new1d: (s: CSubject) => k(s, 'n1d'),
  newDom1h: (s: CSubject) => k(s, 'nd1h'),
  refused: (s: CSubject) => k(s, 'ref'),
  nets: (s: CSubject) => k(s, 'nets'),
  body: (s: CSubject, fp: string) => k(s, `b:${fp}`),
  dnsbl: (s: CSubject) => k(s, 'dnsbl'),
  complaints: (s: CSubject) => k(s, 'arf'),
  contentSpam: (s: CSubject) => k(s, 'cspam'),
  level: (s: CSubject) => k(s, 'level'),
  legit: (s: CSubject) => k(s, 'legit'),
  peak: (s: CSubject) => k(s, 'peak'),
  notified: (s: CSubject, level: number) => k(s, `ev${level}`),
};

export interface SignalValues {
  readonly rcpt1h: number;
  readonly dailyAverage: number;
  /** The busiest hour (recipients) in 14 days that raised no signal. */
  readonly peakHour: number;
  readonly newRecipientsPerHour: number;
  readonly newRecipientsPerDay: number;
  readonly newDomainsPerHour: number;
  readonly refusedPerHour: number;
  readonly authNetworksPerHour: number;
  readonly sameBodyPerDay: number;
  readonly dnsblListed: number;
  /** Verified complaints in 14 days, and the recipients of those 14 days they are a share of. */
  readonly complaints: number;
  readonly rcpt14d: number;
  readonly contentSpamPerDay: number;
}

/** The network an address belongs to for "AUTH from many networks": /24 or /48. */
export function networkOf(ip: string): string {
  const v4 = /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.\d+$/i.exec(ip);
  if (v4) return `${v4[1]}.${v4[2]}.${v4[3]}.0/24`;
  const parts = ip.toLowerCase().split('::')[0]!.split(':');
  return `${parts.slice(0, 3).map((p) => p || '0').join(':')}::/48`;
}

/**
 * A body fingerprint that survives the cheap personalisation tricks: lower
 * case, digits and URLs' query strings dropped, whitespace collapsed.
 */
export function bodyFingerprint(body: string | Buffer): string {
  const text = (typeof body === 'string' ? body : body.toString('latin1'))
    .toLowerCase()
    .replace(/(https?:\/\/[^\s?#"'<>]+)[?#][^\s"'<>]*/g, '$1')
    .replace(/[0-9]+/g, '')
    .replace(/\s+/g, ' ')
    .trim();
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

export const domainOf = (addr: string): string => addr.slice(addr.lastIndexOf('@') + 1).toLowerCase();

export class Signals {
  constructor(private readonly store: StateStore) {}

  /** A message offered at end of DATA: its recipients and body fingerprint. */
  async recordMessage(s: CSubject, recipients: readonly string[], fingerprint: string | undefined, now: number): Promise<void> {
    const n = recipients.length;
    if (n === 0) return;
    await this.store.record(ckeys.rcpt1h(s), HOUR, n, now);
    await this.store.record(ckeys.rcpt14d(s), BASELINE_WINDOW, n, now);
    let fresh = 0;
    let freshDomains = 0;
    // setSize prunes at `now`; after that each addToSet grows the set by one exactly when the member is new.
    let known = await this.store.setSize(ckeys.known(s), KNOWN_WINDOW, now);
    let knownDomains = await this.store.setSize(ckeys.knownDomains(s), KNOWN_WINDOW, now);
    for (const r of recipients) {
      const addr = r.toLowerCase();
      const k1 = await this.store.addToSet(ckeys.known(s), addr, KNOWN_WINDOW, now);
      if (k1 > known) fresh++;
      known = k1;
      const k2 = await this.store.addToSet(ckeys.knownDomains(s), domainOf(addr), KNOWN_WINDOW, now);
      if (k2 > knownDomains) freshDomains++;
      knownDomains = k2;
    }
    if (fresh > 0) {
      await this.store.record(ckeys.new1h(s), HOUR, fresh, now);
      await this.store.record(ckeys.new1d(s), DAY, fresh, now);
    }
    if (freshDomains > 0) await this.store.record(ckeys.newDom1h(s), HOUR, freshDomains, now);
    if (fingerprint) await this.store.record(ckeys.body(s, fingerprint), DAY, n, now);
  }

  /**
   * Remember correspondents without counting anything (importing history:
   * a migration, or a simulation's past 30 days).
   */
  async learnRecipients(s: CSubject, recipients: readonly string[], now: number): Promise<void> {
    for (const r of recipients) {
      await this.store.addToSet(ckeys.known(s), r.toLowerCase(), KNOWN_WINDOW, now);
      await this.store.addToSet(ckeys.knownDomains(s), domainOf(r), KNOWN_WINDOW, now);
    }
  }

  /** Raise the subject's peak hour (called only when nothing fired: spam cannot train it). */
  async raisePeak(s: CSubject, rcpt1h: number, now: number): Promise<void> {
    const cur = await this.store.get(ckeys.peak(s), now);
    if (rcpt1h > cur) await this.store.incr(ckeys.peak(s), rcpt1h - cur, BASELINE_WINDOW, now);
  }

  /** Recipients refused: by a remote server (relay 5xx) or at our door. */
  async recordRefused(s: CSubject, n: number, now: number): Promise<void> {
    if (n > 0) await this.store.record(ckeys.refused(s), HOUR, n, now);
  }

  async recordAuth(s: CSubject, ip: string, now: number): Promise<void> {
    await this.store.addToSet(ckeys.nets(s), networkOf(ip), HOUR, now);
  }

  /** A DNSBL listing change: listed (kept for `forMs`) or delisted. */
  async recordDnsbl(s: CSubject, listed: boolean, forMs: number, now: number): Promise<void> {
    if (listed) {
      if ((await this.store.get(ckeys.dnsbl(s), now)) === 0) await this.store.incr(ckeys.dnsbl(s), 1, forMs, now);
    } else await this.store.del(ckeys.dnsbl(s));
  }

  /** Verified complaints (14 days) or content-scanner spam verdicts (24 hours) from outside the session. */
  async recordComplaints(s: CSubject, n: number, now: number): Promise<void> {
    if (n > 0) await this.store.record(ckeys.complaints(s), BASELINE_WINDOW, n, now);
  }

  async recordContentSpam(s: CSubject, n: number, now: number): Promise<void> {
    if (n > 0) await this.store.record(ckeys.contentSpam(s), DAY, n, now);
  }

  async read(s: CSubject, fingerprint: string | undefined, now: number): Promise<SignalValues> {
    const rcpt1h = await this.store.count(ckeys.rcpt1h(s), HOUR, now);
    const r14 = await this.store.count(ckeys.rcpt14d(s), BASELINE_WINDOW, now);
    return {
      rcpt1h,
      dailyAverage: Math.max(0, r14 - rcpt1h) / 14,
      peakHour: await this.store.get(ckeys.peak(s), now),
      newRecipientsPerHour: await this.store.count(ckeys.new1h(s), HOUR, now),
      newRecipientsPerDay: await this.store.count(ckeys.new1d(s), DAY, now),
      newDomainsPerHour: await this.store.count(ckeys.newDom1h(s), HOUR, now),
      refusedPerHour: await this.store.count(ckeys.refused(s), HOUR, now),
      authNetworksPerHour: await this.store.setSize(ckeys.nets(s), HOUR, now),
      sameBodyPerDay: fingerprint ? await this.store.count(ckeys.body(s, fingerprint), DAY, now) : 0,
      dnsblListed: await this.store.get(ckeys.dnsbl(s), now),
      complaints: await this.store.count(ckeys.complaints(s), BASELINE_WINDOW, now),
      rcpt14d: r14,
      contentSpamPerDay: await this.store.count(ckeys.contentSpam(s), DAY, now),
    };
  }

  /** Forget the short-term signals (the abuse desk released the subject). */
  async clearShortTerm(s: CSubject): Promise<void> {
    for (const key of [ckeys.rcpt1h(s), ckeys.new1h(s), ckeys.new1d(s), ckeys.newDom1h(s), ckeys.refused(s), ckeys.nets(s), ckeys.dnsbl(s)]) await this.store.del(key);
  }
}
