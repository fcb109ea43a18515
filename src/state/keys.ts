/**
 * Every state key, built in one place. Layout:
 *
 *   sh:<kind>:{<subject>}:<name>
 *
 * The subject (an account or a client address) is the Redis Cluster hash
 * tag, so every key of one subject lives in one slot and an atomic
 * operation over several of them (recipients per hour AND per day) is one
 * Lua script on one node. Subjects come from clients (user names typed at
 * AUTH), so they are escaped: no braces, no spaces, bounded length.
 *
 * Talks to: nothing. Trusts: nothing (escapes every input).
 */

export type SubjectKind = 'a' | 'ip';

/** An account ("a") or a client address or IPv6 prefix ("ip"). */
export interface Subject {
  readonly kind: SubjectKind;
  readonly id: string;
}

/**
 * Whose mail a client's is: its account on submission, its address (an IPv6
 * address by the policy's prefix, `ipSubject`) on intercept; nobody else's.
 */
export function clientSubject(client: { readonly role: string; readonly ip: string; readonly user?: string }, ipSubject: (ip: string) => string): Subject | undefined {
  if (client.role === 'submission' && client.user) return { kind: 'a', id: client.user.toLowerCase() };
  if (client.role === 'intercept') return { kind: 'ip', id: ipSubject(client.ip) };
  return undefined;
}

/** "account:NAME" / "ip:ADDR": a subject as events, rankings and the console name it. */
export const subjectLabel = (s: Subject): string => (s.kind === 'a' ? `account:${s.id}` : `ip:${s.id}`);

export function parseSubjectLabel(label: string): Subject | undefined {
  if (label.startsWith('account:')) return { kind: 'a', id: label.slice(8) };
  if (label.startsWith('ip:')) return { kind: 'ip', id: label.slice(3) };
  return undefined;
}

export function escapeId(s: string): string {
  const lower = s.toLowerCase();
  // Keep keys readable for the common case, escape anything odd.
  const safe = /^[a-z0-9@._:+/-]{1,200}$/.test(lower) ? lower : encodeURIComponent(lower.slice(0, 200));
  return safe;
}

function tag(s: Subject): string {
  return `{${s.kind}:${escapeId(s.id)}}`;
}

export const keys = {
  /** A quota's sliding-window log, e.g. sh:q:{a:alice@isp.test}:recipientsPerDay */
  quota: (s: Subject, limit: string): string => `sh:q:${tag(s)}:${limit}`,
  /** Open connections of a subject (an anvil counter). */
  connections: (s: Subject): string => `sh:c:${tag(s)}`,
  /** Connection slots a client address (IPv6: its prefix) holds on one listener (limits.maxConnectionsPerIp). */
  connectionSlots: (s: Subject, listener: string): string => `sh:cs:${tag(s)}:${escapeId(listener)}`,
  /** Failed AUTH attempts of a client address or an account name. */
  authFailures: (s: Subject): string => `sh:af:${tag(s)}`,
  /** An address (IPv6: prefix) that logged in to the account: a counter whose TTL is authFailures.perAccount.knownAddressesFor. */
  knownAddress: (account: Subject, ip: Subject): string => `sh:ka:${tag(account)}:${escapeId(ip.id)}`,
  /** A temporary AUTH lockout (a counter whose TTL is the lockout). */
  authLock: (s: Subject): string => `sh:al:${tag(s)}`,
  /** What a subject's accepted mail went to (the console's sender page): recipients per hour, per domain per day, rankings. */
  activity: (s: Subject, name: string): string => `sh:act:${tag(s)}:${name}`,
  /** A fleet-wide ranking of subjects (the console's senders page). */
  ranking: (name: string): string => `sh:act:{fleet}:${escapeId(name)}`,
  /**
   * A shaping group's shared state (src/relay/shaping.ts): `rate` (its GCRA
   * turn) and `suspension`. The group is (egress pool, provider): bounded by
   * the configuration (`other` destinations are shaped per process and have
   * no key).
   */
  shaping: (pool: string, provider: string, name: 'rate' | 'suspension'): string => `sh:shp:{${escapeId(pool)}|${escapeId(provider)}}:${name}`,
  /** A behaviour signal (sliding set or log) for later containment rules. */
  signal: (s: Subject, name: string): string => `sh:s:${tag(s)}:${name}`,
};

/** Counters of open connections: a process that dies holding some must give them back (src/cluster/ipc-store.ts). */
export function isConnectionKey(key: string): boolean {
  return key.startsWith('sh:c:') || key.startsWith('sh:cs:');
}
