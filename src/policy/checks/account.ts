/**
 * The authenticated account's standing (submission):
 *   account-state     suspended since it authenticated (the account file is
 *                     re-read while sessions are open) → 550 5.7.1
 *   account-network   Account.netblocks binds an account to netblock classes
 *                     or CIDRs: from anywhere else → 550 5.7.1
 */
import type { Check, CheckResult, CheckType, EvalContext } from '../rule';
import { parseCidr, parseIp } from '../ip';

export const accountStateCheck: CheckType = {
  name: 'account-state',
  stages: ['mail', 'rcpt', 'data'],
  keys: [],
  compile: (): Check => ({
    type: 'account-state',
    run(ctx: EvalContext): CheckResult {
      if (!ctx.account) return { outcome: 'next', note: 'no account' };
      const fresh = ctx.env.accounts?.get(ctx.account.name);
      const inputs = { account: ctx.account.name, plan: (fresh ?? ctx.account).plan };
      if (ctx.env.accounts && !fresh) return { outcome: 'reject', reply: 'account_suspended', inputs, note: 'account no longer exists' };
      if ((fresh ?? ctx.account).suspended) return { outcome: 'reject', reply: 'account_suspended', inputs, note: 'account suspended' };
      return { outcome: 'next', inputs };
    },
  }),
};

const words = new Uint32Array(4);

/** Does the client match one of the account's bindings (class names or CIDRs)? */
export function matchesBinding(binding: readonly string[], ip: string, cls: string | undefined): string | undefined {
  for (const b of binding) {
    if (b.includes('/') || b.includes(':') || /^\d+\.\d+\.\d+\.\d+$/.test(b)) {
      const c = parseCidr(b);
      if (typeof c === 'string') continue;
      const kind = parseIp(ip, words);
      if (kind !== c.kind) continue;
      let inside = true;
      for (let bit = 0; bit < c.len && inside; bit++) {
        const w = bit >>> 5;
        const shift = 31 - (bit & 31);
        if (((words[w]! >>> shift) & 1) !== ((c.words[w]! >>> shift) & 1)) inside = false;
      }
      if (inside) return b;
    } else if (b === cls) return b;
  }
  return undefined;
}

export const accountNetworkCheck: CheckType = {
  name: 'account-network',
  stages: ['mail'],
  keys: [],
  compile: (): Check => ({
    type: 'account-network',
    run(ctx: EvalContext): CheckResult {
      const acct = ctx.account;
      if (!acct || acct.netblocks.length === 0) return { outcome: 'next', ...(acct ? { note: 'account not bound to networks' } : {}) };
      const inputs = { account: acct.name, bound: acct.netblocks.join(' '), ip: ctx.ip, class: ctx.netblock?.cls ?? 'none' };
      const m = matchesBinding(acct.netblocks, ctx.ip, ctx.netblock?.cls);
      if (m) return { outcome: 'next', inputs: { ...inputs, matched: m } };
      return { outcome: 'reject', reply: 'account_network_denied', inputs, note: 'client outside the networks bound to the account' };
    },
  }),
};
