/**
 * The shapes a rule is made of. A *check* is code (src/policy/checks/*),
 * compiled once from its options in rules.yaml; a *rule* is a check with an
 * id, a stage and selectors (which listeners, netblock classes and plans it
 * applies to). At run time a check gets an EvalContext (the facts of this
 * connection or transaction, the policy's data, the state store, the clock)
 * and answers with a CheckResult: `next` (no opinion: go on), `permit` (stop
 * the list, accept), or a decision (tempfail, reject, hold), plus the inputs
 * it looked at for the explain trace. Below load.ts and the checks, which
 * both code against these shapes.
 */
import type { Account } from '../accounts/store';
import type { ListenerRole, Stage } from '../envelope';
import type { StateStore } from '../state/store';
import type { At, Obj } from '../config/validate';
import type { DnsblClient, DnsblConfig } from './dnsbl';
import type { IdentityConfig } from './identity';
import type { DomainSet } from './lists';
import type { Netblock, Netblocks } from './netblocks';
import type { QuotaConfig } from './quotas';

/** The data the checks read (everything but the rules). */
export interface PolicyData {
  readonly dir: string;
  readonly netblocks: Netblocks;
  readonly dnsbl: DnsblConfig;
  readonly quotas: QuotaConfig;
  readonly identity: IdentityConfig;
  /** Domains an mx listener accepts mail for. */
  readonly relayDomains: DomainSet;
  /** Configured listener names (for per-listener keys). */
  readonly listeners: readonly string[];
}

export type Outcome = 'next' | 'permit' | 'tempfail' | 'reject' | 'hold';

export interface CheckResult {
  readonly outcome: Outcome;
  readonly reply?: string;
  readonly detail?: string;
  /** Appended to the rule id in the verdict, e.g. "zen.xbl" → "dnsbl:zen.xbl". */
  readonly sub?: string;
  /** What the check looked at (explain output, logs). */
  readonly inputs?: Record<string, unknown>;
  /** One line for the explain output. */
  readonly note?: string;
}

/** Quota increments made during one stage: undone if the stage ends in a refusal. */
export interface Charge {
  readonly limits: ReadonlyArray<{ key: string; limit: number; windowMs: number }>;
  readonly cost: number;
  readonly stamp: number;
}

/** What the engine's run-time offers the checks. */
export interface RuntimeEnv {
  readonly store: StateStore;
  readonly dnsbl: DnsblClient;
  /** Fresh account data (suspension mid-session), when an account store is wired. */
  readonly accounts?: { get(name: string): Account | undefined };
  readonly sleep: (ms: number) => Promise<void>;
  readonly quotaHit?: (limit: string) => void;
}

export interface EvalContext {
  readonly stage: Stage;
  /** live: count, sleep, log; explain: the same code over a dry-run store, no waiting. */
  readonly mode: 'live' | 'explain';
  readonly now: number;
  readonly env: RuntimeEnv;
  readonly data: PolicyData;
  readonly listener: { readonly name: string; readonly role: ListenerRole };
  readonly ip: string;
  readonly netblock?: Netblock;
  /** Account plan (submission) or the plan of the netblock class (intercept). */
  readonly plan?: string;
  /** AUTH user as typed (auth stage) or the authenticated account name. */
  readonly user?: string;
  readonly account?: Account;
  readonly mailFrom?: string;
  /** Recipients accepted so far in this transaction. */
  readonly recipients: readonly string[];
  readonly rcpt?: string;
  /** Recipients over recipientsPerHour the sender may send now (containment: its own address book). */
  readonly allowance?: (limit: 'recipientsPerHour') => Promise<number>;
  readonly headerFrom?: readonly string[];
  readonly size?: number;
  readonly charges: Charge[];
}

export interface Check {
  /** The check's type name as written in rules.yaml. */
  readonly type: string;
  run(ctx: EvalContext): Promise<CheckResult> | CheckResult;
  /** Auth stage only: told the result of the password check (count failures). */
  afterAuth?(ctx: EvalContext, ok: boolean): Promise<void>;
  /**
   * Auth stage only: how many more failed AUTHs the subjects of `ctx` can
   * take before this check would delay or refuse an attempt (0: it would
   * now; Infinity: never). A read: counts nothing, waits for nothing.
   */
  headroom?(ctx: EvalContext): Promise<number>;
}

export interface Rule {
  readonly id: string;
  readonly stage: Stage;
  readonly check: Check;
  /** Listener names or roles; undefined = all. */
  readonly listeners?: ReadonlySet<string>;
  /** Netblock classes ("none": outside every block); undefined = all. */
  readonly classes?: ReadonlySet<string>;
  readonly plans?: ReadonlySet<string>;
  /** Log what the rule would have done instead of doing it (rollouts). */
  readonly warnOnly: boolean;
  /** A built-in (relay safety) rule that policy files cannot remove. */
  readonly builtin: boolean;
}

/** How a check type is compiled from its options. */
export interface CheckType {
  readonly name: string;
  /** Stages it may be used at. */
  readonly stages: readonly Stage[];
  /** Option keys beyond the common ones (id, check, listeners, classes, plans, warnOnly, comment). */
  readonly keys: readonly string[];
  compile(o: Obj, at: At, data: PolicyData, stage: Stage): Check;
}

export const NEXT: CheckResult = { outcome: 'next' };
