/**
 * Loading a policy directory: every file validated, cross-references
 * checked (classes named in quotas.yaml exist in netblocks.yaml, zones named
 * by rules exist in dnsbl.yaml, list files exist and parse), and the
 * restriction lists of rules.yaml compiled into rules. Any problem throws a
 * ConfigError naming file, key (or line) and reason; nothing is half-loaded,
 * so a reload either swaps in a whole new policy or keeps the old one.
 *
 *   netblocks.yaml  subscriber netblocks and their classes   (absent: none)
 *   dnsbl.yaml      zones, code meanings, actions, resolver   (absent: no DNSBLs)
 *   quotas.yaml     plans, limits, overrides, AUTH failures   (absent: no volume limits)
 *   identity.yaml   sender identity per plan / netblock       (absent: own addresses only)
 *   rules.yaml      the ordered rules of each stage           (absent: DEFAULT_STAGES)
 *   lists/          block/allow lists used by rules
 *
 * Talks to: the filesystem (reads). Trusts: nothing.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { At, bool, isObj, list, obj, str, strList, type Obj } from '../config/validate';
import type { ListenerRole, Stage } from '../envelope';
import { parseAction, type ActionSpec } from './action';
import { CHECK_TYPES } from './checks';
import { addressLiteral, authRequired, mxDomains, netblockGate } from './checks/builtin';
import { NO_DNSBL, parseDnsblConfig } from './dnsbl';
import { NO_IDENTITY, parseIdentity } from './identity';
import { DomainSet } from './lists';
import { loadNetblocks } from './netblocks';
import { NO_QUOTAS, parseQuotas } from './quotas';
import type { PolicyData, Rule } from './rule';
import { readYaml } from './yaml';

export const STAGES: readonly Stage[] = ['connect', 'auth', 'mail', 'rcpt', 'data'];
export const POLICY_FILES = ['netblocks.yaml', 'dnsbl.yaml', 'quotas.yaml', 'identity.yaml', 'rules.yaml'] as const;
/**
 * Policy files read elsewhere (PolicyRuntime companions): containment.yaml by
 * src/containment/config.ts, content.yaml by src/content/config.ts,
 * feedback.yaml by src/feedback/config.ts.
 */
export const OTHER_POLICY_FILES = ['containment.yaml', 'content.yaml', 'feedback.yaml'] as const;

export interface PolicySet extends PolicyData {
  /** Each stage's rules in order, the built-in relay gates first. */
  readonly stages: Readonly<Record<Stage, readonly Rule[]>>;
  /** What each stage decides when no rule did (the end of the list). */
  readonly defaults: Readonly<Record<Stage, ActionSpec>>;
  /** Policy files that were present and read. */
  readonly files: readonly string[];
}

/**
 * The rules used for a stage rules.yaml does not list (or when there is no
 * rules.yaml): every check that needs no list file, in a sensible order.
 * The shipped policies/rules.yaml spells these out, with lists added.
 */
export const DEFAULT_STAGES: Readonly<Record<Stage, readonly Obj[]>> = {
  connect: [
    { id: 'quota.connections', check: 'quota', limits: ['concurrentConnections'] },
    { id: 'dnsbl', check: 'dnsbl' },
  ],
  auth: [{ id: 'auth.failures', check: 'auth-failures' }],
  mail: [
    { id: 'account.state', check: 'account-state' },
    { id: 'account.network', check: 'account-network' },
    { id: 'identity.envelope-sender', check: 'envelope-sender' },
    { id: 'quota.connections', check: 'quota', limits: ['concurrentConnections'] },
    { id: 'quota.messages', check: 'quota', limits: ['messagesPerHour'] },
  ],
  rcpt: [{ id: 'quota.recipients', check: 'quota', limits: ['recipientsPerMessage', 'recipientsPerHour', 'recipientsPerDay'] }],
  data: [
    { id: 'identity.header-from', check: 'header-from' },
    { id: 'quota.size', check: 'quota', limits: ['maxMessageSize'] },
    { id: 'quota.messages', check: 'quota', limits: ['messagesPerHour'] },
  ],
};

const BUILTIN = (id: string, stage: Stage, check: Rule['check']): Rule => ({ id, stage, check, warnOnly: false, builtin: true });

const BUILTIN_RULES: Readonly<Record<Stage, readonly Rule[]>> = {
  connect: [BUILTIN('relay.netblock-gate', 'connect', netblockGate)],
  auth: [],
  mail: [BUILTIN('relay.auth-required', 'mail', authRequired)],
  rcpt: [BUILTIN('relay.address-literal', 'rcpt', addressLiteral), BUILTIN('relay.mx-domains', 'rcpt', mxDomains)],
  data: [],
};

const COMMON_KEYS = ['id', 'check', 'listeners', 'classes', 'plans', 'warnOnly', 'comment'];
const ROLES: readonly ListenerRole[] = ['submission', 'intercept', 'mx'];

export interface LoadOptions {
  /** Configured listeners (names and roles), to validate per-listener keys. */
  readonly listeners: ReadonlyArray<{ readonly name: string; readonly role: ListenerRole }>;
}

export function loadPolicy(dir: string, opts: LoadOptions): PolicySet {
  const root = new At(dir);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) root.fail('policy directory does not exist');
  for (const f of readdirSync(dir)) {
    if (/\.ya?ml$/.test(f) && !(POLICY_FILES as readonly string[]).includes(f) && !(OTHER_POLICY_FILES as readonly string[]).includes(f)) {
      new At(path.join(dir, f)).fail(`unknown policy file (known: ${[...POLICY_FILES, ...OTHER_POLICY_FILES].join(', ')})`);
    }
  }
  const file = (name: string) => path.join(dir, name);
  const present = POLICY_FILES.filter((f) => existsSync(file(f))).map(file);
  const listeners = opts.listeners.map((l) => l.name);

  const netblocks = loadNetblocks(file('netblocks.yaml'));
  const dnsblRaw = readYaml(file('dnsbl.yaml'));
  const dnsbl = dnsblRaw === undefined ? NO_DNSBL : parseDnsblConfig(dnsblRaw, file('dnsbl.yaml'), listeners);
  const quotasRaw = readYaml(file('quotas.yaml'));
  const quotas = quotasRaw === undefined ? NO_QUOTAS : parseQuotas(quotasRaw, file('quotas.yaml'), netblocks.classes);
  const identityRaw = readYaml(file('identity.yaml'));
  const identity = identityRaw === undefined ? NO_IDENTITY : parseIdentity(identityRaw, file('identity.yaml'), netblocks.classes);

  const rulesFile = file('rules.yaml');
  const at = new At(rulesFile);
  const top = obj(readYaml(rulesFile) ?? {}, at, ['relayDomains', 'defaults', 'stages']);
  const relayDomains = new DomainSet();
  strList(top.relayDomains, at.child('relayDomains')).forEach((d, i) => {
    const why = relayDomains.add(d, `rules.yaml relayDomains[${i}]`);
    if (why) at.child('relayDomains').child(i).fail(why);
  });
  const data: PolicyData = { dir, netblocks, dnsbl, quotas, identity, relayDomains, listeners };

  const defaultsRaw = obj(top.defaults, at.child('defaults'), STAGES);
  const defaults = {} as Record<Stage, ActionSpec>;
  for (const s of STAGES) defaults[s] = parseAction(defaultsRaw[s], at.child('defaults').child(s), { action: 'accept' });

  const stagesRaw = obj(top.stages, at.child('stages'), STAGES);
  const stages = {} as Record<Stage, Rule[]>;
  for (const s of STAGES) {
    const written = stagesRaw[s] !== undefined;
    const sat = written ? at.child('stages').child(s) : new At('(built-in default rules)', s);
    const items = written ? list(stagesRaw[s], sat) : DEFAULT_STAGES[s];
    const ids = new Set<string>();
    stages[s] = [...BUILTIN_RULES[s]];
    items.forEach((item, i) => {
      const rule = compileRule(item, sat.child(i), s, data, opts);
      if (ids.has(rule.id) || BUILTIN_RULES[s].some((b) => b.id === rule.id)) sat.child(i).child('id').fail(`duplicate rule id "${rule.id}" in stage ${s}`);
      ids.add(rule.id);
      stages[s].push(rule);
    });
  }
  return { ...data, stages, defaults, files: present };
}

function compileRule(item: unknown, at: At, stage: Stage, data: PolicyData, opts: LoadOptions): Rule {
  if (!isObj(item)) at.fail('expected a rule: { id, check, ... }');
  const checkName = str(item.check, at.child('check'));
  const type = CHECK_TYPES.get(checkName);
  if (!type) return at.child('check').fail(`unknown check "${checkName}" (checks: ${[...CHECK_TYPES.keys()].join(', ')})`);
  const o = obj(item, at, [...COMMON_KEYS, ...type.keys]);
  const id = str(o.id, at.child('id'));
  if (!/^[a-z0-9][a-z0-9._-]{0,63}$/i.test(id)) at.child('id').fail(`not a rule id: "${id}" (letters, digits, ".", "_", "-")`);
  if (!type.stages.includes(stage)) at.child('check').fail(`"${checkName}" cannot run at ${stage} (it runs at: ${type.stages.join(', ')})`);
  const names = opts.listeners.map((l) => l.name);
  const set = (key: string, valid: (v: string) => string | undefined): Set<string> | undefined => {
    if (o[key] === undefined) return undefined;
    const vals = strList(o[key], at.child(key));
    vals.forEach((v, i) => {
      const why = valid(v);
      if (why) at.child(key).child(i).fail(why);
    });
    return new Set(vals);
  };
  const listeners = set('listeners', (v) =>
    names.includes(v) || (ROLES as readonly string[]).includes(v) ? undefined : `not a listener name or role: "${v}" (listeners: ${names.join(', ')}; roles: ${ROLES.join(', ')})`,
  );
  const classes = set('classes', (v) =>
    v === 'none' || data.netblocks.classes.has(v) ? undefined : `no netblock has class "${v}" (classes: ${[...data.netblocks.classes].join(', ')}, or "none")`,
  );
  const plans = set('plans', () => undefined);
  return {
    id,
    stage,
    check: type.compile(o, at, data, stage),
    listeners,
    classes,
    plans,
    warnOnly: bool(o.warnOnly, at.child('warnOnly'), false),
    builtin: false,
  };
}
