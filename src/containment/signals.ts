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
 * and the signals an attacker inside the victim's own habits cannot avoid:
 *   volumeDay            recipients in 24 hours against the busiest day of
 *                        14 days (known recipients count too)
 *   addressBook          distinct already-known correspondents written to
 *                        in 24 hours, as a share of the address book
 *   newLinkDomains       recipients in 24 hours of messages linking to a
 *                        domain the subject first linked to in the last 7
 *                        days AND that is fresh in the fleet (few senders in
 *                        14 days, or most of them in the last day), once
 *                        the subject linked to ≥ 2 distinct URLs at such
 *                        domains in the day (not one page sent to everyone)
 *   identityChanges      messages in 24 hours with a Reply-To the subject
 *                        never used (not its own address) or a From display
 *                        name other than the ones it used in 30 days
 *   strangerHours        hours of the last 24 in which the subject wrote to
 *                        at least STRANGERS_IN_AN_HOUR new recipients (a
 *                        paced run to a bought list; one burst is one hour)
 *   pushedPerHour        MAILs a containment throttle refused in the hour
 *   authNewNetworks      AUTH from networks not used in 30 days, per day
 *                        (in the account's first week, no habits yet: only
 *                        a network beyond its first two),
 *                        while the client sends from such a network
 *   campaign             (per message) distinct subjects of the whole fleet
 *                        that sent this body, or a fresh link domain of it,
 *                        in 24 hours: one campaign through many accounts
 *
 * Talks to: the state store. Trusts: the caller's subject and facts.
 */
import { bodyFingerprint, type MessageTraits } from '../message-traits';
import { escapeId, subjectLabel } from '../state/keys';
import type { StateStore } from '../state/store';

export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;
const KNOWN_WINDOW = 30 * DAY;
const BASELINE_WINDOW = 14 * DAY;
/** A link domain is established in the fleet from this many senders in 14 days, unless most of them came in the last day. */
const ESTABLISHED_SENDERS = 5;
/** Bodies shorter than this (normalised) are too common to be a campaign ("thanks!"). */
const CAMPAIGN_MIN_BODY = 100;
const STRANGERS_IN_AN_HOUR = 2;
const LINK_YOUTH = 7 * DAY;
/** Distinct URLs at fresh link domains in a day from which such links count as landing sites. */
const ROTATING_URLS = 2;
const FIRST_WEEK = 7 * DAY;
/** Networks an account in its first week may use before one more counts as new. */
const FIRST_WEEK_NETWORKS = 2;

export interface CSubject {
  readonly kind: 'a' | 'ip';
  readonly id: string;
}

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
  rcpt1d: (s: CSubject) => k(s, 'r1d'),
  peakDay: (s: CSubject) => k(s, 'peakd'),
  book1d: (s: CSubject) => k(s, 'bk1d'),
  links: (s: CSubject) => k(s, 'links'),
  linkYouth: (s: CSubject, domain: string) => k(s, `ly:${escapeId(domain)}`),
  newLink1d: (s: CSubject) => k(s, 'nl1d'),
  /** Distinct URLs (hashes) the subject linked to at young, fresh link domains in a day. */
  linkUrls: (s: CSubject) => k(s, 'lu1d'),
  replyTos: (s: CSubject) => k(s, 'rto'),
  names: (s: CSubject) => k(s, 'names'),
  ident1d: (s: CSubject) => k(s, 'id1d'),
  nets30: (s: CSubject) => k(s, 'nets30'),
  newNet1d: (s: CSubject) => k(s, 'nn1d'),
  /** Present for a day after the subject's first AUTH from a network new to it. */
  netYouth: (s: CSubject, net: string) => k(s, `ny:${escapeId(net)}`),
  /** Present while the subject AUTHs at least once in 30 days; the first-week marker lives 7 days from the first AUTH. */
  authSince: (s: CSubject) => k(s, 'a0'),
  authFirstWeek: (s: CSubject) => k(s, 'a7'),
  strangerHours: (s: CSubject) => k(s, 'shr'),
  pushed: (s: CSubject) => k(s, 'push'),
  /** Fleet-wide ranking of subjects by the score of their last scored message (the console's senders page). */
  scores: () => 'sh:ctm:fleet:{scores}',
  /** Fleet-wide: distinct subjects that sent a body fingerprint or a link domain (day, 14 days). */
  fleet: (what: 'b' | 'ld', id: string, window: '1d' | '14d') => `sh:ctm:fleet:{${what}:${escapeId(id)}}:${window}`,
};

/** What a message adds to the picture (traits from the session; a fingerprint alone from older callers). */
export type MessageFacts = MessageTraits | string | undefined;

const traitsOf = (f: MessageFacts): Partial<MessageTraits> => (typeof f === 'string' ? { bodyFingerprint: f } : (f ?? {}));

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
  readonly rcpt1d: number;
  /** The busiest day (recipients) in 14 days that raised no signal. */
  readonly peakDay: number;
  /** Distinct known correspondents written to in 24 h, and the size of the address book (30 days). */
  readonly addressBookDay: number;
  readonly addressBookSize: number;
  readonly newLinkRecipientsPerDay: number;
  readonly identityChangesPerDay: number;
  readonly authNewNetworksPerDay: number;
  readonly strangerHours: number;
  /** MAIL commands refused by a containment throttle in the last hour. */
  readonly pushedPerHour: number;
  /** This message's campaign: distinct subjects in the fleet that sent it (its body or a fresh link domain) in 24 h. */
  readonly campaignSenders: number;
}

/** The network an address belongs to for "AUTH from many networks": /24 or /48. */
export function networkOf(ip: string): string {
  const v4 = /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.\d+$/i.exec(ip);
  if (v4) return `${v4[1]}.${v4[2]}.${v4[3]}.0/24`;
  const parts = ip.toLowerCase().split('::')[0]!.split(':');
  return `${parts.slice(0, 3).map((p) => p || '0').join(':')}::/48`;
}

export { bodyFingerprint };

export const domainOf = (addr: string): string => addr.slice(addr.lastIndexOf('@') + 1).toLowerCase();

export class Signals {
  constructor(private readonly store: StateStore) {}

  /**
   * A message offered at end of DATA: its recipients and traits. Returns
   * the message's campaign size (distinct subjects of the fleet sending it).
   */
  async recordMessage(s: CSubject, recipients: readonly string[], facts: MessageFacts, now: number, sender?: string): Promise<number> {
    const n = recipients.length;
    if (n === 0) return 0;
    const t = traitsOf(facts);
    await this.store.record(ckeys.rcpt1h(s), HOUR, n, now);
    await this.store.record(ckeys.rcpt1d(s), DAY, n, now);
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
      else await this.store.addToSet(ckeys.book1d(s), addr, DAY, now);
      known = k1;
      const k2 = await this.store.addToSet(ckeys.knownDomains(s), domainOf(addr), KNOWN_WINDOW, now);
      if (k2 > knownDomains) freshDomains++;
      knownDomains = k2;
    }
    if (fresh > 0) {
      const lastHour = await this.store.record(ckeys.new1h(s), HOUR, fresh, now);
      await this.store.record(ckeys.new1d(s), DAY, fresh, now);
      if (lastHour >= STRANGERS_IN_AN_HOUR) await this.store.addToSet(ckeys.strangerHours(s), String(Math.floor(now / HOUR)), DAY, now);
    }
    if (freshDomains > 0) await this.store.record(ckeys.newDom1h(s), HOUR, freshDomains, now);
    if (t.bodyFingerprint) await this.store.record(ckeys.body(s, t.bodyFingerprint), DAY, n, now);
    if ((await this.identityChanged(s, t, sender, now)) > 0) await this.store.record(ckeys.ident1d(s), DAY, 1, now);
    const who = subjectLabel(s);
    let campaign = 0;
    if (t.bodyFingerprint && (t.bodyChars ?? 0) >= CAMPAIGN_MIN_BODY) campaign = await this.store.addToSet(ckeys.fleet('b', t.bodyFingerprint, '1d'), who, DAY, now);
    let newLink = false;
    for (const d of t.linkDomains ?? []) {
      const day = await this.store.addToSet(ckeys.fleet('ld', d, '1d'), who, DAY, now);
      const fortnight = await this.store.addToSet(ckeys.fleet('ld', d, '14d'), who, BASELINE_WINDOW, now);
      const freshInFleet = fortnight < ESTABLISHED_SENDERS || day * 2 >= fortnight;
      if (freshInFleet) campaign = Math.max(campaign, day);
      // Young for the subject: first linked in the last LINK_YOUTH (a run keeps its landing site for days).
      const before = await this.store.setSize(ckeys.links(s), KNOWN_WINDOW, now);
      const firstTime = (await this.store.addToSet(ckeys.links(s), d, KNOWN_WINDOW, now)) > before;
      if (firstTime) await this.store.incr(ckeys.linkYouth(s, d), 1, LINK_YOUTH, now);
      if (!freshInFleet || !(firstTime || (await this.store.get(ckeys.linkYouth(s, d), now)) > 0)) continue;
      // Landing sites reached through many URLs in a day (a tracking id per recipient, paths or
      // whole domains rotating against URL blocklists), not one page everyone is sent to (an
      // invitation, an album).
      let urls = 0;
      for (const u of t.linkUrls?.[d] ?? []) urls = await this.store.addToSet(ckeys.linkUrls(s), u, DAY, now);
      if (!t.linkUrls || urls >= ROTATING_URLS) newLink = true;
    }
    if (newLink) await this.store.record(ckeys.newLink1d(s), DAY, n, now);
    return campaign;
  }

  /** A Reply-To the subject never used (not its own address), or a display name it never used while it had one. */
  private async identityChanged(s: CSubject, t: Partial<MessageTraits>, sender: string | undefined, now: number): Promise<number> {
    let changes = 0;
    if (t.replyTo && t.replyTo !== sender?.toLowerCase()) {
      const before = await this.store.setSize(ckeys.replyTos(s), KNOWN_WINDOW, now);
      if ((await this.store.addToSet(ckeys.replyTos(s), t.replyTo, KNOWN_WINDOW, now)) > before) changes++;
    }
    if (t.fromName) {
      const before = await this.store.setSize(ckeys.names(s), KNOWN_WINDOW, now);
      if ((await this.store.addToSet(ckeys.names(s), t.fromName, KNOWN_WINDOW, now)) > before && before > 0) changes++;
    }
    return changes;
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
  async raisePeak(s: CSubject, rcpt1h: number, now: number, rcpt1d = 0): Promise<void> {
    const cur = await this.store.get(ckeys.peak(s), now);
    if (rcpt1h > cur) await this.store.incr(ckeys.peak(s), rcpt1h - cur, BASELINE_WINDOW, now);
    const day = await this.store.get(ckeys.peakDay(s), now);
    if (rcpt1d > day) await this.store.incr(ckeys.peakDay(s), rcpt1d - day, BASELINE_WINDOW, now);
  }

  /** A MAIL refused by a containment throttle (the sender keeps pushing). */
  async recordPushed(s: CSubject, now: number): Promise<void> {
    await this.store.record(ckeys.pushed(s), HOUR, 1, now);
  }

  /** Recipients refused: by a remote server (relay 5xx) or at our door. */
  async recordRefused(s: CSubject, n: number, now: number): Promise<void> {
    if (n > 0) await this.store.record(ckeys.refused(s), HOUR, n, now);
  }

  async recordAuth(s: CSubject, ip: string, now: number): Promise<void> {
    const net = networkOf(ip);
    await this.store.addToSet(ckeys.nets(s), net, HOUR, now);
    // An account in its first week has no usual networks yet: its first FIRST_WEEK_NETWORKS
    // (a home line and a phone) become them; only a network beyond those is "new".
    if ((await this.store.get(ckeys.authSince(s), now)) === 0) await this.store.incr(ckeys.authFirstWeek(s), 1, FIRST_WEEK, now);
    await this.store.incr(ckeys.authSince(s), (await this.store.get(ckeys.authSince(s), now)) === 0 ? 1 : 0, KNOWN_WINDOW, now);
    const before = await this.store.setSize(ckeys.nets30(s), KNOWN_WINDOW, now);
    const isNew = (await this.store.addToSet(ckeys.nets30(s), net, KNOWN_WINDOW, now)) > before;
    if (isNew && ((await this.store.get(ckeys.authFirstWeek(s), now)) === 0 || before >= FIRST_WEEK_NETWORKS)) {
      await this.store.record(ckeys.newNet1d(s), DAY, 1, now);
      await this.store.incr(ckeys.netYouth(s, net), 1, DAY, now);
    }
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

  /**
   * `ip`: the client this assessment is for. Given, the new-network count
   * counts only while the client itself is on a network new to the subject
   * (an attacker sends from the network it logs in from; a phone that roamed
   * this morning says nothing about mail from home tonight).
   */
  async read(s: CSubject, facts: MessageFacts, now: number, campaignSenders = 0, ip?: string): Promise<SignalValues> {
    const fingerprint = traitsOf(facts).bodyFingerprint;
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
      rcpt1d: await this.store.count(ckeys.rcpt1d(s), DAY, now),
      peakDay: await this.store.get(ckeys.peakDay(s), now),
      addressBookDay: await this.store.setSize(ckeys.book1d(s), DAY, now),
      addressBookSize: await this.store.setSize(ckeys.known(s), KNOWN_WINDOW, now),
      newLinkRecipientsPerDay: await this.store.count(ckeys.newLink1d(s), DAY, now),
      identityChangesPerDay: await this.store.count(ckeys.ident1d(s), DAY, now),
      authNewNetworksPerDay: ip && s.kind === 'a' && (await this.store.get(ckeys.netYouth(s, networkOf(ip)), now)) === 0 ? 0 : await this.store.count(ckeys.newNet1d(s), DAY, now),
      strangerHours: await this.store.setSize(ckeys.strangerHours(s), DAY, now),
      pushedPerHour: await this.store.count(ckeys.pushed(s), HOUR, now),
      campaignSenders,
    };
  }

  /** Forget the short-term signals (the abuse desk released the subject). */
  async clearShortTerm(s: CSubject): Promise<void> {
    for (const key of [ckeys.rcpt1h(s), ckeys.rcpt1d(s), ckeys.new1h(s), ckeys.new1d(s), ckeys.newDom1h(s), ckeys.refused(s), ckeys.nets(s), ckeys.dnsbl(s), ckeys.book1d(s), ckeys.newLink1d(s), ckeys.linkUrls(s), ckeys.ident1d(s), ckeys.newNet1d(s), ckeys.strangerHours(s), ckeys.pushed(s)]) await this.store.del(key);
  }
}
