/**
 * The built-in relay policy that keeps the gateway from ever being an open
 * relay, independent of the configurable spam policy (Postfix keeps relay
 * policy apart from spam policy for the same reason):
 * - intercept: the client IP must be inside a subscriber netblock;
 * - submission: the authenticated account may only use its own senders,
 *   in the envelope and in the header From;
 * - mx: only for relay domains (a later role).
 * Netblocks are read from policies/netblocks.yaml.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import ipaddr from 'ipaddr.js';
import YAML from 'yaml';
import { At, list, obj, str } from '../config/validate';
import type { Verdict } from '../envelope';
import { ownsAddress } from '../accounts/store';
import { ACCEPT, type ConnectDecision, type ConnectFacts, type DataFacts, type PolicyHooks, type TransactionFacts } from './types';

interface Block {
  range: [ipaddr.IPv4 | ipaddr.IPv6, number];
  cls: string;
}

export function loadNetblocks(file: string): Block[] {
  const at = new At(file);
  const top = obj(YAML.parse(readFileSync(file, 'utf8')) ?? {}, at, ['netblocks']);
  return list(top.netblocks, at.child('netblocks')).map((item, i) => {
    const a = at.child('netblocks').child(i);
    const o = obj(item, a, ['cidr', 'class', 'comment']);
    const cidr = str(o.cidr, a.child('cidr'));
    let range!: [ipaddr.IPv4 | ipaddr.IPv6, number];
    try {
      range = ipaddr.parseCIDR(cidr);
    } catch {
      a.child('cidr').fail(`not a CIDR: "${cidr}"`);
    }
    return { range, cls: str(o.class, a.child('class'), 'subscriber') };
  });
}

export function normaliseIp(ip: string): ipaddr.IPv4 | ipaddr.IPv6 {
  const addr = ipaddr.parse(ip);
  // IPv4-mapped IPv6 (::ffff:a.b.c.d) is the IPv4 client it stands for.
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) return (addr as ipaddr.IPv6).toIPv4Address();
  return addr;
}

export class BasicPolicy implements PolicyHooks {
  private readonly blocks: Block[];
  constructor(policyDir: string) {
    this.blocks = loadNetblocks(path.join(policyDir, 'netblocks.yaml'));
  }

  classOf(ip: string): string | undefined {
    let addr: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      addr = normaliseIp(ip);
    } catch {
      return undefined;
    }
    let best: Block | undefined;
    for (const b of this.blocks) {
      if (addr.kind() === b.range[0].kind() && addr.match(b.range) && (!best || b.range[1] > best.range[1])) best = b;
    }
    return best?.cls;
  }

  async connect(f: ConnectFacts): Promise<ConnectDecision> {
    const cls = this.classOf(f.ip);
    if (f.listener.role === 'intercept' && cls === undefined) {
      return { verdict: { action: 'reject', stage: 'connect', rule: 'relay.netblock-gate', reply: 'relay_denied' } };
    }
    return { verdict: ACCEPT('connect', 'relay.netblock-gate'), netblockClass: cls };
  }

  async mail(f: TransactionFacts): Promise<Verdict> {
    if (f.client.role === 'submission') {
      if (!f.account) return { action: 'reject', stage: 'mail', rule: 'relay.auth-required', reply: 'auth_required' };
      if (f.mailFrom !== '' && !ownsAddress(f.account, f.mailFrom)) {
        return { action: 'reject', stage: 'mail', rule: 'identity.envelope-sender', reply: 'sender_not_owned' };
      }
    }
    return ACCEPT('mail', 'identity.envelope-sender');
  }

  async rcpt(): Promise<Verdict> {
    return ACCEPT('rcpt', 'relay.permit-authorised');
  }

  async data(f: DataFacts): Promise<Verdict> {
    if (f.client.role === 'submission' && f.account) {
      for (const from of f.headerFrom) {
        if (!ownsAddress(f.account, from)) return { action: 'reject', stage: 'data', rule: 'identity.header-from', reply: 'header_from_not_owned' };
      }
    }
    return ACCEPT('data', 'identity.header-from');
  }
}
