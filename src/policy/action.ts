/**
 * What a policy file says should happen: an action with an optional reply
 * name (from src/replies.ts) and detail text, and the same chosen per
 * listener. Parsed and checked here so every file writes actions the same
 * way:
 *
 *   reject                                        (scalar: the action alone)
 *   { action: reject, reply: dnsbl_listed, detail: "see https://..." }
 *   { intercept: reject, submission: hold, "*": accept }   (per listener)
 *
 * Per-listener keys are a listener name, a role (submission, intercept,
 * mx) or "*"; the most specific applies (name, then role, then "*").
 * A reply must fit its action: 5xx for reject, 4xx for tempfail.
 */
import { At, isObj, obj, oneOf, optStr, type Obj } from '../config/validate';
import type { ListenerRole, VerdictAction } from '../envelope';
import { isReplyName, REPLIES, type ReplyName } from '../replies';

export interface ActionSpec {
  readonly action: VerdictAction;
  readonly reply?: ReplyName;
  /** Appended to the reply text; {ip}, {zone}, {code}, {meaning} are filled in where they apply. */
  readonly detail?: string;
}

export const ACTIONS = ['accept', 'ignore', 'tempfail', 'reject', 'hold'] as const;

export function parseAction(v: unknown, at: At, dflt?: ActionSpec): ActionSpec {
  if ((v === undefined || v === null) && dflt) return dflt;
  if (typeof v === 'string') {
    const a = oneOf(v, at, ACTIONS);
    return { action: a === 'ignore' ? 'accept' : a };
  }
  const o = obj(v, at, ['action', 'reply', 'detail']);
  const a = oneOf(o.action, at.child('action'), ACTIONS);
  const action: VerdictAction = a === 'ignore' ? 'accept' : a;
  const replyName = optStr(o.reply, at.child('reply'));
  let reply: ReplyName | undefined;
  if (replyName !== undefined) {
    const rat: At = at.child('reply');
    if (!isReplyName(replyName)) return rat.fail(`unknown reply "${replyName}" (see src/replies.ts)`);
    reply = replyName;
    const code: number = REPLIES[replyName].code;
    if (action === 'reject' && (code < 500 || code > 599)) at.child('reply').fail(`reply "${reply}" is ${code}: a reject needs a 5xx reply`);
    if (action === 'tempfail' && (code < 400 || code > 499)) at.child('reply').fail(`reply "${reply}" is ${code}: a tempfail needs a 4xx reply`);
    if (action === 'accept' || action === 'hold') at.child('reply').fail(`a reply is only used with reject or tempfail`);
  }
  const detail = optStr(o.detail, at.child('detail'));
  if (detail !== undefined && /[\r\n]/.test(detail)) at.child('detail').fail('must be one line');
  return { action, ...(reply ? { reply } : {}), ...(detail ? { detail } : {}) };
}

/** An action chosen per listener. */
export class PerListener<T> {
  constructor(
    readonly byKey: ReadonlyMap<string, T>,
    readonly fallback: T | undefined,
  ) {}

  get(listener: string, role: ListenerRole): T | undefined {
    return this.byKey.get(listener) ?? this.byKey.get(role) ?? this.byKey.get('*') ?? this.fallback;
  }
}

const ROLES = ['submission', 'intercept', 'mx'];

/**
 * A scalar/action object (same for every listener) or a map keyed by
 * listener name, role or "*". `listeners` are the configured names, so a
 * typo in a key is an error.
 */
export function parsePerListener(v: unknown, at: At, listeners: readonly string[], dflt: ActionSpec | undefined): PerListener<ActionSpec> {
  if (v === undefined || v === null) return new PerListener(new Map(), dflt);
  if (typeof v === 'string' || (isObj(v) && 'action' in v)) return new PerListener(new Map([['*', parseAction(v, at)]]), dflt);
  if (!isObj(v)) at.fail('expected an action or a mapping of listener → action');
  const map = new Map<string, ActionSpec>();
  for (const [k, item] of Object.entries(v as Obj)) {
    if (k !== '*' && !ROLES.includes(k) && !listeners.includes(k)) {
      at.child(k).fail(`not a listener name or role (listeners: ${listeners.join(', ') || 'none'}; roles: ${ROLES.join(', ')}; or "*")`);
    }
    map.set(k, parseAction(item, at.child(k)));
  }
  return new PerListener(map, dflt);
}

/** Fill {name} placeholders in a detail template. */
export function fillDetail(template: string | undefined, vars: Record<string, string | undefined>): string | undefined {
  if (template === undefined) return undefined;
  return template.replace(/\{([a-z]+)\}/g, (m, k: string) => vars[k] ?? m);
}
