/**
 * MX resolution: turns a recipient domain into the ordered list of hosts
 * (and their addresses) that mail for it should be tried at.
 *
 * Talks to: the DNS servers of the relay config, through node:dns Resolver
 * (own servers incl. "127.0.0.1:PORT", timeout, tries). Trusts: nothing it
 * reads; every answer is checked for shape.
 *
 * Rules (RFC 5321 §5.1, RFC 7505):
 *  - MX records sorted by preference, random order among equal preference;
 *  - no MX (NODATA, or NXDOMAIN for MX) but A/AAAA exist → implicit MX, the
 *    domain itself at preference 0;
 *  - null MX (a single MX whose exchange is "" / ".") → permanent, 5.1.10;
 *  - NXDOMAIN → permanent, 5.1.2; no address for the domain nor for any MX
 *    host → permanent, 5.4.4;
 *  - DNS timeout / SERVFAIL / refused / anything else → temporary, 4.4.3.
 * Results are values (MxResult, HostResult), never exceptions.
 *
 * Caching: resolveMx gives no TTL, so MX answers are kept a short fixed time
 * (60 s by default); A/AAAA answers use their own TTL (resolveN with
 * {ttl:true}, capped at an hour); negative answers (NXDOMAIN/NODATA) are kept
 * 30 s; temporary failures are never cached. Concurrent lookups of the same
 * name share one query.
 */
import { isIP, type LookupFunction } from 'node:net';
import { Resolver } from 'node:dns/promises';

/** The relay's resolver settings (relay.dns; MTA-STS and TLS-RPT ask the same servers). */
export interface DnsConfig {
  servers: string[];
  timeoutMs: number;
  tries: number;
}

export interface MxHost {
  /** MX exchange name (or the domain itself for an implicit MX). */
  readonly name: string;
  readonly preference: number;
  /** IPv4 addresses first, then IPv6 (see orderAddresses). */
  readonly addresses: readonly string[];
}

export interface DnsFailure {
  readonly ok: false;
  /** true: retrying will not help (bounce); false: try again later (defer). */
  readonly permanent: boolean;
  /** RFC 3463 enhanced status, e.g. 5.1.2 or 4.4.3. */
  readonly status: string;
  readonly message: string;
}

export type MxResult = { readonly ok: true; readonly implicit: boolean; readonly hosts: readonly MxHost[] } | DnsFailure;
export type HostResult = { readonly ok: true; readonly addresses: readonly string[] } | DnsFailure;

export interface MxResolver {
  /** Delivery hosts for a recipient domain, most preferred first. */
  resolveMx(domain: string): Promise<MxResult>;
  /** Addresses of one host name (a relayhost, an MX exchange); IP literals pass through. */
  resolveHost(name: string): Promise<HostResult>;
  /** Aborts outstanding queries (they end as temporary failures). */
  cancel(): void;
}

export interface MxResolverOptions {
  /** How long MX answers are cached (no TTL is available for them). */
  mxCacheMs?: number;
  /** How long NXDOMAIN / NODATA answers are cached. */
  negativeCacheMs?: number;
  /** Upper bound for A/AAAA TTLs. */
  maxTtlMs?: number;
  now?: () => number;
}

type Lookup<T> =
  | { kind: 'ok'; values: T[] }
  | { kind: 'nodata' }
  | { kind: 'nxdomain' }
  | { kind: 'temp'; code: string };

interface CacheEntry {
  expires: number;
  value: Lookup<unknown>;
}

const NEGATIVE = new Set(['ENODATA', 'ENOTFOUND']);

export function createMxResolver(dns: DnsConfig, opts: MxResolverOptions = {}): MxResolver {
  const mxCacheMs = opts.mxCacheMs ?? 60_000;
  const negativeCacheMs = opts.negativeCacheMs ?? 30_000;
  const maxTtlMs = opts.maxTtlMs ?? 3_600_000;
  const now = opts.now ?? Date.now;
  const resolver = new Resolver({ timeout: dns.timeoutMs, tries: dns.tries });
  if (dns.servers.length > 0) resolver.setServers(dns.servers);
  const cache = new Map<string, CacheEntry>();
  const inflight = new Map<string, Promise<Lookup<unknown>>>();

  /** One cached, de-duplicated query; errors become values. */
  function lookup<T>(type: 'MX' | 'A' | 'AAAA', name: string): Promise<Lookup<T>> {
    const key = `${type} ${name}`;
    const hit = cache.get(key);
    if (hit && hit.expires > now()) return Promise.resolve(hit.value as Lookup<T>);
    if (hit) cache.delete(key);
    const running = inflight.get(key);
    if (running) return running as Promise<Lookup<T>>;
    const p = query(type, name).then((r) => {
      inflight.delete(key);
      if (r.ttlMs > 0 && r.value.kind !== 'temp') cache.set(key, { expires: now() + r.ttlMs, value: r.value });
      return r.value;
    });
    inflight.set(key, p);
    return p as Promise<Lookup<T>>;
  }

  async function query(type: 'MX' | 'A' | 'AAAA', name: string): Promise<{ value: Lookup<unknown>; ttlMs: number }> {
    try {
      if (type === 'MX') {
        const recs = await resolver.resolveMx(name);
        return { value: { kind: 'ok', values: recs }, ttlMs: mxCacheMs };
      }
      const recs = type === 'A' ? await resolver.resolve4(name, { ttl: true }) : await resolver.resolve6(name, { ttl: true });
      if (recs.length === 0) return { value: { kind: 'nodata' }, ttlMs: negativeCacheMs };
      const ttl = Math.min(...recs.map((r) => r.ttl)) * 1000;
      return { value: { kind: 'ok', values: recs.map((r) => r.address) }, ttlMs: Math.min(ttl, maxTtlMs) };
    } catch (err) {
      const code = String((err as NodeJS.ErrnoException).code ?? 'EUNKNOWN');
      if (NEGATIVE.has(code)) return { value: { kind: code === 'ENOTFOUND' ? 'nxdomain' : 'nodata' }, ttlMs: negativeCacheMs };
      return { value: { kind: 'temp', code }, ttlMs: 0 };
    }
  }

  async function resolveHost(rawName: string): Promise<HostResult> {
    const name = normalise(rawName);
    if (isIP(name)) return { ok: true, addresses: [name] };
    const [a, aaaa] = await Promise.all([lookup<string>('A', name), lookup<string>('AAAA', name)]);
    const addresses = [...(a.kind === 'ok' ? a.values : []), ...(aaaa.kind === 'ok' ? aaaa.values : [])];
    // One family answering is enough: a timed-out AAAA must not hold up IPv4 delivery.
    if (addresses.length > 0) return { ok: true, addresses };
    const temp = [a, aaaa].find((r): r is { kind: 'temp'; code: string } => r.kind === 'temp');
    if (temp) return tempFail(`DNS lookup of A/AAAA for ${name} failed: ${temp.code}`);
    if (a.kind === 'nxdomain' || aaaa.kind === 'nxdomain') return permFail('5.1.2', `Host or domain name not found: ${name} (NXDOMAIN)`);
    return permFail('5.4.4', `No address (A/AAAA) records for ${name}`);
  }

  async function resolveMx(rawDomain: string): Promise<MxResult> {
    const domain = normalise(rawDomain);
    if (domain === '' || domain.startsWith('[')) {
      // Address literals (user@[192.0.2.1]) are not delivered to: on an ISP
      // gateway they would let anyone aim mail at arbitrary (internal) hosts.
      // RCPT refuses them (relay.address-literal, src/policy/checks/builtin.ts);
      // this stays for what was queued before that, or by another way in.
      return permFail('5.1.2', `Unroutable recipient domain: ${rawDomain || '(empty)'}`);
    }
    const mx = await lookup<{ exchange: string; priority: number }>('MX', domain);
    if (mx.kind === 'temp') return tempFail(`DNS lookup of MX for ${domain} failed: ${mx.code}`);
    if (mx.kind === 'nodata' || mx.kind === 'nxdomain' || mx.values.length === 0) {
      // RFC 5321 §5.1: no MX → the domain itself is the implicit MX.
      const host = await resolveHost(domain);
      if (!host.ok) {
        if (mx.kind === 'nxdomain' && host.permanent) return permFail('5.1.2', `Host or domain name not found: ${domain} (NXDOMAIN)`);
        return host;
      }
      return { ok: true, implicit: true, hosts: [{ name: domain, preference: 0, addresses: host.addresses }] };
    }
    const records = mx.values.map((r) => ({ exchange: normalise(r.exchange), priority: r.priority }));
    const real = records.filter((r) => r.exchange !== '');
    if (real.length === 0) {
      return permFail('5.1.10', `Domain ${domain} does not accept mail (null MX, RFC 7505)`);
    }
    const ordered = orderByPreference(real);
    const resolved = await Promise.all(ordered.map((r) => resolveHost(r.exchange)));
    const hosts: MxHost[] = [];
    let sawTemp: DnsFailure | undefined;
    resolved.forEach((res, i) => {
      if (res.ok) hosts.push({ name: ordered[i].exchange, preference: ordered[i].priority, addresses: res.addresses });
      else if (!res.permanent) sawTemp ??= res;
    });
    if (hosts.length > 0) return { ok: true, implicit: false, hosts };
    if (sawTemp) return tempFail(`No MX host of ${domain} could be resolved: ${sawTemp.message}`);
    return permFail('5.4.4', `No MX host of ${domain} has an address record (${ordered.map((r) => r.exchange).join(', ')})`);
  }

  return { resolveMx, resolveHost, cancel: () => resolver.cancel() };
}

/**
 * A `lookup` for node's net/tls/https clients that resolves through the
 * relay's own resolver, so HTTPS hosts named in DNS (MTA-STS policy hosts,
 * TLS-RPT endpoints) are found the way MX hosts are.
 */
export function lookupVia(hosts: MxResolver): LookupFunction {
  return (hostname, options, cb) => {
    void hosts.resolveHost(hostname).then((r) => {
      if (!r.ok || r.addresses.length === 0) {
        const e = Object.assign(new Error(`cannot resolve ${hostname}`), { code: 'ENOTFOUND' });
        return (cb as (err: Error) => void)(e);
      }
      const all = r.addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
      if (options.all) (cb as (err: null, a: typeof all) => void)(null, all);
      else cb(null, all[0].address, all[0].family);
    });
  };
}

/** Sort by preference; shuffle within equal preference (load spreading, RFC 5321 §5.1). */
export function orderByPreference<T extends { priority: number }>(records: readonly T[], random: () => number = Math.random): T[] {
  const keyed = records.map((r) => ({ r, k: random() }));
  keyed.sort((x, y) => x.r.priority - y.r.priority || x.k - y.k);
  return keyed.map((x) => x.r);
}

function normalise(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, '');
}

function tempFail(message: string): DnsFailure {
  return { ok: false, permanent: false, status: '4.4.3', message };
}

function permFail(status: string, message: string): DnsFailure {
  return { ok: false, permanent: true, status, message };
}
