/**
 * Containment: spotting compromised accounts and infected hosts from their
 * behaviour, and containing them within a few messages.
 *
 * Signals (signals.ts) are recorded per subject (account on submission,
 * client address on intercept) as mail is offered, refused and relayed.
 * Each signal over its per-plan threshold (containment.yaml) adds its weight
 * to a score; the score picks the response:
 *   throttle  tempfail (451 4.7.1) at MAIL and DATA while the score stays up
 *   hold      accept into the hold queue for the abuse desk (`smarthost queue
 *             hold/release/delete`, admin API); sticky for holdFor
 *   suspend   the account's suspended flag is set (AccountStore.upsert) and
 *             its mail refused; an intercept address is refused at connect;
 *             sticky for suspendFor (or until the desk releases it)
 * Each new response raises an event: a log line (evt "containment"), the
 * observer (metrics) and a webhook POST to the abuse desk with subject,
 * signals and evidence (notifier.ts, retried until acknowledged).
 *
 * Escape hatches: allow-lists per account, address and plan (never scored);
 * `markLegitimate` (the abuse desk: "this pattern is theirs") multiplies the
 * subject's thresholds by legitimate.factor for legitimate.for and clears
 * its short-term signals and sticky response; `release` only clears.
 *
 * ContainedHooks wraps the policy engine's PolicyHooks: the engine decides
 * first (static rules and quotas); containment can only make a verdict
 * stricter, never more permissive.
 *
 * Talks to: the state store, the account store (suspend), the notifier, the
 * logger. Trusts: the session's facts and the relay's outcomes.
 */
import type { Account } from '../accounts/store';
import type { ClientInfo, Verdict } from '../envelope';
import type { Logger } from '../log';
import type { AuthGate, AuthVerdict, ConnectDecision, ConnectionSlot, ConnectFacts, DataFacts, DisconnectFacts, PolicyHooks, RcptFacts, TransactionFacts } from '../policy/types';
import type { StateStore } from '../state/store';
import { type ContainmentConfig, type PlanThresholds, type ResponseName, type SignalName } from './config';
import { checkExternal, type ExternalResult, type ExternalSignal, type ExternalSubject } from './external';
import type { WebhookNotifier } from './notifier';
import type { MessageTraits } from '../message-traits';
import { ckeys, type CSubject, DAY, domainOf, HOUR, type MessageFacts, Signals, type SignalValues } from './signals';
import { clientSubject, subjectLabel } from '../state/keys';

/** The data verdict of a suspicious sender's message: accepted, to leave from the quarantine pool (relay/egress.ts). */
export const QUARANTINE_RULE = 'containment.quarantine';

export const LEVELS: readonly (ResponseName | 'none')[] = ['none', 'throttle', 'hold', 'suspend'];

export interface ContainmentEvent {
  readonly type: 'containment';
  readonly response: ResponseName;
  readonly subject: string;
  readonly account?: string;
  readonly ip?: string;
  readonly plan: string;
  readonly score: number;
  readonly fired: readonly SignalName[];
  readonly signals: SignalValues;
  readonly evidence: { readonly recentRecipients: readonly string[]; readonly recentIps: readonly string[]; readonly fingerprint?: string };
  readonly at: string;
}

export interface ContainmentObserver {
  /** A subject reached a new response (once per response and subject until it lapses). */
  event?(e: ContainmentEvent): void;
  /** A message or transaction refused, held or throttled by containment, or accepted for the quarantine pool. */
  contained?(response: ResponseName | 'quarantine', stage: 'connect' | 'mail' | 'data'): void;
}

export interface AccountWriter {
  get(name: string): Account | undefined;
  upsert?(name: string, change: (a: Account | undefined) => Account | undefined): Promise<void>;
}

export interface ContainmentDeps {
  readonly store: StateStore;
  readonly logger: Logger;
  readonly clock?: () => number;
  readonly accounts?: AccountWriter;
  readonly notifier?: WebhookNotifier;
  readonly observer?: ContainmentObserver;
  /** The plan of a client: the account's plan on submission, the netblock class's on intercept. */
  readonly planOf: (client: ClientInfo, account?: Account) => string | undefined;
  /** The counter subject of an intercept address (IPv6 by prefix). */
  readonly ipSubject?: (ip: string) => string;
}

interface Evidence {
  recipients: string[];
  ips: string[];
  fingerprint?: string;
}

const EVIDENCE_SUBJECTS = 10_000;
/** The score ranking keeps this many subjects (the console shows the top 50). */
const RANKED_SUBJECTS = 1000;

export interface Assessment {
  readonly level: number;
  readonly score: number;
  readonly fired: SignalName[];
  readonly signals: SignalValues;
  readonly exempt: boolean;
}

export class Containment {
  readonly signals: Signals;
  private readonly clock: () => number;
  private readonly evidence = new Map<string, Evidence>();

  constructor(readonly config: ContainmentConfig, private readonly deps: ContainmentDeps) {
    this.signals = new Signals(deps.store);
    this.clock = deps.clock ?? Date.now;
  }

  /**
   * Learning: signals are recorded but nothing is scored or contained (a
   * rollout's first days, while baselines form; the simulation's warm-up).
   */
  learning = false;

  get enabled(): boolean {
    return this.config.enabled;
  }

  subjectOf(client: ClientInfo): CSubject | undefined {
    return clientSubject(client, (ip) => this.deps.ipSubject?.(ip) ?? ip);
  }

  private thresholds(plan: string | undefined): PlanThresholds {
    return this.config.plans.get(plan ?? this.config.defaultPlan) ?? this.config.plans.get(this.config.defaultPlan)!;
  }

  private exempt(s: CSubject, plan: string | undefined): boolean {
    if (plan && this.config.allowPlans.has(plan)) return true;
    return s.kind === 'a' ? this.config.allowAccounts.has(s.id) : this.config.allowIps.has(s.id);
  }

  /** Score a subject's current signals against its plan's thresholds. */
  async assess(s: CSubject, plan: string | undefined, facts: MessageFacts, now = this.clock(), campaignSenders = 0, ip?: string): Promise<Assessment> {
    const signals = await this.signals.read(s, facts, now, campaignSenders, ip);
    if (!this.enabled || this.learning || this.exempt(s, plan)) return { level: 0, score: 0, fired: [], signals, exempt: true };
    const th = this.thresholds(plan);
    const f = (await this.deps.store.get(ckeys.legit(s), now)) > 0 ? this.config.legitimateFactor : 1;
    const over = (v: number, t: number) => t > 0 && v >= t * f;
    const fired: SignalName[] = [];
    if (th.volumeFloor > 0 && over(signals.rcpt1h, Math.max(th.volumeFloor, th.volumeFactor * signals.dailyAverage, th.volumePeakFactor * signals.peakHour))) fired.push('volume');
    // A list that grows (newsletter sign-ups) brings strangers in proportion to its size.
    const grown = (t: number) => (t > 0 ? Math.max(t, th.newShareOfPeak * signals.peakHour) : 0);
    if (over(signals.newRecipientsPerHour, grown(th.newRecipientsPerHour))) fired.push('newRecipientsPerHour');
    if (over(signals.newRecipientsPerDay, grown(th.newRecipientsPerDay))) fired.push('newRecipientsPerDay');
    if (over(signals.newDomainsPerHour, grown(th.newDomainsPerHour))) fired.push('newDomainsPerHour');
    // A big list always has a few dead addresses: at least refusedShare of the hour's recipients.
    if (th.refusedPerHour > 0 && over(signals.refusedPerHour, Math.max(th.refusedPerHour, th.refusedShare * signals.rcpt1h))) fired.push('refusedPerHour');
    if (over(signals.authNetworksPerHour, th.authNetworksPerHour)) fired.push('authNetworksPerHour');
    // A newsletter is one body to its whole list: its own busiest hour raises the bar.
    if (th.sameBodyPerDay > 0 && over(signals.sameBodyPerDay, Math.max(th.sameBodyPerDay, th.volumePeakFactor * signals.peakHour))) fired.push('sameBodyPerDay');
    if (signals.dnsblListed > 0) fired.push('dnsblListed');
    if (th.complaints > 0 && over(signals.complaints, Math.max(th.complaints, th.complaintShare * signals.rcpt14d))) fired.push('complaints');
    if (over(signals.contentSpamPerDay, th.contentSpamPerDay)) fired.push('contentSpam');
    // Volume against the subject's own busiest day, known correspondents included (an address-book run).
    if (th.volumeDayFloor > 0 && over(signals.rcpt1d, Math.max(th.volumeDayFloor, th.volumeDayFactor * signals.peakDay))) fired.push('volumeDay');
    if (th.addressBookShare > 0 && over(signals.addressBookDay, Math.max(th.addressBookMin, th.addressBookShare * signals.addressBookSize))) fired.push('addressBook');
    if (over(signals.newLinkRecipientsPerDay, th.newLinkRecipientsPerDay)) fired.push('newLinkDomains');
    if (over(signals.identityChangesPerDay, th.identityChangesPerDay)) fired.push('identityChange');
    if (over(signals.authNewNetworksPerDay, th.authNewNetworksPerDay)) fired.push('authNewNetwork');
    if (over(signals.strangerHours, th.strangerHours)) fired.push('strangerHours');
    if (over(signals.pushedPerHour, th.pushedPerHour)) fired.push('pushing');
    if (over(signals.campaignSenders, th.campaignSenders)) fired.push('campaign');
    const score = fired.reduce((a, n) => a + this.config.weights[n], 0);
    const r = th.responses;
    const level = r.suspend > 0 && score >= r.suspend ? 3 : r.hold > 0 && score >= r.hold ? 2 : r.throttle > 0 && score >= r.throttle ? 1 : 0;
    return { level, score, fired, signals, exempt: false };
  }

  private note(s: CSubject, f: { recipients?: readonly string[]; ip?: string; fingerprint?: string }): void {
    const name = subjectLabel(s);
    let e = this.evidence.get(name);
    if (!e) {
      if (this.evidence.size >= EVIDENCE_SUBJECTS) this.evidence.delete(this.evidence.keys().next().value as string);
      e = { recipients: [], ips: [] };
      this.evidence.set(name, e);
    }
    if (f.recipients) e.recipients = [...e.recipients, ...f.recipients].slice(-10);
    if (f.ip && !e.ips.includes(f.ip)) e.ips = [...e.ips, f.ip].slice(-10);
    if (f.fingerprint) e.fingerprint = f.fingerprint;
  }

  /** Make a level sticky (hold, suspend) and raise its event once. */
  private async respond(s: CSubject, a: Assessment, plan: string | undefined, client: ClientInfo | undefined, now: number): Promise<void> {
    if (a.level <= 0) return;
    const level = a.level;
    if (level >= 2) {
      const cur = await this.deps.store.get(ckeys.level(s), now);
      if (level > cur) await this.deps.store.incr(ckeys.level(s), level - cur, level === 3 ? this.config.suspendForMs : this.config.holdForMs, now);
    }
    if (level === 3 && s.kind === 'a' && this.deps.accounts?.upsert) {
      await this.deps.accounts.upsert(s.id, (acc) => (acc && !acc.suspended ? { ...acc, suspended: true } : acc));
    }
    const nkey = ckeys.notified(s, level);
    if ((await this.deps.store.get(nkey, now)) > 0) return;
    await this.deps.store.incr(nkey, 1, level === 1 ? HOUR : level === 2 ? this.config.holdForMs : this.config.suspendForMs, now);
    const ev = this.evidence.get(subjectLabel(s));
    const event: ContainmentEvent = {
      type: 'containment',
      response: LEVELS[level] as ResponseName,
      subject: subjectLabel(s),
      ...(s.kind === 'a' ? { account: s.id } : { ip: s.id }),
      ...(client ? { ip: client.ip } : {}),
      plan: plan ?? this.config.defaultPlan,
      score: a.score,
      fired: a.fired,
      signals: a.signals,
      evidence: { recentRecipients: ev?.recipients ?? [], recentIps: ev?.ips ?? [], ...(ev?.fingerprint ? { fingerprint: ev.fingerprint } : {}) },
      at: new Date(now).toISOString(),
    };
    this.deps.logger.warn({ evt: 'containment', response: event.response, subject: event.subject, plan: event.plan, score: a.score, fired: a.fired }, `containment: ${event.response} ${event.subject}`);
    this.deps.observer?.event?.(event);
    if (this.deps.notifier) void this.deps.notifier.send(event);
  }

  private verdict(level: number, stage: 'connect' | 'mail' | 'data', s: CSubject, a?: Assessment): Verdict | undefined {
    if (level <= 0) return undefined;
    const response = LEVELS[level] as ResponseName;
    this.deps.observer?.contained?.(response, stage);
    if (level === 3) return { action: 'reject', stage, rule: 'containment.suspend', reply: s.kind === 'a' ? 'account_suspended' : 'policy_reject', detail: '(contact support)' };
    if (level === 2) return stage === 'data' ? { action: 'hold', stage, rule: 'containment.hold', ...(a ? { values: decisionValues(a, level) } : {}) } : undefined;
    return { action: 'tempfail', stage, rule: 'containment.throttle', reply: 'rate_limited' };
  }

  /** At connect (intercept) and MAIL: a suspended subject is refused, a throttled one deferred. */
  async gate(client: ClientInfo, stage: 'connect' | 'mail', account?: Account): Promise<Verdict | undefined> {
    const s = this.subjectOf(client);
    if (!s || !this.enabled) return undefined;
    const now = this.clock();
    const plan = this.deps.planOf(client, account);
    if (this.learning || this.exempt(s, plan)) return undefined;
    const sticky = await this.deps.store.get(ckeys.level(s), now);
    if (sticky >= 3) return this.verdict(3, stage, s);
    if (stage === 'connect') return undefined;
    const a = await this.assess(s, plan, undefined, now, 0, client.ip);
    await this.respond(s, a, plan, client, now);
    const level = Math.max(sticky, a.level);
    // Pushing on against a throttle is its own signal: a sender that keeps trying escalates to hold.
    if (level === 1) await this.signals.recordPushed(s, now);
    return this.verdict(level, stage, s);
  }

  /** At end of DATA: record the message's signals, then decide. */
  async atData(client: ClientInfo, recipients: readonly string[], facts: MessageFacts, account?: Account, mailFrom?: string): Promise<Verdict | undefined> {
    const s = this.subjectOf(client);
    if (!s || !this.enabled) return undefined;
    const now = this.clock();
    const plan = this.deps.planOf(client, account);
    const campaign = await this.signals.recordMessage(s, recipients, facts, now, mailFrom);
    const fingerprint = typeof facts === 'string' ? facts : facts?.bodyFingerprint;
    this.note(s, { recipients, ip: client.ip, ...(fingerprint ? { fingerprint } : {}) });
    const a = await this.assess(s, plan, facts, now, campaign, client.ip);
    if (a.fired.length === 0) await this.signals.raisePeak(s, a.signals.rcpt1h, now, a.signals.rcpt1d);
    if (a.exempt) return undefined;
    // Only a score above zero is ranked (normal mail costs no store operation); the console re-assesses what it shows.
    if (a.score > 0) await this.deps.store.rank(ckeys.scores(), [[subjectLabel(s), a.score]], DAY, RANKED_SUBJECTS, now);
    await this.respond(s, a, plan, client, now);
    const sticky = await this.deps.store.get(ckeys.level(s), now);
    const level = Math.max(sticky, a.level);
    if (level === 0 && this.suspicious(a, plan)) return this.quarantined(a);
    return this.verdict(level, 'data', s, a);
  }

  /** Over the plan's quarantine score, under every response: sent, but from the quarantine pool. */
  private suspicious(a: Assessment, plan: string | undefined): boolean {
    const q = this.thresholds(plan).quarantine;
    return q > 0 && a.score >= q;
  }

  private quarantined(a: Assessment): Verdict {
    this.deps.observer?.contained?.('quarantine', 'data');
    return { action: 'accept', stage: 'data', rule: QUARANTINE_RULE, values: decisionValues(a, 0) };
  }

  /**
   * Recipients over the static recipientsPerHour this subject may send now:
   * the size of its own address book (30 days), when it is in good standing
   * (no response, its score under throttle: bulk signals alone) and at least `bookAllowance` of its last
   * hour's recipients were known correspondents. A greeting to the whole
   * book or a club roster is history; a run to strangers is not.
   */
  async allowance(client: ClientInfo, account?: Account): Promise<number> {
    const s = this.subjectOf(client);
    if (!s || !this.enabled || this.learning) return 0;
    const now = this.clock();
    const plan = this.deps.planOf(client, account);
    const share = this.thresholds(plan).bookAllowance;
    if (share <= 0 || this.exempt(s, plan) || (await this.deps.store.get(ckeys.level(s), now)) > 0) return 0;
    const a = await this.assess(s, plan, undefined, now, 0, client.ip);
    if (a.level > 0) return 0;
    const { rcpt1h, newRecipientsPerHour, addressBookSize } = a.signals;
    return rcpt1h > 0 && rcpt1h - newRecipientsPerHour >= share * rcpt1h ? addressBookSize : 0;
  }

  async recordAuth(client: ClientInfo, user: string): Promise<void> {
    await this.signals.recordAuth({ kind: 'a', id: user.toLowerCase() }, client.ip, this.clock());
    this.note({ kind: 'a', id: user.toLowerCase() }, { ip: client.ip });
  }

  /** Recipients refused at our door (a policy refusal at RCPT). */
  async recordDoorRefusal(client: ClientInfo, n = 1): Promise<void> {
    const s = this.subjectOf(client);
    if (s && this.enabled) await this.signals.recordRefused(s, n, this.clock());
  }

  /**
   * Relay feedback: recipients a remote server refused (5xx). The subject is
   * the envelope's authenticated user, else its client address on intercept.
   */
  async relayBounced(client: Pick<ClientInfo, 'role' | 'ip' | 'user' | 'listener' | 'tls'>, n: number): Promise<void> {
    const s = this.subjectOf(client as ClientInfo);
    if (s && this.enabled) await this.signals.recordRefused(s, n, this.clock());
  }

  /**
   * A signal from outside the SMTP conversation (complaint, content verdict,
   * DNSBL listing): recorded, scored and answered at once. The contract is
   * in external.ts (and docs/containment.md).
   */
  async external(who: ExternalSubject, signal: ExternalSignal, n = 1): Promise<ExternalResult> {
    checkExternal(who, signal, n);
    const s: CSubject = 'account' in who ? { kind: 'a', id: who.account.toLowerCase() } : { kind: 'ip', id: this.deps.ipSubject?.(who.ip) ?? who.ip };
    if (!this.enabled) return { subject: subjectLabel(s), response: 'none', score: 0, fired: [] };
    const now = this.clock();
    if (signal === 'complaint') await this.signals.recordComplaints(s, n, now);
    else if (signal === 'contentSpam') await this.signals.recordContentSpam(s, n, now);
    else await this.signals.recordDnsbl(s, n > 0, this.config.holdForMs, now);
    const account = s.kind === 'a' ? this.deps.accounts?.get(s.id) : undefined;
    const client: ClientInfo = s.kind === 'a' ? { listener: 'external', role: 'submission', ip: '', tls: false, user: s.id } : { listener: 'external', role: 'intercept', ip: 'ip' in who ? who.ip : s.id, tls: false };
    const plan = this.deps.planOf(client, account);
    const a = await this.assess(s, plan, undefined, now);
    if (!a.exempt) await this.respond(s, a, plan, s.kind === 'ip' ? client : undefined, now);
    const sticky = await this.deps.store.get(ckeys.level(s), now);
    const level = a.exempt ? 0 : Math.max(sticky, a.level);
    return { subject: subjectLabel(s), response: LEVELS[level] ?? 'none', score: a.score, fired: a.fired };
  }

  /** The abuse desk: this subject's pattern is legitimate (thresholds × factor for a while). */
  async markLegitimate(s: CSubject, forMs = this.config.legitimateForMs): Promise<void> {
    const now = this.clock();
    await this.deps.store.del(ckeys.legit(s));
    await this.deps.store.incr(ckeys.legit(s), 1, forMs, now);
    await this.release(s);
  }

  /** The abuse desk: lift a sticky hold/suspension (and the account's suspended flag). */
  async release(s: CSubject): Promise<void> {
    await this.deps.store.del(ckeys.level(s));
    for (const l of [1, 2, 3]) await this.deps.store.del(ckeys.notified(s, l));
    await this.signals.clearShortTerm(s);
    if (s.kind === 'a' && this.deps.accounts?.upsert) await this.deps.accounts.upsert(s.id, (a) => (a && a.suspended ? { ...a, suspended: false } : a));
  }

  /** The subjects (of the whole fleet, with a shared store) whose last scored message scored highest in 24 hours. */
  async topScored(n: number): Promise<Array<{ subject: CSubject; score: number }>> {
    const out: Array<{ subject: CSubject; score: number }> = [];
    for (const [name, score] of await this.deps.store.top(ckeys.scores(), n, DAY, this.clock())) {
      const sep = name.indexOf(':');
      out.push({ subject: { kind: name.slice(0, sep) === 'account' ? 'a' : 'ip', id: name.slice(sep + 1) }, score });
    }
    return out;
  }

  /** The sticky response of a subject ("none", "hold", "suspend"), for the admin API. */
  async status(s: CSubject): Promise<{ response: string; legitimate: boolean; assessment: Assessment }> {
    const now = this.clock();
    const level = await this.deps.store.get(ckeys.level(s), now);
    return { response: LEVELS[level] ?? 'none', legitimate: (await this.deps.store.get(ckeys.legit(s), now)) > 0, assessment: await this.assess(s, undefined, undefined, now) };
  }
}

/**
 * What a hold decided at end of DATA rested on, kept with the held message
 * (Verdict.values): the score, the signals that fired, every signal's value
 * that was not zero, and whether the hold was an earlier decision still in
 * force (sticky) rather than this message's score.
 */
function decisionValues(a: Assessment, level: number): Record<string, string | number> {
  const values: Record<string, string | number> = { score: Math.round(a.score * 1000) / 1000, fired: a.fired.join(' ') || 'none' };
  if (level > a.level) values.sticky = `${LEVELS[level]} decided earlier, still in force`;
  for (const [name, v] of Object.entries(a.signals)) if (typeof v === 'number' && v !== 0) values[name] = Math.round(v * 1000) / 1000;
  return values;
}

/** DataFacts plus what containment needs from the message. */
export interface ContainedDataFacts extends DataFacts {
  /** bodyFingerprint() of the message body, when no traits are given (older callers, tests). */
  readonly bodyFingerprint?: string;
}

const factsOf = (f: ContainedDataFacts): MessageTraits | string | undefined => f.traits ?? f.bodyFingerprint;

/**
 * What the quotas counted for each recipient of the transaction in progress,
 * by the session's client object (a session makes a new one at every MAIL,
 * and MAIL starts a new list): taken back when containment throttles or
 * holds the message. Kept beside the hooks, which a reload replaces.
 */
const counted = new WeakMap<ClientInfo, Array<() => Promise<void>>>();

const STRICTNESS: Record<Verdict['action'], number> = { accept: 0, hold: 1, tempfail: 2, reject: 3 };
const stricter = (a: Verdict, b: Verdict | undefined): Verdict => (b && STRICTNESS[b.action] > STRICTNESS[a.action] ? b : a);

/**
 * The policy engine's hooks with containment after each decision. `inner`
 * is asked for the engine in force at every call (reloads swap it).
 */
export class ContainedHooks implements PolicyHooks {
  constructor(private readonly inner: () => PolicyHooks, private readonly c: Containment) {}

  async connect(f: ConnectFacts): Promise<ConnectDecision> {
    const d = await this.inner().connect(f);
    if (d.verdict.action !== 'accept' || f.listener.role !== 'intercept') return d;
    const client: ClientInfo = { listener: f.listener.name, role: f.listener.role, ip: f.ip, tls: false, ...(d.netblockClass ? { netblockClass: d.netblockClass } : {}) };
    return { ...d, verdict: stricter(d.verdict, await this.c.gate(client, 'connect')) };
  }

  async auth(f: { client: ClientInfo; user: string; phase: 'before' | 'after'; ok?: boolean }): Promise<AuthVerdict> {
    const inner = this.inner();
    const v = inner.auth ? await inner.auth(f) : { action: 'accept' as const, stage: 'auth' as const, rule: 'auth.none', countedAccount: false };
    if (f.phase === 'after' && f.ok === true) {
      try {
        await this.c.recordAuth(f.client, f.user);
      } catch (err) {
        // The AUTH fails here, so the session never learns the engine counted the account's
        // connection and would not give it back at close: give it back now.
        if (v.countedAccount) inner.disconnect?.({ client: { ...f.client, user: f.user }, countedConnection: false, countedAccount: true });
        throw err;
      }
    }
    return v;
  }

  authGate(f: { client: ClientInfo; user: string }): AuthGate | undefined {
    return this.inner().authGate?.(f);
  }

  async mail(f: TransactionFacts): Promise<Verdict> {
    counted.delete(f.client);
    const v = await this.inner().mail(f);
    if (v.action === 'reject' || v.action === 'tempfail') return v;
    return stricter(v, await this.c.gate(f.client, 'mail', f.account));
  }

  async rcpt(f: RcptFacts): Promise<Verdict> {
    const outer = f.counted;
    const v = await this.inner().rcpt({
      ...f,
      allowance: () => this.c.allowance(f.client, f.account),
      counted: (takeBack) => {
        const list = counted.get(f.client) ?? [];
        list.push(takeBack);
        counted.set(f.client, list);
        outer?.(takeBack);
      },
    });
    // A recipient our policy refuses (5xx) is evidence; our own rate limits deferring one (4xx) are not.
    if (v.action === 'reject') await this.c.recordDoorRefusal(f.client);
    return v;
  }

  /**
   * Containment has the last word INSIDE the engine's data stage, so a
   * message containment throttles, holds or refuses is taken back from the
   * quotas that counted it: messagesPerHour by the engine, its recipients
   * (recipientsPerHour/Day, counted at RCPT) here. It was not sent.
   */
  async data(f: ContainedDataFacts): Promise<Verdict> {
    // Off: the facts go through untouched (copying them would take the message's traits, which only containment reads).
    if (!this.c.enabled) return this.inner().data(f);
    const outer = f.lastWord;
    return this.inner().data({
      ...f,
      lastWord: async (v) => {
        const theirs = await this.c.atData(f.client, f.recipients, factsOf(f), f.account, f.mailFrom);
        const mine = stricter(v, theirs);
        if (mine !== v) for (const takeBack of counted.get(f.client) ?? []) await takeBack();
        counted.delete(f.client);
        // Quarantine accepts too: the message is sent (nothing taken back), and its rule, not the rules' accept, picks the pool.
        const last = mine === v && v.action === 'accept' && theirs?.rule === QUARANTINE_RULE ? theirs : mine;
        return outer ? outer(last) : last;
      },
    });
  }

  signingAuthority(f: Parameters<PolicyHooks['signingAuthority']>[0]): ReturnType<PolicyHooks['signingAuthority']> {
    return this.inner().signingAuthority(f);
  }

  async accepted(f: DataFacts): Promise<void> {
    await this.inner().accepted?.(f);
  }

  openSlot(f: { listener: string; ip: string }): Promise<ConnectionSlot> {
    return this.inner().openSlot(f);
  }

  disconnect(f: DisconnectFacts): void {
    this.inner().disconnect?.(f);
  }
}

export { domainOf };
