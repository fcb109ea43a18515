/**
 * The policy engine: the PolicyHooks the SMTP session calls at each phase,
 * answered by running that stage's restriction list (Postfix's model):
 *
 *   built-in relay gates → the stage's rules from rules.yaml, in order
 *   - a rule says next (no objection), permit (stop: accept), tempfail or
 *     reject (stop: that is the decision) or hold (remembered; evaluation
 *     goes on, so a hold never hides a later refusal; the message is held
 *     if nothing refuses it);
 *   - warnOnly rules log what they would have done and change nothing;
 *   - the end of the list is the stage's stated default (rules.yaml
 *     `defaults`, accept unless said otherwise).
 * Every decision is a Verdict carrying the deciding rule's id (with the
 * check's detail: "dnsbl:zen.xbl", "quota.recipients:recipientsPerDay"),
 * logged (evt "policy": refusals and holds at info, accepts at debug) and
 * reported to the observer.
 *
 * `policy explain` runs the same evaluate() with mode "explain" over a
 * dry-run store: same rules, same checks, same DNS lookups, no counting, no
 * waiting, no logs. Connections are counted here (an anvil: +1 at connect,
 * −1 at disconnect, per address on intercept and per account after AUTH,
 * each only when a quota limits them) in the state store, which outlives
 * policy reloads: the hooks' answers say what was counted and the
 * disconnect gives back just that.
 *
 * Talks to: the state store, DNS (through DnsblClient), the account store
 * (reads). Trusts: the session's facts (client address, authenticated user).
 */
import type { Account } from '../accounts/store';
import { verdictValues, type ClientInfo, type ListenerRole, type Stage, type Verdict, type Via } from '../envelope';
import type { Logger } from '../log';
import type { UserHash } from '../user-hash';
import { keys } from '../state/keys';
import { isStateUnavailable } from '../state/resilient';
import type { StateStore } from '../state/store';
import { accountSubject, ipSubject } from './checks/common';
import { DnsblCache, DnsblClient } from './dnsbl';
import type { PolicySet } from './load';
import type { Netblock } from './netblocks';
import { limitsAccountConnections, planFor } from './quotas';
import { signingAuthority, type SigningFacts } from './signing';
import type { SigningAuthority } from '../dkim/types';
import type { Charge, CheckResult, EvalContext, Outcome, Rule, RuntimeEnv } from './rule';
import { ACCEPT, type AuthGate, type AuthVerdict, type ConnectDecision, type ConnectionSlot, type ConnectFacts, type DataFacts, type DisconnectFacts, type PolicyHooks, type PolicyObserver, type RcptFacts, type TransactionFacts } from './types';

/** Connection counters expire if a disconnect is ever missed (a crash, a bug). */
const CONNECTION_TTL_MS = 60 * 60_000;

export interface EngineDeps {
  readonly store: StateStore;
  readonly logger: Logger;
  /** Shared by successive engines so reloads keep cached answers. */
  readonly dnsblCache?: DnsblCache;
  readonly accounts?: { get(name: string): Account | undefined };
  readonly observer?: PolicyObserver;
  /** Injectable clock (ms since the epoch). */
  readonly clock?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
  /** At the auth stage the user is what the client typed (maybe a password): logged only as this hash (src/user-hash.ts). */
  readonly userHash?: UserHash;
}

export type Mode = 'live' | 'explain';

/** The facts of one stage, whoever asks (the session or explain). */
export interface StageFacts {
  readonly listener: { readonly name: string; readonly role: ListenerRole };
  readonly ip: string;
  readonly user?: string;
  readonly account?: Account;
  readonly mailFrom?: string;
  readonly recipients?: readonly string[];
  readonly rcpt?: string;
  readonly headerFrom?: readonly string[];
  readonly size?: number;
  /** Recipients over recipientsPerHour that containment allows the sender (RcptFacts.allowance). */
  readonly allowance?: RcptFacts['allowance'];
  /** Who asked: a native listener (unset) or Postfix's policy service or milter (src/postfix). */
  readonly via?: Via;
}

/** One rule's evaluation, for explain and logs. */
export interface Step {
  readonly rule: string;
  readonly check: string;
  readonly builtin: boolean;
  readonly outcome: Outcome | 'skipped' | 'error';
  readonly reply?: string;
  readonly detail?: string;
  readonly inputs?: Record<string, unknown>;
  readonly note?: string;
  readonly warnOnly?: boolean;
}

export interface StageResult {
  readonly stage: Stage;
  readonly verdict: Verdict;
  readonly steps: readonly Step[];
  readonly netblock?: Netblock;
  readonly plan?: string;
  /** Takes back what this stage's quotas counted (present when it kept counts). */
  readonly takeBack?: () => Promise<void>;
}

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class PolicyEngine implements PolicyHooks {
  readonly dnsbl: DnsblClient;
  private readonly clock: () => number;
  private readonly log: Logger;

  constructor(
    readonly policy: PolicySet,
    private readonly deps: EngineDeps,
    /** Increases with every successful reload (shown by explain and /api/reload). */
    readonly version = 1,
  ) {
    this.clock = deps.clock ?? Date.now;
    this.log = deps.logger;
    this.dnsbl = new DnsblClient(policy.dnsbl, deps.dnsblCache ?? new DnsblCache(), {
      clock: this.clock,
      observer: deps.observer?.dnsblLookup ? (z, r, ms) => deps.observer!.dnsblLookup!(z, r, ms) : undefined,
    });
  }

  get store(): StateStore {
    return this.deps.store;
  }

  private liveEnv: RuntimeEnv | undefined;

  private env(mode: Mode, store: StateStore): RuntimeEnv {
    const live = mode === 'live';
    if (live && store === this.deps.store && this.liveEnv) return this.liveEnv;
    const env: RuntimeEnv = {
      store,
      dnsbl: this.dnsbl,
      accounts: this.deps.accounts,
      sleep: live ? (this.deps.sleep ?? defaultSleep) : async () => undefined,
      quotaHit: live && this.deps.observer?.quotaHit ? (l) => this.deps.observer!.quotaHit!(l) : undefined,
    };
    if (live && store === this.deps.store) this.liveEnv = env;
    return env;
  }

  private context(stage: Stage, f: StageFacts, mode: Mode, store: StateStore): EvalContext {
    const netblock = this.policy.netblocks.match(f.ip);
    const fresh = f.account ? this.deps.accounts?.get(f.account.name) : undefined;
    const account = fresh ?? f.account;
    const plan = f.listener.role === 'submission' ? account?.plan : f.listener.role === 'intercept' ? planFor(this.policy.quotas, { cls: netblock?.cls ?? '' }) : undefined;
    return {
      stage,
      mode,
      now: this.clock(),
      env: this.env(mode, store),
      data: this.policy,
      listener: f.listener,
      ip: f.ip,
      netblock,
      plan,
      user: f.user ?? account?.name,
      account,
      mailFrom: f.mailFrom,
      recipients: f.recipients ?? [],
      rcpt: f.rcpt,
      headerFrom: f.headerFrom,
      size: f.size,
      ...(f.allowance ? { allowance: f.allowance } : {}),
      charges: [],
    };
  }

  private skipReason(rule: Rule, ctx: EvalContext): string | undefined {
    if (rule.listeners && !rule.listeners.has(ctx.listener.name) && !rule.listeners.has(ctx.listener.role)) return `not for listener ${ctx.listener.name}`;
    if (rule.classes && !rule.classes.has(ctx.netblock?.cls ?? 'none')) return `not for class ${ctx.netblock?.cls ?? 'none'}`;
    if (rule.plans && (ctx.plan === undefined || !rule.plans.has(ctx.plan))) return `not for plan ${ctx.plan ?? 'none'}`;
    return undefined;
  }

  /** Run one stage's restriction list. The one code path for live decisions and explain. */
  async evaluate(stage: Stage, f: StageFacts, mode: Mode, store: StateStore = this.deps.store, lastWord?: (v: Verdict) => Promise<Verdict>): Promise<StageResult> {
    const t0 = performance.now();
    const ctx = this.context(stage, f, mode, store);
    // The trace is for explain; live decisions only log the verdict.
    const trace = mode === 'explain';
    const steps: Step[] = [];
    let final: Verdict | undefined;
    let hold: Verdict | undefined;
    for (const rule of this.policy.stages[stage]) {
      const skip = this.skipReason(rule, ctx);
      if (skip) {
        if (trace) steps.push({ rule: rule.id, check: rule.check.type, builtin: rule.builtin, outcome: 'skipped', note: skip });
        continue;
      }
      let r: CheckResult;
      try {
        // Most checks answer synchronously: an await of a plain value would still cost a microtask per rule.
        const out = rule.check.run(ctx);
        r = out instanceof Promise ? await out : out;
      } catch (err) {
        // A failing check (a bug, a state store outage) defers the mail, never loses it.
        // Shared state unavailable with state.failMode closed: 451 4.3.0 state_unavailable
        // (the store logged the outage once; not one error line per command).
        const unavailable = isStateUnavailable(err);
        if (mode === 'live' && !unavailable) this.log.error({ evt: 'error', stage, rule: rule.id, err }, 'policy check failed');
        if (trace) steps.push({ rule: rule.id, check: rule.check.type, builtin: rule.builtin, outcome: 'error', note: (err as Error).message });
        final = { action: 'tempfail', stage, rule: rule.id, reply: unavailable ? 'state_unavailable' : 'local_error' };
        break;
      }
      const id = r.sub ? `${rule.id}:${r.sub}` : rule.id;
      const warnOnly = rule.warnOnly && r.outcome !== 'next' && r.outcome !== 'permit';
      if (trace) steps.push({
        rule: id,
        check: rule.check.type,
        builtin: rule.builtin,
        outcome: r.outcome,
        ...(r.reply ? { reply: r.reply } : {}),
        ...(r.detail ? { detail: r.detail } : {}),
        ...(r.inputs ? { inputs: r.inputs } : {}),
        ...(r.note ? { note: r.note } : {}),
        ...(warnOnly ? { warnOnly } : {}),
      });
      if (r.outcome === 'next') continue;
      if (warnOnly) {
        if (mode === 'live') this.log.info({ evt: 'policy', stage, rule: id, would: r.outcome, reply: r.reply, ip: ctx.ip, user: ctx.user, warnOnly: true }, 'policy would refuse (warnOnly)');
        continue;
      }
      if (r.outcome === 'permit') {
        final = hold ?? ACCEPT(stage, id);
        break;
      }
      const v: Verdict = { action: r.outcome, stage, rule: id, ...(r.reply ? { reply: r.reply } : {}), ...(r.detail ? { detail: r.detail } : {}) };
      if (r.outcome === 'hold') {
        // A hold is kept with the message: with what the rule saw then (the console's verdict trail).
        hold ??= r.inputs ? { ...v, values: verdictValues(r.inputs) } : v;
        continue;
      }
      final = v;
      break;
    }
    if (!final) final = hold ?? this.stageDefault(stage);
    // Containment decides after the rules; a message it refuses, throttles or holds was not
    // sent, so what the rules counted for it is taken back.
    let overruled = false;
    if (lastWord && final.action !== 'reject' && final.action !== 'tempfail') {
      const ruled = final;
      final = await lastWord(final);
      overruled = final.action !== ruled.action;
    }
    if ((final.action === 'reject' || final.action === 'tempfail' || overruled) && ctx.charges.length > 0) {
      await this.refund(ctx.charges, store);
      ctx.charges.length = 0;
    }
    if (mode === 'live') this.report(final, ctx, performance.now() - t0, f.via);
    const charges = ctx.charges;
    return { stage, verdict: final, steps, netblock: ctx.netblock, plan: ctx.plan, ...(charges.length > 0 ? { takeBack: () => this.refund(charges, store) } : {}) };
  }

  private stageDefault(stage: Stage): Verdict {
    const d = this.policy.defaults[stage];
    const reply = d.reply ?? (d.action === 'reject' ? 'policy_reject' : d.action === 'tempfail' ? 'policy_tempfail' : undefined);
    return { action: d.action, stage, rule: `${stage}.default`, ...(reply ? { reply } : {}), ...(d.detail ? { detail: d.detail } : {}) };
  }

  private async refund(charges: Charge[], store: StateStore): Promise<void> {
    for (const c of charges) await store.undo(c.limits, c.cost, c.stamp);
  }

  private report(v: Verdict, ctx: EvalContext, ms: number, via: Via | undefined): void {
    this.deps.observer?.verdict?.(v, via ?? 'native');
    // An accepted stage is a debug line: at info (the default) not built at all (4 per message).
    if (v.action === 'accept' && !this.log.isLevelEnabled('debug')) return;
    const fields = {
      evt: 'policy',
      stage: v.stage,
      action: v.action,
      rule: v.rule,
      ...(v.reply ? { reply: v.reply } : {}),
      ...(v.detail ? { detail: v.detail } : {}),
      listener: ctx.listener.name,
      ...(via ? { via } : {}),
      ip: ctx.ip,
      ...this.userField(v.stage, ctx.user),
      ...(ctx.mailFrom !== undefined ? { from: ctx.mailFrom } : {}),
      ...(ctx.rcpt ? { rcpt: ctx.rcpt } : {}),
      ms: Math.round(ms * 100) / 100,
    };
    if (v.action === 'accept') this.log.debug(fields, 'policy decision');
    else this.log.info(fields, 'policy decision');
  }

  /** After AUTH the user is the account; at the auth stage it is unverified text: a keyed hash or nothing. */
  private userField(stage: Stage, user: string | undefined): { user?: string; userHash?: string } {
    if (!user) return {};
    if (stage !== 'auth') return { user };
    return this.deps.userHash ? { userHash: this.deps.userHash(user) } : {};
  }

  /** Count an opening (+1) or closing (−1) connection (intercept: per address). */
  async countConnection(f: StageFacts, by: 1 | -1, store: StateStore = this.deps.store): Promise<void> {
    if (f.listener.role !== 'intercept') return;
    await store.incr(keys.connections(ipSubject({ ip: f.ip, data: this.policy })), by, CONNECTION_TTL_MS, this.clock());
  }

  /**
   * After the password check: count failures; on success count the account's
   * connection when a quota limits it. Says whether it counted (the
   * disconnect gives back only that).
   */
  async afterAuth(f: StageFacts, ok: boolean, mode: Mode, store: StateStore = this.deps.store): Promise<boolean> {
    const ctx = this.context('auth', f, mode, store);
    for (const rule of this.policy.stages.auth) {
      if (rule.check.afterAuth && !this.skipReason(rule, ctx)) await rule.check.afterAuth(ctx, ok);
    }
    if (!ok || !f.user || !this.countsAccountConnections(f.user)) return false;
    await store.incr(keys.connections(accountSubject(f.user)), 1, CONNECTION_TTL_MS, ctx.now);
    return true;
  }

  /**
   * A quota limits this account's open connections (its plan and override,
   * as the quota check at MAIL reads them). An account the engine cannot
   * look up (no account store given) is counted whenever any plan or account
   * override limits connections: counting costs a round trip, missing a
   * limit would let it go unenforced.
   */
  private countsAccountConnections(user: string): boolean {
    const q = this.policy.quotas;
    const account = q.countsAccountConnections ? this.deps.accounts?.get(user) : undefined;
    return account ? limitsAccountConnections(q, account) : q.countsAccountConnections;
  }

  // ---- PolicyHooks (the session's side) ----

  async connect(f: ConnectFacts): Promise<ConnectDecision> {
    const facts: StageFacts = { listener: { name: f.listener.name, role: f.listener.role }, ip: f.ip, ...(f.via ? { via: f.via } : {}) };
    // Counted before the rules so that every connect has its disconnect; only when a quota
    // reads the count. The decision says so, and the disconnect gives back only what was
    // counted: a reload that adds the limit leaves the connections already open uncounted.
    const counted = this.policy.quotas.countsAddressConnections && f.listener.role === 'intercept';
    if (counted) await this.countConnection(facts, 1);
    try {
      const r = await this.evaluate('connect', facts, 'live');
      return { verdict: r.verdict, ...(r.netblock ? { netblockClass: r.netblock.cls } : {}), countedConnection: counted };
    } catch (err) {
      if (counted) await this.countConnection(facts, -1);
      throw err;
    }
  }

  async auth(f: { client: ClientInfo; user: string; phase: 'before' | 'after'; ok?: boolean }): Promise<AuthVerdict> {
    const facts: StageFacts = { listener: { name: f.client.listener, role: f.client.role }, ip: f.client.ip, user: f.user };
    if (f.phase === 'before') return { ...(await this.evaluate('auth', facts, 'live')).verdict, countedAccount: false };
    const countedAccount = await this.afterAuth(facts, f.ok === true, 'live');
    return { ...ACCEPT('auth', 'auth.counted'), countedAccount };
  }

  authGate(f: { client: ClientInfo; user: string }): AuthGate {
    const facts: StageFacts = { listener: { name: f.client.listener, role: f.client.role }, ip: f.client.ip, user: f.user };
    return {
      key: ipSubject({ ip: f.client.ip, data: this.policy }).id,
      headroom: async () => {
        const ctx = this.context('auth', facts, 'live', this.deps.store);
        let room = Infinity;
        for (const rule of this.policy.stages.auth) {
          if (rule.check.headroom && !this.skipReason(rule, ctx)) room = Math.min(room, await rule.check.headroom(ctx));
        }
        return room;
      },
    };
  }

  private tx(f: TransactionFacts): StageFacts {
    return {
      listener: { name: f.client.listener, role: f.client.role },
      ip: f.client.ip,
      user: f.client.user,
      account: f.account,
      mailFrom: f.mailFrom,
      recipients: f.recipients,
      ...(f.client.via ? { via: f.client.via } : {}),
    };
  }

  async mail(f: TransactionFacts): Promise<Verdict> {
    return (await this.evaluate('mail', this.tx(f), 'live')).verdict;
  }

  async rcpt(f: RcptFacts): Promise<Verdict> {
    const r = await this.evaluate('rcpt', { ...this.tx(f), rcpt: f.rcpt, ...(f.allowance ? { allowance: f.allowance } : {}) }, 'live');
    if (r.takeBack) f.counted?.(r.takeBack);
    return r.verdict;
  }

  async data(f: DataFacts): Promise<Verdict> {
    return (await this.evaluate('data', { ...this.tx(f), headerFrom: f.headerFrom, size: f.size }, 'live', this.deps.store, f.lastWord)).verdict;
  }

  signingAuthority(f: SigningFacts): SigningAuthority {
    // The account as the accounts file says now (as the checks read it): a removed sender stops signing at once.
    const account = f.account ? (this.deps.accounts?.get(f.account.name) ?? f.account) : undefined;
    return signingAuthority(this.policy.identity, { ...f, account });
  }

  async openSlot(f: { listener: string; ip: string }): Promise<ConnectionSlot> {
    // The key is fixed now: a reload that changes ipv6Prefix must not make the release miss.
    const subject = ipSubject({ ip: f.ip, data: this.policy });
    const key = keys.connectionSlots(subject, f.listener);
    const store = this.deps.store;
    const count = await store.incr(key, 1, CONNECTION_TTL_MS, this.clock());
    let held = true;
    return {
      count,
      subject: subject.id,
      release: async () => {
        if (!held) return;
        held = false;
        await store.incr(key, -1, CONNECTION_TTL_MS, this.clock());
      },
    };
  }

  disconnect(f: DisconnectFacts): void {
    if (!f.countedConnection && !f.countedAccount) return;
    const facts: StageFacts = { listener: { name: f.client.listener, role: f.client.role }, ip: f.client.ip };
    const done = async () => {
      if (f.countedConnection) await this.countConnection(facts, -1);
      if (f.countedAccount && f.client.user) await this.deps.store.incr(keys.connections(accountSubject(f.client.user)), -1, CONNECTION_TTL_MS, this.clock());
    };
    done().catch((err: Error) => this.log.error({ evt: 'error', err }, 'releasing connection counters failed'));
  }
}
