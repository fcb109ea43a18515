/**
 * Who may send a PROXY protocol header: a listener's `proxyFrom`, the load
 * balancers' addresses or networks. A peer that matches must start with a
 * header and is believed; nobody else is (src/fleet/proxy-protocol.ts).
 *
 * Believing a header means letting its sender choose the client address the
 * policies see, and on the intercept listener the address *is* the relay
 * permission. So the list is parsed strictly, once, at config load
 * (ipaddr.js): addresses and CIDRs only, written in the canonical dotted or
 * colon form. Refused, naming the file and key: `*`, any /0 (or all of
 * IPv4 written as ::ffff:0:0/96), host names (never resolved: a name's
 * address can change under the trust), shorthand IPv4 such as `10.1` or
 * `0x0a.0.0.1`, zone ids, and networks with host bits set. IPv4-mapped
 * IPv6, as entry or as peer (a dual-stack socket reports an IPv4 peer as
 * ::ffff:a.b.c.d), is compared as the IPv4 address it stands for.
 *
 * Talks to: nothing. Trusts: nothing.
 */
import ipaddr from 'ipaddr.js';
import { list, str, type At } from '../config/validate';

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** An IPv4-mapped IPv6 address or network as its IPv4 form; others unchanged. */
function unmap(addr: ipaddr.IPv4 | ipaddr.IPv6, len: number): Range {
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress() && len >= 96) return [(addr as ipaddr.IPv6).toIPv4Address(), len - 96];
  return [addr, len];
}

function parseAddress(text: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text);
  // ipaddr.js also reads zone ids ("fe80::1%eth0"): a zone is not an address of the peer.
  if (text.includes(':') && !text.includes('%') && ipaddr.IPv6.isValid(text)) return ipaddr.IPv6.parse(text);
  return undefined;
}

/** One entry → its range, or the reason it is refused. */
export function parseProxyEntry(text: string): Range | string {
  const t = text.trim();
  if (t === '*' || t === 'any' || t === 'all') return `"${text}" would believe a PROXY header from anyone (anyone could then claim any client address): list the balancers' addresses`;
  const slash = t.indexOf('/');
  const addrText = slash < 0 ? t : t.slice(0, slash);
  const addr = parseAddress(addrText);
  if (!addr) {
    if (/[a-z]/i.test(addrText) && !addrText.includes(':')) return `"${text}" is not an address or CIDR (host names are not resolved here: write the balancer's address)`;
    return `"${text}" is not an address or CIDR (write e.g. 10.0.1.2, 10.0.1.0/28 or 2001:db8::/64)`;
  }
  const max = addr.kind() === 'ipv4' ? 32 : 128;
  let len = max;
  if (slash >= 0) {
    const p = t.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) return `"${text}" is not a CIDR: the prefix length must be 0-${max}`;
    len = Number(p);
  }
  const [a, l] = unmap(addr, len);
  if (l === 0) {
    return `"${text}" would believe a PROXY header from every ${a.kind() === 'ipv4' ? 'IPv4' : 'IPv6'} address: list the balancers' addresses`;
  }
  const network = ipaddr[a.kind() === 'ipv4' ? 'IPv4' : 'IPv6'].networkAddressFromCIDR(`${a.toString()}/${l}`);
  if (network.toString() !== a.toString()) return `"${text}" has host bits set (the network is ${network.toString()}/${l})`;
  return [a, l];
}

/** `proxyFrom` of one listener → canonical CIDR texts ("10.0.1.2/32"). */
export function parseProxyFrom(v: unknown, at: At): string[] {
  return list(v, at).map((item, i) => {
    const r = parseProxyEntry(str(item, at.child(i)));
    if (typeof r === 'string') at.child(i).fail(r);
    return `${r[0].toString()}/${r[1]}`;
  });
}

/** A test for peers, from `parseProxyFrom`'s output: true only for a listed balancer. */
export function proxyTrust(cidrs: readonly string[]): (peer: string | undefined) => boolean {
  const ranges = cidrs.map((c) => unmap(...ipaddr.parseCIDR(c)));
  return (peer) => {
    if (!peer || ranges.length === 0) return false;
    const addr = parseAddress(peer);
    if (!addr) return false;
    const [a] = unmap(addr, addr.kind() === 'ipv4' ? 32 : 128);
    return ranges.some(([net, len]) => net.kind() === a.kind() && a.match(net, len));
  };
}
