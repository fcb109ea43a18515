/**
 * Sender identity (policies/identity.yaml): which envelope senders and
 * header From addresses a client may use.
 *
 * Submission, per plan: the authenticated account's own addresses and
 * domains (Account.senders; see ownsAddress), or anything. Intercept: the
 * IP is the identity, so nothing is enforced unless the operator lists, per
 * netblock class or per CIDR (most specific wins), the domains its
 * subscribers may send as (typical: a business line with its own domain).
 *
 * A mismatch is refused (reject, the default) or held for the abuse desk
 * (hold). Rewriting the sender is not implemented: it needs the message
 * rewritten before signing, which the data hook cannot do today.
 *
 * Talks to: nothing (data only). Trusts: nothing (validated).
 */
import { At, isObj, list, obj, oneOf, str, strList } from '../config/validate';
import { parseAction, type ActionSpec } from './action';
import { parseCidr } from './ip';
import { DomainSet } from './lists';
import { checkClassName } from './netblocks';
import { PrefixTable } from './prefix-table';

export interface SubmissionIdentity {
  readonly envelopeSender: 'owned' | 'any';
  /** owned: every header From address is the account's; envelope-domain: same domain as the envelope sender. */
  readonly headerFrom: 'owned' | 'envelope-domain' | 'any';
  readonly nullSender: 'allow' | 'reject';
  readonly onMismatch: ActionSpec;
  readonly source: string;
}

export interface InterceptIdentity {
  readonly domains: DomainSet;
  readonly envelopeSender: 'restricted' | 'any';
  readonly headerFrom: 'restricted' | 'any';
  readonly nullSender: 'allow' | 'reject';
  readonly onMismatch: ActionSpec;
  readonly source: string;
}

export interface IdentityConfig {
  readonly submission: ReadonlyMap<string, SubmissionIdentity>;
  readonly interceptClasses: ReadonlyMap<string, InterceptIdentity>;
  readonly interceptNetblocks: PrefixTable<InterceptIdentity>;
}

const REJECT: ActionSpec = { action: 'reject' };

export const DEFAULT_SUBMISSION_IDENTITY: SubmissionIdentity = {
  envelopeSender: 'owned',
  headerFrom: 'owned',
  nullSender: 'allow',
  onMismatch: REJECT,
  source: 'built-in default',
};

export const NO_IDENTITY: IdentityConfig = {
  submission: new Map([['default', DEFAULT_SUBMISSION_IDENTITY]]),
  interceptClasses: new Map(),
  interceptNetblocks: new PrefixTable(),
};

function mismatch(v: unknown, at: At): ActionSpec {
  if (v === 'rewrite') at.fail('rewrite is not implemented: use reject or hold');
  const a = parseAction(v, at, REJECT);
  if (a.action === 'accept') at.fail('use envelopeSender/headerFrom: any to allow any sender');
  return a;
}

function parseSubmission(v: unknown, at: At, source: string): SubmissionIdentity {
  const o = obj(v, at, ['envelopeSender', 'headerFrom', 'nullSender', 'onMismatch', 'comment']);
  return {
    envelopeSender: oneOf(o.envelopeSender, at.child('envelopeSender'), ['owned', 'any'] as const, 'owned'),
    headerFrom: oneOf(o.headerFrom, at.child('headerFrom'), ['owned', 'envelope-domain', 'any'] as const, 'owned'),
    nullSender: oneOf(o.nullSender, at.child('nullSender'), ['allow', 'reject'] as const, 'allow'),
    onMismatch: mismatch(o.onMismatch, at.child('onMismatch')),
    source,
  };
}

function parseIntercept(v: unknown, at: At, extraKeys: string[], source: string): InterceptIdentity {
  const o = obj(v, at, ['domains', 'envelopeSender', 'headerFrom', 'nullSender', 'onMismatch', 'comment', ...extraKeys]);
  const domains = new DomainSet();
  strList(o.domains, at.child('domains')).forEach((d, i) => {
    const why = domains.add(d.replace(/^@/, ''), `${source} domains[${i}]`);
    if (why) at.child('domains').child(i).fail(why);
  });
  if (domains.size === 0) at.child('domains').fail('list the domains these subscribers may send as');
  return {
    domains,
    envelopeSender: oneOf(o.envelopeSender, at.child('envelopeSender'), ['restricted', 'any'] as const, 'restricted'),
    headerFrom: oneOf(o.headerFrom, at.child('headerFrom'), ['restricted', 'any'] as const, 'restricted'),
    nullSender: oneOf(o.nullSender, at.child('nullSender'), ['allow', 'reject'] as const, 'allow'),
    onMismatch: mismatch(o.onMismatch, at.child('onMismatch')),
    source,
  };
}

export function parseIdentity(raw: unknown, file: string, classes: ReadonlySet<string>): IdentityConfig {
  const at = new At(file);
  const top = obj(raw ?? {}, at, ['submission', 'intercept']);
  const submission = new Map<string, SubmissionIdentity>([['default', DEFAULT_SUBMISSION_IDENTITY]]);
  const sub = top.submission ?? {};
  if (!isObj(sub)) at.child('submission').fail('expected a mapping of plan → identity rules');
  for (const [plan, v] of Object.entries(sub)) submission.set(plan, parseSubmission(v, at.child('submission').child(plan), `identity.yaml submission.${plan}`));
  const ic = obj(top.intercept, at.child('intercept'), ['classes', 'netblocks']);
  const interceptClasses = new Map<string, InterceptIdentity>();
  const cls = ic.classes ?? {};
  if (!isObj(cls)) at.child('intercept').child('classes').fail('expected a mapping of netblock class → identity rules');
  for (const [name, v] of Object.entries(cls)) {
    const a = at.child('intercept').child('classes').child(name);
    checkClassName(name, a);
    if (!classes.has(name)) a.fail(`no netblock has class "${name}" (classes: ${[...classes].join(', ') || 'none'})`);
    interceptClasses.set(name, parseIntercept(v, a, [], `identity.yaml intercept.classes.${name}`));
  }
  const interceptNetblocks = new PrefixTable<InterceptIdentity>();
  list(ic.netblocks, at.child('intercept').child('netblocks')).forEach((v, i) => {
    const a: At = at.child('intercept').child('netblocks').child(i);
    const o = obj(v, a, ['cidr', 'domains', 'envelopeSender', 'headerFrom', 'nullSender', 'onMismatch', 'comment']);
    const c = parseCidr(str(o.cidr, a.child('cidr')));
    if (typeof c === 'string') return a.child('cidr').fail(c);
    interceptNetblocks.insert(c, parseIntercept(v, a, ['cidr'], `identity.yaml intercept.netblocks[${i}] ${c.text}`));
  });
  return { submission, interceptClasses, interceptNetblocks };
}

export function submissionIdentity(cfg: IdentityConfig, plan: string | undefined): SubmissionIdentity {
  return (plan !== undefined ? cfg.submission.get(plan) : undefined) ?? cfg.submission.get('default') ?? DEFAULT_SUBMISSION_IDENTITY;
}

export function interceptIdentity(cfg: IdentityConfig, ip: string, cls: string | undefined): InterceptIdentity | undefined {
  return cfg.interceptNetblocks.lookup(ip) ?? (cls !== undefined ? cfg.interceptClasses.get(cls) : undefined);
}
