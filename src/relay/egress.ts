/**
 * Egress pools: named sets of source addresses, each with its own EHLO name,
 * so one subscriber class's reputation (a residential spam run) does not
 * become another's (business customers). Which pool a message leaves from
 * is decided once, at acceptance, from who sent it (account plan, netblock
 * class) and recorded in its envelope, so every attempt — also after a
 * restart — leaves from the same pool. A message that was held and then
 * released leaves from the quarantine pool when one is configured, and so
 * does, from acceptance on, a message containment found suspicious (its
 * data verdict containment.quarantine: a score at the plan's
 * responses.quarantine, under every response).
 */
import { isIP } from 'node:net';
import { At, int, mapOf, obj, optStr, str, strList } from '../config/validate';

export interface EgressPool {
  readonly name: string;
  /** Source addresses, one family; sessions are opened round-robin over them. */
  readonly addresses: readonly string[];
  readonly heloName: string;
  /** Sessions from this pool to one destination at once (else relay.concurrencyPerDestination). */
  readonly maxConnectionsPerDestination?: number;
}

export interface PoolSelection {
  /** Account plan (submission) → pool; checked first. */
  readonly byPlan: ReadonlyMap<string, string>;
  /** Netblock class of the client address → pool. */
  readonly byClass: ReadonlyMap<string, string>;
  /** Pool for everyone else; absent: relay.sourceAddress / relay.heloName. */
  readonly default?: string;
  /** Pool for a message released from hold (containment, policy hold) or accepted as suspicious (containment.quarantine). */
  readonly quarantine?: string;
}

/** Which pool, and the rule that chose it (logged; every decision names its rule). */
export interface EgressChoice {
  readonly pool: string;
  readonly rule: string;
}

export function parseEgressPools(v: unknown, at: At): Map<string, EgressPool> {
  const pools = new Map<string, EgressPool>();
  const raw = mapOf(v, at, 'pool name → pool');
  for (const [name, p] of Object.entries(raw)) {
    const pAt = at.entry(name, 'pool', { doc: 'one egress pool: source addresses and the EHLO name they use', default: '—' });
    const o = obj(p, pAt, ['addresses', 'heloName', 'maxConnectionsPerDestination']);
    const aAt = pAt.child('addresses', { doc: 'local IP addresses outbound sessions of this pool bind to, used round-robin (one family)' });
    const addresses = strList(o.addresses, aAt);
    if (addresses.length === 0) aAt.fail('needs at least one address');
    addresses.forEach((a, i) => {
      if (isIP(a) === 0) aAt.child(i).fail(`not an IP address: ${JSON.stringify(a)}`);
      if (isIP(a) !== isIP(addresses[0])) aAt.child(i).fail(`mixes IPv4 and IPv6 (${addresses[0]} and ${a}); make one pool per family`);
    });
    const heloName = str(o.heloName, pAt.child('heloName', { doc: 'EHLO name of this pool (its addresses\' PTR name)' }));
    const max = o.maxConnectionsPerDestination;
    pools.set(name, {
      name,
      addresses,
      heloName,
      ...(max === undefined ? {} : { maxConnectionsPerDestination: int(max, pAt.child('maxConnectionsPerDestination', { doc: 'sessions of this pool to one destination at once', default: 'relay.concurrencyPerDestination' }), undefined, 1) }),
    });
  }
  return pools;
}

export function parsePoolSelection(v: unknown, at: At, pools: ReadonlyMap<string, EgressPool>): PoolSelection | undefined {
  if (v === undefined || v === null) return undefined;
  const o = obj(v, at, ['byPlan', 'byClass', 'default', 'quarantine']);
  const known = (name: string, a: At): string => {
    if (!pools.has(name)) a.fail(`unknown pool ${JSON.stringify(name)} (relay.pools has: ${[...pools.keys()].join(', ') || 'none'})`);
    return name;
  };
  const table = (key: 'byPlan' | 'byClass', what: string, doc: string): Map<string, string> => {
    const m = new Map<string, string>();
    const tAt = at.child(key, { doc });
    const raw = mapOf(o[key], tAt, `${what} → pool`);
    for (const [k, name] of Object.entries(raw)) {
      const eAt = tAt.entry(k, what, { doc: `pool for this ${what}`, default: '—' });
      m.set(k, known(str(name, eAt), eAt));
    }
    return m;
  };
  const byPlan = table('byPlan', 'plan', 'account plan (submission, accounts file) → pool; checked before byClass');
  const byClass = table('byClass', 'class', 'netblock class of the client address (policies/netblocks.yaml) → pool');
  const dflt = optStr(o.default, at.child('default', { doc: 'pool for mail no byPlan/byClass entry matches', default: 'relay.sourceAddress and relay.heloName' }));
  const quarantine = optStr(o.quarantine, at.child('quarantine', { doc: 'pool for mail released from hold (containment or policy) and for mail containment accepted as suspicious (containment.yaml responses.quarantine)', default: 'the pool chosen at acceptance' }));
  return {
    byPlan,
    byClass,
    ...(dflt === undefined ? {} : { default: known(dflt, at.child('default')) }),
    ...(quarantine === undefined ? {} : { quarantine: known(quarantine, at.child('quarantine')) }),
  };
}

/**
 * The pool a newly accepted message leaves from; undefined: no selection
 * configured or nothing matched. `quarantinedBy`: the rule that found the
 * sender suspicious (containment.quarantine), which wins over plan and class.
 */
export function selectEgressPool(sel: PoolSelection | undefined, sender: { plan?: string; netblockClass?: string; quarantinedBy?: string }): EgressChoice | undefined {
  if (!sel) return undefined;
  if (sender.quarantinedBy !== undefined && sel.quarantine) return { pool: sel.quarantine, rule: `relay.poolSelection.quarantine (${sender.quarantinedBy})` };
  const byPlan = sender.plan === undefined ? undefined : sel.byPlan.get(sender.plan);
  if (byPlan) return { pool: byPlan, rule: `relay.poolSelection.byPlan.${sender.plan}` };
  const byClass = sender.netblockClass === undefined ? undefined : sel.byClass.get(sender.netblockClass);
  if (byClass) return { pool: byClass, rule: `relay.poolSelection.byClass.${sender.netblockClass}` };
  if (sel.default) return { pool: sel.default, rule: 'relay.poolSelection.default' };
  return undefined;
}
