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
 *   relay.address-literal rcpt: a recipient domain that is an address
 *                         literal (user@[192.0.2.1], user@[IPv6:...]) is
 *                         refused on every listener, 550 5.1.2: the relay
 *                         never delivers to one (src/relay/mx.ts), and
 *                         handing it to a relayhost or route would have the
 *                         upstream connect to whatever address the client
 *                         chose, past every DNS-based check
 *   relay.mx-domains      rcpt: an mx listener only takes mail for the
 *                         relayDomains of rules.yaml (none: it takes none)
 */
import { domainOf } from '../../envelope';
import { NEXT, type Check, type CheckResult, type EvalContext } from '../rule';

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

export const addressLiteral: Check = {
  type: 'address-literal',
  run(ctx: EvalContext): CheckResult {
    // The session gives the domain as parsed ("[IPv6:" in one case); Postfix's policy
    // service and milter give it as the client wrote it: the "[" after the last "@" is
    // what both have in common. No string is made for the ordinary recipient.
    const rcpt = ctx.rcpt ?? '';
    const at = rcpt.lastIndexOf('@');
    if (at < 0 || rcpt.charCodeAt(at + 1) !== 0x5b /* [ */) return NEXT;
    return { outcome: 'reject', reply: 'literal_recipient', inputs: { domain: rcpt.slice(at + 1) }, note: 'the recipient domain is an address literal' };
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
