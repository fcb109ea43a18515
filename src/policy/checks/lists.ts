/**
 * Local block/allow lists (policies/lists/*.txt, format in ../lists.ts):
 *   client-list      the client address against an IP/CIDR list
 *   sender-list      the envelope sender (and at DATA also the header From
 *                    addresses) against an address/domain list
 *   recipient-list   the recipient against an address/domain list
 * Options: file (relative to policies/), onMatch: permit | reject |
 * tempfail | hold | { action, reply, detail }.
 */
import path from 'node:path';
import { oneOf, str, type At, type Obj } from '../../config/validate';
import type { Stage } from '../../envelope';
import { parseAction, type ActionSpec } from '../action';
import { AddressList, IpList, type ListMatch } from '../lists';
import type { Check, CheckResult, CheckType, EvalContext, PolicyData } from '../rule';
import { fromAction, POLICY_REPLIES } from './common';

type OnMatch = { permit: true } | { permit: false; spec: ActionSpec };

function onMatch(v: unknown, at: At): OnMatch {
  if (v === 'permit') return { permit: true };
  if (v === undefined) at.fail('is required: permit, reject, tempfail, hold or { action, reply, detail }');
  return { permit: false, spec: parseAction(v, at) };
}

function listFile(o: Obj, at: At, data: PolicyData): string {
  return path.resolve(data.dir, str(o.file, at.child('file')));
}

function decide(m: OnMatch, match: ListMatch | undefined, inputs: Record<string, unknown>): CheckResult {
  if (!match) {
    inputs.match = 'no match';
    return { outcome: 'next', inputs };
  }
  inputs.match = `${match.entry} (${match.source})`;
  if (m.permit) return { outcome: 'permit', inputs };
  return fromAction(m.spec, POLICY_REPLIES, { inputs, note: `listed in ${match.source}` });
}

export const clientList: CheckType = {
  name: 'client-list',
  stages: ['connect', 'auth', 'mail', 'rcpt', 'data'],
  keys: ['file', 'onMatch'],
  compile(o, at, data): Check {
    const list = IpList.load(listFile(o, at, data), at.child('file'));
    const m = onMatch(o.onMatch, at.child('onMatch'));
    const name = path.basename(list.file);
    return {
      type: 'client-list',
      run: (ctx: EvalContext) => decide(m, list.match(ctx.ip), { ip: ctx.ip, list: name }),
    };
  },
};

export const senderList: CheckType = {
  name: 'sender-list',
  stages: ['mail', 'rcpt', 'data'],
  keys: ['file', 'onMatch', 'headerFrom'],
  compile(o, at, data, stage: Stage): Check {
    const list = AddressList.load(listFile(o, at, data), at.child('file'));
    const m = onMatch(o.onMatch, at.child('onMatch'));
    const withHeader = oneOf(o.headerFrom, at.child('headerFrom'), ['check', 'ignore'] as const, 'check') === 'check';
    const name = path.basename(list.file);
    return {
      type: 'sender-list',
      run(ctx: EvalContext): CheckResult {
        const from = ctx.mailFrom ?? '';
        const inputs: Record<string, unknown> = { from: from || '<>', list: name };
        const envMatch = list.match(from);
        if (envMatch || stage !== 'data' || !withHeader) return decide(m, envMatch, inputs);
        for (const h of ctx.headerFrom ?? []) {
          const hm = list.match(h);
          if (hm) {
            inputs.headerFrom = h;
            return decide(m, hm, inputs);
          }
        }
        return decide(m, undefined, inputs);
      },
    };
  },
};

export const recipientList: CheckType = {
  name: 'recipient-list',
  stages: ['rcpt'],
  keys: ['file', 'onMatch'],
  compile(o, at, data): Check {
    const list = AddressList.load(listFile(o, at, data), at.child('file'));
    const m = onMatch(o.onMatch, at.child('onMatch'));
    const name = path.basename(list.file);
    return {
      type: 'recipient-list',
      run: (ctx: EvalContext) => decide(m, list.match(ctx.rcpt ?? ''), { rcpt: ctx.rcpt, list: name }),
    };
  },
};
