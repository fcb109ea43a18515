/**
 * quota: volume limits of the subject's plan (quotas.yaml), `limits: [..]`
 * naming which ones this rule enforces at its stage (see ../quotas.ts for
 * what each counts and when). Rate limits of one rule are checked and
 * counted in ONE atomic store operation (per hour and per day together: a
 * refusal by either counts in neither). What a rule counted is taken back
 * by the engine if a later rule of the same stage refuses.
 */
import { list, str } from '../../config/validate';
import type { Stage } from '../../envelope';
import { keys, type Subject } from '../../state/keys';
import type { RateLimit } from '../../state/store';
import type { ActionSpec } from '../action';
import { LIMITS, LIMIT_NAMES, resolveQuotas, type LimitName, type ResolvedLimit, type ResolvedQuotas } from '../quotas';
import type { Check, CheckResult, CheckType, EvalContext } from '../rule';
import { accountSubject, fromAction, humanMs, ipSubject } from './common';

function stageDefault(name: LimitName, stage: Stage): ActionSpec {
  switch (name) {
    case 'recipientsPerMessage':
      return { action: 'tempfail', reply: 'too_many_recipients' };
    case 'maxMessageSize':
      return { action: 'reject', reply: 'too_big' };
    case 'concurrentConnections':
      return { action: 'tempfail', reply: stage === 'connect' ? 'too_many_connections_ip' : 'rate_limited' };
    default:
      return { action: 'tempfail', reply: 'rate_limited' };
  }
}

const UNLIMITED_NEXT: CheckResult = Object.freeze({ outcome: 'next' });

const WINDOW_TEXT: Partial<Record<LimitName, string>> = { messagesPerHour: 'last hour', recipientsPerHour: 'last hour', recipientsPerDay: 'last 24h' };

export const quotaCheck: CheckType = {
  name: 'quota',
  stages: ['connect', 'mail', 'rcpt', 'data'],
  keys: ['limits'],
  compile(o, at, _data, stage): Check {
    const names = list(o.limits, at.child('limits')).map((v, i) => {
      const a = at.child('limits').child(i);
      const n = str(v, a);
      if (!LIMIT_NAMES.includes(n as LimitName)) a.fail(`unknown limit "${n}" (limits: ${LIMIT_NAMES.join(', ')})`);
      const stages: readonly Stage[] = LIMITS[n as LimitName].stages;
      if (!stages.includes(stage)) a.fail(`${n} is not checked at ${stage} (only at ${stages.join(', ')})`);
      return n as LimitName;
    });
    if (names.length === 0) at.child('limits').fail('name at least one limit');
    return {
      type: 'quota',
      // Synchronous until a limit needs the state store: without quotas.yaml the four quota
      // rules of a message cost neither a promise nor a microtask each.
      run(ctx: EvalContext): CheckResult | Promise<CheckResult> {
        let who: Parameters<typeof resolveQuotas>[1];
        if (ctx.listener.role === 'submission') {
          if (!ctx.account) return { outcome: 'next', note: 'no account yet' };
          who = { account: ctx.account };
        } else if (ctx.listener.role === 'intercept') who = { ip: ctx.ip, cls: ctx.netblock?.cls };
        else return { outcome: 'next', note: `no quotas on ${ctx.listener.role} listeners` };
        const q = resolveQuotas(ctx.data.quotas, who);
        // Nothing limits this subject: a live decision needs no more (explain still lists each limit as unlimited).
        if (q.limits.size === 0 && ctx.mode === 'live') return UNLIMITED_NEXT;
        return enforce(ctx, who.account ? accountSubject(who.account.name) : ipSubject(ctx), q);
      },
    };
    async function enforce(ctx: EvalContext, subject: Subject, q: ResolvedQuotas): Promise<CheckResult> {
      const inputs: Record<string, unknown> = { subject: `${subject.kind === 'a' ? 'account' : 'address'} ${subject.id}`, plan: q.plan ?? 'none' };
      const refuse = (l: ResolvedLimit, detail: string, retryAfterMs?: number): CheckResult => {
        if (ctx.mode === 'live') ctx.env.quotaHit?.(l.name);
        const spec = l.onExceed ?? stageDefault(l.name, ctx.stage);
        const d = spec.detail ?? (retryAfterMs !== undefined ? `(${detail}; try again in ${humanMs(retryAfterMs)})` : `(${detail})`);
        return fromAction(spec, { reject: 'policy_reject', tempfail: 'rate_limited' }, { inputs, sub: l.name, note: `${l.name} ${l.value} from ${l.source}` }, d);
      };
      const rates: Array<{ l: ResolvedLimit; rl: RateLimit }> = [];
      const count = (l: ResolvedLimit): RateLimit => ({ key: keys.quota(subject, l.name), limit: l.value, windowMs: l.windowMs });
      for (const name of names) {
        const l = q.limits.get(name);
        if (!l) {
          inputs[name] = 'unlimited';
          continue;
        }
        if (name === 'recipientsPerMessage') {
          const n = ctx.recipients.length + 1;
          inputs[name] = `${n} of ${l.value}`;
          if (n > l.value) return refuse(l, `at most ${l.value} recipients per message`);
        } else if (name === 'maxMessageSize') {
          const size = ctx.size ?? 0;
          inputs[name] = `${size} of ${l.value} bytes`;
          if (size > l.value) return refuse(l, `at most ${l.value} bytes on this plan`);
        } else if (name === 'concurrentConnections') {
          if ((ctx.stage === 'connect') !== (subject.kind === 'ip')) {
            inputs[name] = ctx.stage === 'connect' ? 'counted per account at MAIL' : 'counted per address at connect';
            continue;
          }
          const open = await ctx.env.store.get(keys.connections(subject), ctx.now);
          inputs[name] = `${open} open of ${l.value}`;
          if (open > l.value) return refuse(l, `at most ${l.value} connections at once`);
        } else if (name === 'messagesPerHour' && ctx.stage === 'mail') {
          // Checked early (nothing counted): the message is counted at end of DATA.
          const r = await ctx.env.store.peekMany([count(l)], 1, ctx.now);
          const res = r.results[0]!;
          inputs[name] = `${res.allowed ? res.count - 1 : res.count} in the last hour of ${l.value}`;
          if (!r.allowed) return refuse(l, `${l.name} ${l.value} reached`, res.retryAfterMs);
        } else rates.push({ l, rl: count(l) });
      }
      if (rates.length > 0) {
        let r = await ctx.env.store.hitMany(rates.map((x) => x.rl), 1, ctx.now);
        const hourly = rates.findIndex((x) => x.l.name === 'recipientsPerHour');
        if (!r.allowed && hourly >= 0 && r.denied === r.results[hourly] && ctx.allowance && ctx.mode === 'live') {
          // Over the hourly limit: containment may allow more (a greeting to the whole address book).
          const extra = await ctx.allowance('recipientsPerHour');
          if (extra > 0) {
            const rl = rates[hourly]!.rl;
            rates[hourly] = { ...rates[hourly]!, rl: { ...rl, limit: rl.limit + extra } };
            inputs.allowance = `recipientsPerHour + ${extra} (containment: known correspondents)`;
            r = await ctx.env.store.hitMany(rates.map((x) => x.rl), 1, ctx.now);
          }
        }
        r.results.forEach((res, i) => {
          const l = rates[i]!.l;
          inputs[l.name] = `${res.count}${res.allowed ? ' with this one' : ''} in the ${WINDOW_TEXT[l.name] ?? 'window'} of ${l.value}`;
        });
        if (!r.allowed) {
          const i = r.results.indexOf(r.denied!);
          const l = rates[i]!.l;
          return refuse(l, `${l.name} ${l.value} reached`, r.denied!.retryAfterMs);
        }
        ctx.charges.push({ limits: rates.map((x) => x.rl), cost: 1, stamp: r.stamp });
      }
      return { outcome: 'next', inputs };
    }
  },
};
