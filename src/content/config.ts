/**
 * policies/content.yaml: content scanning at end of DATA by rspamd. Where
 * to reach rspamd and how long to wait, which listeners' mail is scanned,
 * what each rspamd action means here (per listener or role, and per plan),
 * fail-open or fail-closed when rspamd cannot answer, a warnOnly switch for
 * rollouts, and which rspamd actions count as a containment signal
 * (contentSpam). Validated like the other policy files (file, key, reason);
 * absent file: no scanning.
 *
 * Talks to: the filesystem (reads). Trusts: nothing.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { At, bool, duration, isObj, obj, size, str, strList, type Obj } from '../config/validate';
import { parsePerListener, type ActionSpec, type PerListener } from '../policy/action';
import { readYaml } from '../policy/yaml';

/** rspamd's actions (metric actions of /checkv2), in rising severity. */
export const RSPAMD_ACTIONS = ['no action', 'greylist', 'add header', 'rewrite subject', 'soft reject', 'reject'] as const;
export type RspamdAction = (typeof RSPAMD_ACTIONS)[number];

export interface ContentConfig {
  readonly enabled: boolean;
  readonly rspamd: { readonly url: string; readonly timeoutMs: number; readonly maxSize: number };
  /** Listener names or roles whose mail is scanned. */
  readonly listeners: ReadonlySet<string>;
  readonly actions: ReadonlyMap<RspamdAction, PerListener<ActionSpec>>;
  /** plan → rspamd action → action (overrides `actions` for that plan's senders). */
  readonly plans: ReadonlyMap<string, ReadonlyMap<RspamdAction, PerListener<ActionSpec>>>;
  readonly onError: PerListener<ActionSpec>;
  readonly warnOnly: boolean;
  /** rspamd actions that raise containment's contentSpam signal. */
  readonly signal: ReadonlySet<RspamdAction>;
}

export const CONTENT_FILE = 'content.yaml';

const DEFAULT_ACTIONS: Record<RspamdAction, unknown> = {
  'no action': 'accept',
  greylist: 'accept',
  'add header': 'accept',
  'rewrite subject': 'accept',
  'soft reject': 'tempfail',
  reject: 'reject',
};

function actionMap(raw: unknown, at: At, listeners: readonly string[], base?: ReadonlyMap<RspamdAction, PerListener<ActionSpec>>): Map<RspamdAction, PerListener<ActionSpec>> {
  const o: Obj = obj(raw ?? {}, at, RSPAMD_ACTIONS);
  const out = new Map<RspamdAction, PerListener<ActionSpec>>();
  for (const a of RSPAMD_ACTIONS) {
    if (o[a] !== undefined) out.set(a, parsePerListener(o[a], at.child(a), listeners, undefined));
    else out.set(a, base?.get(a) ?? parsePerListener(DEFAULT_ACTIONS[a], at.child(a), listeners, undefined));
  }
  return out;
}

export function parseContent(raw: unknown, file: string, listeners: readonly { name: string; role: string }[]): ContentConfig {
  const at = new At(file);
  const o = obj(raw ?? {}, at, ['enabled', 'rspamd', 'listeners', 'actions', 'plans', 'onError', 'warnOnly', 'signal']);
  const names = listeners.map((l) => l.name);
  const r = obj(o.rspamd, at.child('rspamd'), ['url', 'timeout', 'maxSize']);
  const url = str(r.url, at.child('rspamd').child('url'), 'http://127.0.0.1:11333');
  if (!/^http:\/\/[^/\s]+\/?$/.test(url)) at.child('rspamd').child('url').fail(`expected http://host:port of rspamd's normal worker, got "${url}"`);
  const timeoutMs = duration(r.timeout, at.child('rspamd').child('timeout'), '5s');
  if (timeoutMs < 1) at.child('rspamd').child('timeout').fail('must be at least 1ms');
  const where = strList(o.listeners, at.child('listeners'), ['submission', 'intercept']);
  where.forEach((l, i) => {
    if (!names.includes(l) && !['submission', 'intercept', 'mx'].includes(l)) at.child('listeners').child(i).fail(`not a listener name or role: "${l}" (listeners: ${names.join(', ')})`);
  });
  const actions = actionMap(o.actions, at.child('actions'), names);
  const plans = new Map<string, ReadonlyMap<RspamdAction, PerListener<ActionSpec>>>();
  if (o.plans !== undefined) {
    if (!isObj(o.plans)) at.child('plans').fail('expected a mapping of plan → { rspamd action: action }');
    for (const [plan, v] of Object.entries(o.plans as Obj)) plans.set(plan, actionMap(v, at.child('plans').child(plan), names, actions));
  }
  const signal = strList(o.signal, at.child('signal'), ['reject', 'add header']);
  signal.forEach((s, i) => {
    if (!(RSPAMD_ACTIONS as readonly string[]).includes(s)) at.child('signal').child(i).fail(`not an rspamd action: "${s}" (${RSPAMD_ACTIONS.join(', ')})`);
  });
  return {
    enabled: bool(o.enabled, at.child('enabled'), true),
    rspamd: { url: url.replace(/\/$/, ''), timeoutMs, maxSize: size(r.maxSize, at.child('rspamd').child('maxSize'), '20MB') },
    listeners: new Set(where),
    actions,
    plans,
    onError: parsePerListener(o.onError, at.child('onError'), names, { action: 'accept' }),
    warnOnly: bool(o.warnOnly, at.child('warnOnly'), false),
    signal: new Set(signal as RspamdAction[]),
  };
}

/** The policy directory's content.yaml (absent or enabled: false: no scanning). */
export function loadContent(dir: string, listeners: readonly { name: string; role: string }[]): ContentConfig | undefined {
  const file = path.join(dir, CONTENT_FILE);
  if (!existsSync(file)) return undefined;
  const cfg = parseContent(readYaml(file), file, listeners);
  return cfg.enabled ? cfg : undefined;
}
