/**
 * containment.yaml: the behaviour signals' thresholds per plan, their
 * weights, the score at which each response starts (throttle < hold <
 * suspend), allow-lists, the escape hatch for legitimate patterns and the
 * abuse desk's webhook. Validated like the other policy files (file, key,
 * reason); absent file: containment off.
 *
 * Talks to: the filesystem (reads). Trusts: nothing.
 */
import { existsSync } from 'node:fs';
import { At, duration, isObj, obj, optStr, strList, type Obj } from '../config/validate';
import { readYaml } from '../policy/yaml';

export const SIGNALS = [
  'volume',
  'newRecipientsPerHour',
  'newRecipientsPerDay',
  'newDomainsPerHour',
  'refusedPerHour',
  'authNetworksPerHour',
  'sameBodyPerDay',
  'dnsblListed',
  'complaints',
  'contentSpam',
  'volumeDay',
  'addressBook',
  'newLinkDomains',
  'identityChange',
  'authNewNetwork',
  'strangerHours',
  'pushing',
  'campaign',
] as const;
export type SignalName = (typeof SIGNALS)[number];

export type ResponseName = 'throttle' | 'hold' | 'suspend';
export const RESPONSES: readonly ResponseName[] = ['throttle', 'hold', 'suspend'];

export interface PlanThresholds {
  /** Recipients in the last hour ≥ max(volumeFloor, volumeFactor × own daily average over 14 days). */
  readonly volumeFactor: number;
  readonly volumeFloor: number;
  /** …and ≥ volumePeakFactor × its busiest hour in 14 days (bursty senders: newsletters). */
  readonly volumePeakFactor: number;
  readonly newRecipientsPerHour: number;
  /** The new-recipient and new-domain thresholds are at least this share of the busiest hour. */
  readonly newShareOfPeak: number;
  readonly newRecipientsPerDay: number;
  readonly newDomainsPerHour: number;
  readonly refusedPerHour: number;
  /** …and at least this share of the hour's recipients. */
  readonly refusedShare: number;
  readonly authNetworksPerHour: number;
  readonly sameBodyPerDay: number;
  /** Verified complaints (ARF) in 14 days ≥ max(complaints, complaintShare × recipients in 14 days). */
  readonly complaints: number;
  readonly complaintShare: number;
  /** Messages the content scanner judged spam in 24 hours. */
  readonly contentSpamPerDay: number;
  /** Recipients in 24 h ≥ max(volumeDayFloor, volumeDayFactor × the busiest unflagged day in 14 days). */
  readonly volumeDayFloor: number;
  readonly volumeDayFactor: number;
  /** Distinct known correspondents written to in 24 h ≥ max(addressBookMin, addressBookShare × the address book). */
  readonly addressBookShare: number;
  readonly addressBookMin: number;
  /** Recipients in 24 h of messages linking to a domain new to the subject and fresh in the fleet. */
  readonly newLinkRecipientsPerDay: number;
  /** Messages in 24 h with a new Reply-To or From display name. */
  readonly identityChangesPerDay: number;
  /** AUTH from networks not used in 30 days, per day. */
  readonly authNewNetworksPerDay: number;
  /** Hours of the last 24 with new recipients (a paced run to strangers). */
  readonly strangerHours: number;
  /** MAILs refused by a containment throttle in an hour (a sender that keeps pushing escalates). */
  readonly pushedPerHour: number;
  /** Distinct subjects in the fleet sending this message's body or fresh link domain in 24 h. */
  readonly campaignSenders: number;
  /**
   * Over the static recipientsPerHour (quotas.yaml), a subject in good
   * standing whose last hour went at least this share to known
   * correspondents may send as many more as its address book holds (0: off).
   */
  readonly bookAllowance: number;
  /** Score at which each response starts (0: never). */
  readonly responses: Readonly<Record<ResponseName, number>>;
  /**
   * Score (below every response) at which a message is still sent, but from
   * relay.poolSelection.quarantine: a suspicious sender's mail does not
   * spend the normal pools' reputation (responses.quarantine; 0: off).
   */
  readonly quarantine: number;
}

export interface ContainmentConfig {
  readonly enabled: boolean;
  readonly plans: ReadonlyMap<string, PlanThresholds>;
  readonly defaultPlan: string;
  readonly weights: Readonly<Record<SignalName, number>>;
  readonly holdForMs: number;
  readonly suspendForMs: number;
  readonly legitimateFactor: number;
  readonly legitimateForMs: number;
  readonly allowAccounts: ReadonlySet<string>;
  readonly allowIps: ReadonlySet<string>;
  readonly allowPlans: ReadonlySet<string>;
  readonly webhook?: { readonly url: string; readonly maxAttempts: number; readonly initialBackoffMs: number; readonly maxBackoffMs: number; readonly timeoutMs: number };
}

const DEFAULT_THRESHOLDS: PlanThresholds = {
  volumeFactor: 8,
  volumeFloor: 40,
  volumePeakFactor: 1.5,
  newRecipientsPerHour: 12,
  newShareOfPeak: 0.1,
  newRecipientsPerDay: 30,
  newDomainsPerHour: 8,
  refusedPerHour: 4,
  refusedShare: 0.05,
  authNetworksPerHour: 3,
  sameBodyPerDay: 40,
  complaints: 1,
  complaintShare: 0.003,
  contentSpamPerDay: 3,
  volumeDayFloor: 20,
  volumeDayFactor: 3,
  addressBookShare: 0.3,
  addressBookMin: 20,
  newLinkRecipientsPerDay: 1,
  identityChangesPerDay: 1,
  authNewNetworksPerDay: 1,
  strangerHours: 3,
  pushedPerHour: 4,
  campaignSenders: 8,
  bookAllowance: 0,
  responses: { throttle: 1, hold: 2, suspend: 4 },
  quarantine: 0,
};

const DEFAULT_WEIGHTS: Record<SignalName, number> = {
  volume: 1,
  newRecipientsPerHour: 1,
  newRecipientsPerDay: 1,
  newDomainsPerHour: 1,
  refusedPerHour: 1,
  authNetworksPerHour: 2,
  sameBodyPerDay: 1,
  dnsblListed: 2,
  complaints: 2,
  contentSpam: 1,
  // Each of these alone is ordinary (a greeting to everyone, a new link, a hotel network): half a signal.
  volumeDay: 0.5,
  addressBook: 0.5,
  newLinkDomains: 0.5,
  identityChange: 0.5,
  authNewNetwork: 0.5,
  strangerHours: 0.5,
  pushing: 1,
  campaign: 2,
};

export const CONTAINMENT_OFF: ContainmentConfig = {
  enabled: false,
  plans: new Map(),
  defaultPlan: 'residential',
  weights: DEFAULT_WEIGHTS,
  holdForMs: 24 * 3_600_000,
  suspendForMs: 30 * 86_400_000,
  legitimateFactor: 10,
  legitimateForMs: 30 * 86_400_000,
  allowAccounts: new Set(),
  allowIps: new Set(),
  allowPlans: new Set(),
};

function num(v: unknown, at: At, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) return at.fail(`expected a number ≥ 0, got ${JSON.stringify(v)}`);
  return v;
}

function share(v: unknown, at: At, dflt: number): number {
  const n = num(v, at, dflt);
  return n > 1 ? at.fail(`expected a share between 0 and 1, got ${n}`) : n;
}

function thresholds(raw: unknown, at: At, base: PlanThresholds): PlanThresholds {
  const o: Obj = obj(raw ?? {}, at, ['volumeFactor', 'volumeFloor', 'volumePeakFactor', 'newRecipientsPerHour', 'newShareOfPeak', 'newRecipientsPerDay', 'newDomainsPerHour', 'refusedPerHour', 'refusedShare', 'authNetworksPerHour', 'sameBodyPerDay', 'complaints', 'complaintShare', 'contentSpamPerDay', 'volumeDayFloor', 'volumeDayFactor', 'addressBookShare', 'addressBookMin', 'newLinkRecipientsPerDay', 'identityChangesPerDay', 'authNewNetworksPerDay', 'strangerHours', 'pushedPerHour', 'campaignSenders', 'bookAllowance', 'responses']);
  const r = obj(o.responses ?? {}, at.child('responses'), [...RESPONSES, 'quarantine']);
  const responses = {
    throttle: num(r.throttle, at.child('responses').child('throttle'), base.responses.throttle),
    hold: num(r.hold, at.child('responses').child('hold'), base.responses.hold),
    suspend: num(r.suspend, at.child('responses').child('suspend'), base.responses.suspend),
  };
  const quarantine = num(r.quarantine, at.child('responses').child('quarantine'), base.quarantine);
  // Quarantine is for the suspicious that still send: at or over the first response, the response wins.
  const first = RESPONSES.find((n) => responses[n] > 0);
  if (quarantine > 0 && first && quarantine >= responses[first]) at.child('responses').child('quarantine').fail(`must be below responses.${first} (${responses[first]}), got ${quarantine}`);
  return {
    volumeFactor: num(o.volumeFactor, at.child('volumeFactor'), base.volumeFactor),
    volumeFloor: num(o.volumeFloor, at.child('volumeFloor'), base.volumeFloor),
    volumePeakFactor: num(o.volumePeakFactor, at.child('volumePeakFactor'), base.volumePeakFactor),
    newRecipientsPerHour: num(o.newRecipientsPerHour, at.child('newRecipientsPerHour'), base.newRecipientsPerHour),
    newShareOfPeak: num(o.newShareOfPeak, at.child('newShareOfPeak'), base.newShareOfPeak),
    newRecipientsPerDay: num(o.newRecipientsPerDay, at.child('newRecipientsPerDay'), base.newRecipientsPerDay),
    newDomainsPerHour: num(o.newDomainsPerHour, at.child('newDomainsPerHour'), base.newDomainsPerHour),
    refusedPerHour: num(o.refusedPerHour, at.child('refusedPerHour'), base.refusedPerHour),
    refusedShare: num(o.refusedShare, at.child('refusedShare'), base.refusedShare),
    authNetworksPerHour: num(o.authNetworksPerHour, at.child('authNetworksPerHour'), base.authNetworksPerHour),
    sameBodyPerDay: num(o.sameBodyPerDay, at.child('sameBodyPerDay'), base.sameBodyPerDay),
    complaints: num(o.complaints, at.child('complaints'), base.complaints),
    complaintShare: num(o.complaintShare, at.child('complaintShare'), base.complaintShare),
    contentSpamPerDay: num(o.contentSpamPerDay, at.child('contentSpamPerDay'), base.contentSpamPerDay),
    volumeDayFloor: num(o.volumeDayFloor, at.child('volumeDayFloor'), base.volumeDayFloor),
    volumeDayFactor: num(o.volumeDayFactor, at.child('volumeDayFactor'), base.volumeDayFactor),
    addressBookShare: num(o.addressBookShare, at.child('addressBookShare'), base.addressBookShare),
    addressBookMin: num(o.addressBookMin, at.child('addressBookMin'), base.addressBookMin),
    newLinkRecipientsPerDay: num(o.newLinkRecipientsPerDay, at.child('newLinkRecipientsPerDay'), base.newLinkRecipientsPerDay),
    identityChangesPerDay: num(o.identityChangesPerDay, at.child('identityChangesPerDay'), base.identityChangesPerDay),
    authNewNetworksPerDay: num(o.authNewNetworksPerDay, at.child('authNewNetworksPerDay'), base.authNewNetworksPerDay),
    strangerHours: num(o.strangerHours, at.child('strangerHours'), base.strangerHours),
    pushedPerHour: num(o.pushedPerHour, at.child('pushedPerHour'), base.pushedPerHour),
    campaignSenders: num(o.campaignSenders, at.child('campaignSenders'), base.campaignSenders),
    bookAllowance: share(o.bookAllowance, at.child('bookAllowance'), base.bookAllowance),
    responses,
    quarantine,
  };
}

export function parseContainment(raw: unknown, file: string): ContainmentConfig {
  const at = new At(file);
  const o = obj(raw ?? {}, at, ['enabled', 'defaults', 'plans', 'defaultPlan', 'weights', 'holdFor', 'suspendFor', 'legitimate', 'allow', 'webhook']);
  const base = thresholds(o.defaults, at.child('defaults'), DEFAULT_THRESHOLDS);
  const plans = new Map<string, PlanThresholds>();
  if (o.plans !== undefined) {
    if (!isObj(o.plans)) at.child('plans').fail('expected a map of plan name → thresholds');
    for (const [name, v] of Object.entries(o.plans as Obj)) plans.set(name, thresholds(v, at.child('plans').child(name), base));
  }
  const defaultPlan = optStr(o.defaultPlan, at.child('defaultPlan')) ?? 'residential';
  if (!plans.has(defaultPlan)) plans.set(defaultPlan, base);
  const w = obj(o.weights ?? {}, at.child('weights'), SIGNALS);
  const weights = {} as Record<SignalName, number>;
  for (const s of SIGNALS) weights[s] = num(w[s], at.child('weights').child(s), DEFAULT_WEIGHTS[s]);
  const legit = obj(o.legitimate ?? {}, at.child('legitimate'), ['factor', 'for']);
  const allow = obj(o.allow ?? {}, at.child('allow'), ['accounts', 'ips', 'plans']);
  let webhook: ContainmentConfig['webhook'];
  if (o.webhook !== undefined) {
    const h = obj(o.webhook, at.child('webhook'), ['url', 'maxAttempts', 'initialBackoff', 'maxBackoff', 'timeout']);
    const url = optStr(h.url, at.child('webhook').child('url'));
    if (url) {
      if (!/^https?:\/\//.test(url)) at.child('webhook').child('url').fail('expected an http(s) URL');
      webhook = {
        url,
        maxAttempts: num(h.maxAttempts, at.child('webhook').child('maxAttempts'), 20),
        initialBackoffMs: duration(h.initialBackoff, at.child('webhook').child('initialBackoff'), '1s'),
        maxBackoffMs: duration(h.maxBackoff, at.child('webhook').child('maxBackoff'), '5m'),
        timeoutMs: duration(h.timeout, at.child('webhook').child('timeout'), '10s'),
      };
    }
  }
  return {
    enabled: o.enabled === undefined ? true : o.enabled === true,
    plans,
    defaultPlan,
    weights,
    holdForMs: duration(o.holdFor, at.child('holdFor'), '24h'),
    suspendForMs: duration(o.suspendFor, at.child('suspendFor'), '30d'),
    legitimateFactor: num(legit.factor, at.child('legitimate').child('factor'), 10),
    legitimateForMs: duration(legit.for, at.child('legitimate').child('for'), '30d'),
    allowAccounts: new Set(strList(allow.accounts, at.child('allow').child('accounts')).map((s) => s.toLowerCase())),
    allowIps: new Set(strList(allow.ips, at.child('allow').child('ips'))),
    allowPlans: new Set(strList(allow.plans, at.child('allow').child('plans'))),
    ...(webhook ? { webhook } : {}),
  };
}

/** The policy directory's containment.yaml (absent: containment off). */
export function loadContainment(dir: string): ContainmentConfig {
  const file = `${dir}/containment.yaml`;
  if (!existsSync(file)) return CONTAINMENT_OFF;
  return parseContainment(readYaml(file), file);
}
