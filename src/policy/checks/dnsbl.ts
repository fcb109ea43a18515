/**
 * dnsbl: the client address against the zones of dnsbl.yaml (all of them,
 * or `zones: [name, ...]`), queried in parallel. Each listed return code has
 * a meaning (sbl, xbl, pbl, ...) and each meaning an action per listener;
 * a failed lookup takes the zone's onError action (fail-open: accept, or
 * fail-closed: tempfail 451 4.7.1). When several zones or meanings answer,
 * the strongest action wins (reject > tempfail > hold > accept); between
 * equals, the first in configuration order (zones as listed, codes in the
 * order of the zone's table), never the order DNS answered in. The verdict's
 * rule id says which: "dnsbl:zen.xbl", "dnsbl:zen.error". A listing's reply
 * names the zone: "554 5.7.1 Service unavailable; client host [ip] listed at
 * zen.spamhaus.org (xbl)", then the configured detail, if any, after "; ".
 */
import { list, str } from '../../config/validate';
import type { VerdictAction } from '../../envelope';
import { fillDetail, type ActionSpec } from '../action';
import { actionFor, meaningOf, type DnsblZone, type ZoneAnswer } from '../dnsbl';
import type { Check, CheckResult, CheckType, EvalContext } from '../rule';
import { fromAction, humanMs } from './common';

const SEVERITY: Record<VerdictAction, number> = { accept: 0, hold: 1, tempfail: 2, reject: 3 };

function describe(a: ZoneAnswer, zone: DnsblZone): string {
  const how = a.cached ? 'cached' : `${a.ms} ms`;
  switch (a.result) {
    case 'listed':
      return `${a.codes.map((c) => `${c} (${meaningOf(zone, c)})`).join(', ')}${a.ttlMs !== undefined ? ` ttl ${humanMs(a.ttlMs)}` : ''} [${how}]`;
    case 'clean':
      return `not listed [${how}]`;
    case 'skipped':
      return `not queried: ${a.error}`;
    default:
      return `${a.result}: ${a.error ?? ''} [${how}]`;
  }
}

export const dnsblCheck: CheckType = {
  name: 'dnsbl',
  stages: ['connect', 'mail', 'rcpt', 'data'],
  keys: ['zones'],
  compile(o, at, data): Check {
    const all = data.dnsbl.zones;
    let zones: readonly DnsblZone[] = all;
    if (o.zones !== undefined) {
      zones = list(o.zones, at.child('zones')).map((z, i) => {
        const name = str(z, at.child('zones').child(i));
        const found = all.find((x) => x.name === name);
        if (!found) return at.child('zones').child(i).fail(`no zone named "${name}" in dnsbl.yaml (zones: ${all.map((x) => x.name).join(', ') || 'none'})`);
        return found;
      });
    }
    return {
      type: 'dnsbl',
      async run(ctx: EvalContext): Promise<CheckResult> {
        if (zones.length === 0) return { outcome: 'next', note: 'no zones configured in dnsbl.yaml' };
        const answers = await ctx.env.dnsbl.check(ctx.ip, zones);
        const inputs: Record<string, unknown> = { query: answers[0]?.query.replace(`.${zones[0]!.zone}`, '') };
        let best: { spec: ActionSpec; sub: string; zone: DnsblZone; code?: string; meaning: string } | undefined;
        const consider = (spec: ActionSpec, zone: DnsblZone, meaning: string, code?: string) => {
          if (!best || SEVERITY[spec.action] > SEVERITY[best.spec.action]) best = { spec, sub: `${zone.name}.${meaning}`, zone, code, meaning };
        };
        answers.forEach((a, i) => {
          const zone = zones[i]!;
          inputs[zone.name] = describe(a, zone);
          if (a.result === 'listed') {
            a.codes.forEach((code) => {
              const meaning = meaningOf(zone, code);
              consider(actionFor(zone, meaning, ctx.listener.name, ctx.listener.role), zone, meaning, code);
            });
          } else if (a.result === 'error' || a.result === 'timeout') {
            const spec = zone.onError.get(ctx.listener.name, ctx.listener.role) ?? { action: 'accept' };
            consider(spec, zone, 'error');
          }
        });
        if (!best || best.spec.action === 'accept') {
          const listed = answers.filter((a) => a.result === 'listed').map((a) => a.zone);
          return { outcome: 'next', inputs, ...(listed.length ? { note: `listed in ${listed.join(', ')}: ignored on this listener` } : {}) };
        }
        const b = best as { spec: ActionSpec; sub: string; zone: DnsblZone; code?: string; meaning: string };
        const custom = fillDetail(b.spec.detail, { ip: ctx.ip, zone: b.zone.zone, code: b.code, meaning: b.meaning });
        if (b.meaning === 'error') return fromAction(b.spec, { reject: 'policy_reject', tempfail: 'dnsbl_tempfail' }, { inputs, sub: b.sub }, custom);
        const listed = `[${ctx.ip}] listed at ${b.zone.zone} (${b.meaning})`;
        return fromAction(b.spec, { reject: 'dnsbl_listed', tempfail: 'policy_tempfail' }, { inputs, sub: b.sub }, custom ? `${listed}; ${custom}` : listed);
      },
    };
  },
};
