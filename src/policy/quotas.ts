/**
 * Volume quotas (policies/quotas.yaml): plans of limits, which plan applies
 * to whom, per-account and per-address overrides, and failed-AUTH limits.
 *
 * The subject of a quota is the authenticated account on submission and the
 * client address on intercept (an IPv6 client by its /64, or the configured
 * prefix: one subscriber's host can rotate through its whole prefix). An
 * account's plan is Account.plan; an intercept address's plan comes from
 * its netblock class.
 *
 * Limits and when they count (what the limit says, nothing else):
 *   messagesPerHour        checked at MAIL (early, nothing counted) and
 *                          counted at end of DATA once every data rule has
 *                          passed (taken back if a later rule refuses): a
 *                          committed message counts once, a refused one never
 *   recipientsPerHour/Day  counted at RCPT, checked before incrementing, both
 *                          in one atomic step: a refused RCPT counts nowhere
 *                          (and a message containment throttles or holds
 *                          takes its recipients back)
 *   recipientsPerMessage   at RCPT, from the recipients accepted so far
 *   concurrentConnections  open connections: per address at connect
 *                          (intercept), per account at MAIL (submission);
 *                          counted only where a quota limits them (an
 *                          address: countsAddressConnections; an account:
 *                          limitsAccountConnections, at AUTH)
 *   maxMessageSize         at end of DATA
 *
 * Talks to: nothing (data only). Trusts: nothing (validated).
 */
import type { Account } from '../accounts/store';
import { At, duration, int, isObj, obj, size, str, type Obj } from '../config/validate';
import type { Stage } from '../envelope';
import { parseAction, type ActionSpec } from './action';
import { parseCidr } from './ip';
import { checkClassName } from './netblocks';
import { PrefixTable } from './prefix-table';

export const LIMITS = {
  messagesPerHour: { windowMs: 3_600_000, stages: ['mail', 'data'] as Stage[] },
  recipientsPerHour: { windowMs: 3_600_000, stages: ['rcpt'] as Stage[] },
  recipientsPerDay: { windowMs: 86_400_000, stages: ['rcpt'] as Stage[] },
  recipientsPerMessage: { windowMs: 0, stages: ['rcpt'] as Stage[] },
  concurrentConnections: { windowMs: 0, stages: ['connect', 'mail'] as Stage[] },
  maxMessageSize: { windowMs: 0, stages: ['data'] as Stage[] },
} as const;

export type LimitName = keyof typeof LIMITS;
export const LIMIT_NAMES = Object.keys(LIMITS) as LimitName[];
/** Limits that are rates over a sliding window (the plan's onExceed applies to these). */
export const RATE_LIMITS: readonly LimitName[] = ['messagesPerHour', 'recipientsPerHour', 'recipientsPerDay'];

interface LimitValue {
  /** null: explicitly unlimited (an override lifting a plan's limit). */
  readonly value: number | null;
  readonly onExceed?: ActionSpec;
}

interface PlanSpec {
  readonly limits: Partial<Record<LimitName, LimitValue>>;
  readonly onExceed?: ActionSpec;
}

export interface AuthFailureLimits {
  readonly windowMs: number;
  /** Failures in the window after which each AUTH attempt waits (0: never). */
  readonly delayAfter: number;
  readonly delayMs: number;
  readonly maxDelayMs: number;
  /** Failures in the window that lock the subject out (0: never). */
  readonly lockoutAfter: number;
  readonly lockoutMs: number;
  /**
   * perAccount only: how long a successful login makes its address (IPv6:
   * prefix) known for the account. The account's delay and lockout never
   * apply to a known address (penalise the source, not the victim); 0: they
   * apply to every address.
   */
  readonly knownForMs: number;
}

export interface QuotaConfig {
  readonly onExceed: ActionSpec;
  readonly ipv6Prefix: number;
  readonly plans: ReadonlyMap<string, PlanSpec>;
  readonly defaultPlan?: string;
  readonly classPlans: ReadonlyMap<string, string>;
  readonly defaultClassPlan?: string;
  readonly accounts: ReadonlyMap<string, PlanSpec>;
  readonly ips: PrefixTable<{ cidr: string; spec: PlanSpec }>;
  readonly authFailures: { readonly perIp: AuthFailureLimits; readonly perAccount: AuthFailureLimits };
  /**
   * Some plan or address override limits concurrentConnections: only then
   * are an intercept client's open connections counted (the count is one
   * state-store round trip each way per connection, for nobody to read).
   */
  readonly countsAddressConnections: boolean;
  /**
   * Some plan or account override limits concurrentConnections: without
   * one no account's open connections are counted (limitsAccountConnections
   * says which account's are).
   */
  readonly countsAccountConnections: boolean;
}

export interface ResolvedLimit {
  readonly name: LimitName;
  readonly value: number;
  readonly windowMs: number;
  /** Configured action, or undefined for the stage's built-in default. */
  readonly onExceed?: ActionSpec;
  /** Where the value came from: "plan residential", "override accounts.x". */
  readonly source: string;
}

export interface ResolvedQuotas {
  readonly plan?: string;
  readonly limits: ReadonlyMap<LimitName, ResolvedLimit>;
}

const RATE_LIMITED: ActionSpec = { action: 'tempfail', reply: 'rate_limited' };

const DEFAULT_AUTH = {
  perIp: { windowMs: 15 * 60_000, delayAfter: 5, delayMs: 500, maxDelayMs: 5000, lockoutAfter: 20, lockoutMs: 15 * 60_000, knownForMs: 0 },
  perAccount: { windowMs: 60 * 60_000, delayAfter: 0, delayMs: 500, maxDelayMs: 5000, lockoutAfter: 50, lockoutMs: 10 * 60_000, knownForMs: 30 * 86_400_000 },
};

export const NO_QUOTAS: QuotaConfig = {
  onExceed: RATE_LIMITED,
  ipv6Prefix: 64,
  plans: new Map(),
  classPlans: new Map(),
  accounts: new Map(),
  ips: new PrefixTable(),
  authFailures: DEFAULT_AUTH,
  countsAddressConnections: false,
  countsAccountConnections: false,
};

function parseLimitValue(name: LimitName, v: unknown, at: At): LimitValue {
  let raw = v;
  let onExceed: ActionSpec | undefined;
  if (isObj(v)) {
    const o = obj(v, at, ['limit', 'onExceed']);
    raw = o.limit;
    if (o.onExceed !== undefined) onExceed = parseAction(o.onExceed, at.child('onExceed'));
  }
  if (raw === null || raw === 'unlimited') return { value: null, onExceed };
  const value = name === 'maxMessageSize' ? size(raw, at.child('limit')) : int(raw, isObj(v) ? at.child('limit') : at, undefined, 0);
  return { value, onExceed };
}

function parsePlan(v: unknown, at: At, allowOnExceed = true): PlanSpec {
  const o = obj(v, at, [...LIMIT_NAMES, ...(allowOnExceed ? ['onExceed'] : []), 'comment']);
  const limits: Partial<Record<LimitName, LimitValue>> = {};
  for (const n of LIMIT_NAMES) if (o[n] !== undefined) limits[n] = parseLimitValue(n, o[n], at.child(n));
  return { limits, onExceed: o.onExceed === undefined ? undefined : parseAction(o.onExceed, at.child('onExceed')) };
}

function parseAuthLimits(v: unknown, at: At, d: AuthFailureLimits, perAccount = false): AuthFailureLimits {
  const o = obj(v, at, ['window', 'delayAfter', 'delay', 'maxDelay', 'lockoutAfter', 'lockout', ...(perAccount ? ['knownAddressesFor'] : [])]);
  return {
    knownForMs: perAccount ? duration(o.knownAddressesFor, at.child('knownAddressesFor'), `${d.knownForMs}ms`) : 0,
    windowMs: duration(o.window, at.child('window'), `${d.windowMs}ms`),
    delayAfter: int(o.delayAfter, at.child('delayAfter'), d.delayAfter, 0),
    delayMs: duration(o.delay, at.child('delay'), `${d.delayMs}ms`),
    maxDelayMs: duration(o.maxDelay, at.child('maxDelay'), `${d.maxDelayMs}ms`),
    lockoutAfter: int(o.lockoutAfter, at.child('lockoutAfter'), d.lockoutAfter, 0),
    lockoutMs: duration(o.lockout, at.child('lockout'), `${d.lockoutMs}ms`),
  };
}

function mapOf(v: unknown, at: At, what: string): Obj {
  if (v === undefined || v === null) return {};
  if (!isObj(v)) at.fail(`expected a mapping of ${what}`);
  return v;
}

export function parseQuotas(raw: unknown, file: string, classes: ReadonlySet<string>): QuotaConfig {
  const at = new At(file);
  const top = obj(raw ?? {}, at, ['onExceed', 'ipv6Prefix', 'plans', 'defaultPlan', 'classPlans', 'defaultClassPlan', 'overrides', 'authFailures']);
  const plans = new Map<string, PlanSpec>();
  for (const [name, v] of Object.entries(mapOf(top.plans, at.child('plans'), 'plan name → limits'))) {
    plans.set(name, parsePlan(v, at.child('plans').child(name)));
  }
  const planRef = (v: unknown, a: At): string | undefined => {
    if (v === undefined || v === null) return undefined;
    const p = str(v, a);
    if (!plans.has(p)) a.fail(`no plan "${p}" (plans: ${[...plans.keys()].join(', ') || 'none'})`);
    return p;
  };
  const classPlans = new Map<string, string>();
  for (const [cls, v] of Object.entries(mapOf(top.classPlans, at.child('classPlans'), 'netblock class → plan'))) {
    const a = at.child('classPlans').child(cls);
    checkClassName(cls, a);
    if (!classes.has(cls)) a.fail(`no netblock has class "${cls}" (classes: ${[...classes].join(', ') || 'none'})`);
    classPlans.set(cls, planRef(v, a)!);
  }
  const ov = obj(top.overrides, at.child('overrides'), ['accounts', 'ips']);
  // Account overrides never apply to an address, nor address overrides to an account: plans (by
  // class, default or the account's own) apply to both.
  const limitsConnections = (spec: PlanSpec) => typeof spec.limits.concurrentConnections?.value === 'number';
  const planLimitsConnections = [...plans.values()].some(limitsConnections);
  let countsAccountConnections = planLimitsConnections;
  const accounts = new Map<string, PlanSpec>();
  for (const [name, v] of Object.entries(mapOf(ov.accounts, at.child('overrides').child('accounts'), 'account → limits'))) {
    const spec = parsePlan(v, at.child('overrides').child('accounts').child(name));
    countsAccountConnections ||= limitsConnections(spec);
    accounts.set(name.toLowerCase(), spec);
  }
  let countsAddressConnections = planLimitsConnections;
  const ips = new PrefixTable<{ cidr: string; spec: PlanSpec }>();
  for (const [cidrText, v] of Object.entries(mapOf(ov.ips, at.child('overrides').child('ips'), 'address or CIDR → limits'))) {
    const a = at.child('overrides').child('ips').child(cidrText);
    const c = parseCidr(cidrText);
    if (typeof c === 'string') return a.fail(c);
    const spec = parsePlan(v, a);
    countsAddressConnections ||= limitsConnections(spec);
    ips.insert(c, { cidr: c.text, spec });
  }
  const af = obj(top.authFailures, at.child('authFailures'), ['perIp', 'perAccount']);
  return {
    onExceed: parseAction(top.onExceed, at.child('onExceed'), RATE_LIMITED),
    ipv6Prefix: int(top.ipv6Prefix, at.child('ipv6Prefix'), 64, 16, 128),
    plans,
    defaultPlan: planRef(top.defaultPlan, at.child('defaultPlan')),
    classPlans,
    defaultClassPlan: planRef(top.defaultClassPlan, at.child('defaultClassPlan')),
    accounts,
    ips,
    authFailures: {
      perIp: parseAuthLimits(af.perIp, at.child('authFailures').child('perIp'), DEFAULT_AUTH.perIp),
      perAccount: parseAuthLimits(af.perAccount, at.child('authFailures').child('perAccount'), DEFAULT_AUTH.perAccount, true),
    },
    countsAddressConnections,
    countsAccountConnections,
  };
}

/** The plan that applies: the account's own (else defaultPlan), or the class's (else defaultClassPlan). */
export function planFor(q: QuotaConfig, who: { account?: Account; cls?: string }): string | undefined {
  if (who.account) return q.plans.has(who.account.plan) ? who.account.plan : q.defaultPlan;
  if (who.cls !== undefined) return q.classPlans.get(who.cls) ?? q.defaultClassPlan;
  return q.defaultClassPlan;
}

/** Nothing limited: shared, so a gateway without quotas.yaml allocates nothing per check. */
const UNLIMITED: ResolvedQuotas = Object.freeze({ plan: undefined, limits: new Map<LimitName, ResolvedLimit>() });

/** Limits for an account or an intercept address: plan, then overrides. */
export function resolveQuotas(q: QuotaConfig, who: { account?: Account; ip?: string; cls?: string }): ResolvedQuotas {
  const plan = planFor(q, who);
  // No plan and no overrides of this kind configured: nothing can limit it (the common case
  // without quotas.yaml, four quota rules per message).
  if (plan === undefined && (who.account ? q.accounts.size === 0 : !who.ip || q.ips.size === 0)) return UNLIMITED;
  const out = new Map<LimitName, ResolvedLimit>();
  const apply = (spec: PlanSpec | undefined, source: string) => {
    if (!spec) return;
    for (const n of LIMIT_NAMES) {
      const lv = spec.limits[n];
      if (!lv) continue;
      if (lv.value === null) {
        out.delete(n);
        continue;
      }
      const rate = RATE_LIMITS.includes(n);
      out.set(n, { name: n, value: lv.value, windowMs: LIMITS[n].windowMs, onExceed: lv.onExceed ?? (rate ? (spec.onExceed ?? q.onExceed) : undefined), source });
    }
  };
  if (plan) apply(q.plans.get(plan), `plan ${plan}`);
  if (who.account) apply(q.accounts.get(who.account.name.toLowerCase()), `override accounts.${who.account.name}`);
  else if (who.ip) {
    const o = q.ips.lookup(who.ip);
    if (o) apply(o.spec, `override ips.${o.cidr}`);
  }
  return { plan, limits: out };
}

/**
 * A quota in force limits the account's open connections (its plan, else
 * defaultPlan, then its override, as the quota check resolves them at
 * MAIL): only then does a successful AUTH count its connection.
 */
export function limitsAccountConnections(q: QuotaConfig, account: Account): boolean {
  return q.countsAccountConnections && resolveQuotas(q, { account }).limits.has('concurrentConnections');
}
