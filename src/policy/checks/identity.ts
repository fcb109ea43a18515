/**
 * Sender identity (identity.yaml, see ../identity.ts):
 *   envelope-sender   MAIL FROM: submission → the account's own address or
 *                     domain (per plan); intercept → the domains configured
 *                     for the client's netblock or class, if any
 *   header-from       end of DATA: every header From address, the same way
 *                     (or, per plan, the envelope sender's domain)
 */
import { domainOf } from '../../envelope';
import { ownsAddress } from '../../accounts/store';
import { interceptIdentity, submissionIdentity } from '../identity';
import type { Check, CheckResult, CheckType, EvalContext } from '../rule';
import { fromAction } from './common';

function envelope(ctx: EvalContext): CheckResult {
  const from = ctx.mailFrom ?? '';
  if (ctx.listener.role === 'submission') {
    if (!ctx.account) return { outcome: 'next', note: 'no account' };
    const id = submissionIdentity(ctx.data.identity, ctx.account.plan);
    const inputs = { from: from || '<>', account: ctx.account.name, senders: ctx.account.senders.join(' ') || ctx.account.name, rule: id.source };
    if (from === '') {
      if (id.nullSender === 'allow') return { outcome: 'next', inputs };
      return fromAction(id.onMismatch, { reject: 'sender_not_owned', tempfail: 'policy_tempfail' }, { inputs, note: 'null sender not allowed' });
    }
    if (id.envelopeSender === 'any' || ownsAddress(ctx.account, from)) return { outcome: 'next', inputs };
    return fromAction(id.onMismatch, { reject: 'sender_not_owned', tempfail: 'policy_tempfail' }, { inputs, note: 'sender not owned by the account' });
  }
  if (ctx.listener.role === 'intercept') {
    const id = interceptIdentity(ctx.data.identity, ctx.ip, ctx.netblock?.cls);
    if (!id || id.envelopeSender === 'any') return { outcome: 'next', note: 'no sender domains configured for this client' };
    const inputs = { from: from || '<>', rule: id.source };
    if (from === '') {
      if (id.nullSender === 'allow') return { outcome: 'next', inputs };
      return fromAction(id.onMismatch, { reject: 'sender_not_permitted', tempfail: 'policy_tempfail' }, { inputs, note: 'null sender not allowed' });
    }
    const m = id.domains.match(domainOf(from));
    if (m) return { outcome: 'next', inputs: { ...inputs, domain: m.entry } };
    return fromAction(id.onMismatch, { reject: 'sender_not_permitted', tempfail: 'policy_tempfail' }, { inputs, note: 'sender domain not permitted for this network' });
  }
  return { outcome: 'next' };
}

function headerFrom(ctx: EvalContext): CheckResult {
  const addrs = ctx.headerFrom ?? [];
  if (ctx.listener.role === 'submission') {
    if (!ctx.account) return { outcome: 'next', note: 'no account' };
    const id = submissionIdentity(ctx.data.identity, ctx.account.plan);
    const inputs = { headerFrom: addrs.join(' ') || '(none)', account: ctx.account.name, rule: id.source, mode: id.headerFrom };
    if (id.headerFrom === 'any') return { outcome: 'next', inputs };
    const envDomain = domainOf(ctx.mailFrom ?? '');
    for (const a of addrs) {
      const ok = id.headerFrom === 'owned' ? ownsAddress(ctx.account, a) : domainOf(a) === envDomain && envDomain !== '';
      if (!ok) return fromAction(id.onMismatch, { reject: 'header_from_not_owned', tempfail: 'policy_tempfail' }, { inputs, note: `header From ${a} not permitted` });
    }
    return { outcome: 'next', inputs };
  }
  if (ctx.listener.role === 'intercept') {
    const id = interceptIdentity(ctx.data.identity, ctx.ip, ctx.netblock?.cls);
    if (!id || id.headerFrom === 'any') return { outcome: 'next', note: 'no sender domains configured for this client' };
    const inputs = { headerFrom: addrs.join(' ') || '(none)', rule: id.source };
    for (const a of addrs) {
      if (!id.domains.match(domainOf(a))) {
        return fromAction(id.onMismatch, { reject: 'header_from_not_permitted', tempfail: 'policy_tempfail' }, { inputs, note: `header From ${a} not permitted for this network` });
      }
    }
    return { outcome: 'next', inputs };
  }
  return { outcome: 'next' };
}

export const envelopeSenderCheck: CheckType = {
  name: 'envelope-sender',
  stages: ['mail'],
  keys: [],
  compile: (): Check => ({ type: 'envelope-sender', run: envelope }),
};

export const headerFromCheck: CheckType = {
  name: 'header-from',
  stages: ['data'],
  keys: [],
  compile: (): Check => ({ type: 'header-from', run: headerFrom }),
};
