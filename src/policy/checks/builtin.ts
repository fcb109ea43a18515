/**
 * The built-in relay gates: what keeps the gateway from ever being an open
 * relay, whatever the policy files say. They run before every rule of
 * their stage, and no rule (not even a permit) can skip them. Relay policy
 * is kept apart from spam policy on purpose (Postfix learned that mixing
 * them surprises operators).
 *
 *   relay.netblock-gate   connect: an intercept client must be inside a
 *                         subscriber netblock, else 554 5.7.1
 *   relay.auth-required   mail: submission only after AUTH
 *   relay.mx-domains      rcpt: an mx listener only takes mail for the
 *                         relayDomains of rules.yaml (none: it takes none)
 */
import { domainOf } from '../../envelope';
import type { Check, CheckResult, EvalContext } from '../rule';

export const netblockGate: Check = {
  type: 'netblock-gate',
  run(ctx: EvalContext): CheckResult {
    const nb = ctx.netblock;
    const inputs = { ip: ctx.ip, netblock: nb ? `${nb.cidr} class ${nb.cls} (${nb.source})` : 'none' };
    if (ctx.listener.role === 'intercept' && !nb) {
      return { outcome: 'reject', reply: 'relay_denied', inputs, note: 'intercept client outside every subscriber netblock' };
    }
    return { outcome: 'next', inputs };
  },
};

export const authRequired: Check = {
  type: 'auth-required',
  run(ctx: EvalContext): CheckResult {
    if (ctx.listener.role === 'submission' && !ctx.account) return { outcome: 'reject', reply: 'auth_required', note: 'submission without AUTH' };
    return { outcome: 'next', ...(ctx.account ? { inputs: { account: ctx.account.name } } : {}) };
  },
};

export const mxDomains: Check = {
  type: 'mx-domains',
  run(ctx: EvalContext): CheckResult {
    if (ctx.listener.role !== 'mx') return { outcome: 'next' };
    const domain = domainOf(ctx.rcpt ?? '');
    const m = ctx.data.relayDomains.match(domain);
    if (!m) return { outcome: 'reject', reply: 'recipient_relay_denied', inputs: { domain }, note: 'not one of relayDomains' };
    return { outcome: 'next', inputs: { domain, relayDomain: m.entry } };
  },
};
