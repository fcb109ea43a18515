/**
 * auth-failures: brute-force protection for SMTP AUTH, per client address
 * and per account name (limits in quotas.yaml authFailures). Asked BEFORE
 * the password is checked, so a locked-out client never costs a password
 * hash: a lockout refuses with 454 4.7.0; below it, after `delayAfter`
 * failures in the window every attempt waits delay·2^(failures-delayAfter)
 * (capped at maxDelay) before its password is looked at. Failures are
 * counted AFTER the check (afterAuth); reaching `lockoutAfter` failures in
 * the window locks the subject out for `lockout`.
 *
 *
 * The account's limits penalise the source, not the victim (as Dovecot
 * does, whose auth penalty is per client address): an address that logged
 * in to the account successfully within perAccount.knownAddressesFor is
 * known, and the account's delay and lockout do not apply to it (its own
 * per-address limits still do). So failures from addresses that never
 * logged in, however many, lock out only such addresses: the account's
 * owner keeps working from where they log in, while a distributed guesser
 * is stopped. Failures from anywhere count towards the account's window.
 *
 * headroom(): how many more failures the address and the account can take
 * before this check would delay or lock out (min of delayAfter and
 * lockoutAfter, less the failures in the window; 0 when locked out). The
 * SMTP session uses it to let AUTH attempts from a clean address run in
 * parallel (src/smtp/session.ts onAuth).
 */
import { keys, type Subject } from '../../state/keys';
import type { AuthFailureLimits } from '../quotas';
import type { Check, CheckResult, CheckType, EvalContext } from '../rule';
import { accountSubject, humanMs, ipSubject } from './common';

function subjects(ctx: EvalContext): Array<{ s: Subject; limits: AuthFailureLimits; label: string }> {
  const af = ctx.data.quotas.authFailures;
  const out = [{ s: ipSubject(ctx), limits: af.perIp, label: 'address' }];
  if (ctx.user) out.push({ s: accountSubject(ctx.user), limits: af.perAccount, label: 'account' });
  return out;
}

/** The subjects whose limits apply to this attempt: the account's not from an address known for it. */
async function applicable(ctx: EvalContext): Promise<{ list: ReturnType<typeof subjects>; known: boolean }> {
  const all = subjects(ctx);
  const known = await isKnownAddress(ctx);
  return { list: known ? all.filter((x) => x.label !== 'account') : all, known };
}

async function isKnownAddress(ctx: EvalContext): Promise<boolean> {
  const knownFor = ctx.data.quotas.authFailures.perAccount.knownForMs;
  if (!ctx.user || knownFor <= 0) return false;
  return (await ctx.env.store.get(keys.knownAddress(accountSubject(ctx.user), ipSubject(ctx)), ctx.now)) > 0;
}

export const authFailuresCheck: CheckType = {
  name: 'auth-failures',
  stages: ['auth'],
  keys: [],
  compile(): Check {
    return {
      type: 'auth-failures',
      async run(ctx: EvalContext): Promise<CheckResult> {
        const inputs: Record<string, unknown> = {};
        let delay = 0;
        const { list, known } = await applicable(ctx);
        if (known) inputs.knownAddress = 'logged in to this account before: the account limits do not apply';
        for (const { s, limits, label } of list) {
          const locked = await ctx.env.store.ttl(keys.authLock(s), ctx.now);
          const failures = await ctx.env.store.count(keys.authFailures(s), limits.windowMs, ctx.now);
          inputs[label] = `${s.id}: ${failures} failures in ${humanMs(limits.windowMs)}${locked ? `, locked for ${humanMs(locked)}` : ''}`;
          if (locked > 0) {
            return { outcome: 'tempfail', reply: 'auth_locked_out', detail: `(try again in ${humanMs(locked)})`, sub: label, inputs };
          }
          if (limits.delayAfter > 0 && failures >= limits.delayAfter) {
            delay = Math.max(delay, Math.min(limits.maxDelayMs, limits.delayMs * 2 ** (failures - limits.delayAfter)));
          }
        }
        if (delay > 0) {
          inputs.delay = humanMs(delay);
          if (ctx.mode === 'live') await ctx.env.sleep(delay);
        }
        return { outcome: 'next', inputs };
      },
      async headroom(ctx: EvalContext): Promise<number> {
        let room = Infinity;
        for (const { s, limits } of (await applicable(ctx)).list) {
          if ((await ctx.env.store.ttl(keys.authLock(s), ctx.now)) > 0) return 0;
          const at = Math.min(limits.delayAfter > 0 ? limits.delayAfter : Infinity, limits.lockoutAfter > 0 ? limits.lockoutAfter : Infinity);
          if (at === Infinity) continue;
          const failures = await ctx.env.store.count(keys.authFailures(s), limits.windowMs, ctx.now);
          room = Math.min(room, Math.max(0, at - failures));
        }
        return room;
      },
      async afterAuth(ctx: EvalContext, ok: boolean): Promise<void> {
        if (ok) {
          const knownFor = ctx.data.quotas.authFailures.perAccount.knownForMs;
          if (ctx.user && knownFor > 0) await ctx.env.store.incr(keys.knownAddress(accountSubject(ctx.user), ipSubject(ctx)), 1, knownFor, ctx.now);
          return;
        }
        for (const { s, limits } of subjects(ctx)) {
          const n = await ctx.env.store.record(keys.authFailures(s), limits.windowMs, 1, ctx.now);
          if (limits.lockoutAfter > 0 && n >= limits.lockoutAfter && (await ctx.env.store.get(keys.authLock(s), ctx.now)) === 0) {
            await ctx.env.store.incr(keys.authLock(s), 1, limits.lockoutMs, ctx.now);
          }
        }
      },
    };
  },
};
