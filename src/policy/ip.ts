/**
 * Addresses as numbers, parsed without allocating: the netblock and list
 * lookups run on every connection, and a general-purpose parser (ipaddr.js)
 * would cost more than the lookup itself. IPv4 is one uint32; IPv6 is four
 * uint32 words, most significant first. IPv4-mapped IPv6 (::ffff:a.b.c.d,
 * what a dual-stack socket reports for an IPv4 client) is returned as the
 * IPv4 address it stands for.
 *
 * Talks to: nothing. Trusts: nothing (every input may be malformed).
 */

export type IpKind = 0 | 4 | 6;

/** Scratch space for IPv6 groups while parsing. */
const groups = new Int32Array(8);

/** Dotted quad in s[start, end) → uint32, or -1. */
function parseV4(s: string, start: number, end: number): number {
  let n = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (digits === 3 || (digits === 1 && octet === 0)) return -1; // too long, or a leading zero
      octet = octet * 10 + (c - 48);
      if (octet > 255) return -1;
      digits++;
    } else if (c === 46) {
      if (digits === 0 || dots === 3) return -1;
      n = n * 256 + octet;
      octet = 0;
      digits = 0;
      dots++;
    } else return -1;
  }
  if (digits === 0 || dots !== 3) return -1;
  return n * 256 + octet;
}

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

function parseV6(s: string, out: Uint32Array): IpKind {
  const pct = s.indexOf('%');
  const end = pct >= 0 ? pct : s.length;
  let g = 0;
  let dbl = -1;
  let i = 0;
  if (end >= 2 && s.charCodeAt(0) === 58) {
    if (s.charCodeAt(1) !== 58) return 0;
    dbl = 0;
    i = 2;
  }
  while (i < end) {
    let j = i;
    let v = 0;
    let dot = false;
    while (j < end) {
      const c = s.charCodeAt(j);
      if (c === 58) break;
      if (c === 46) dot = true;
      j++;
    }
    if (dot) {
      // An embedded IPv4 address: only as the last 32 bits.
      if (j !== end || g > 6) return 0;
      const n = parseV4(s, i, j);
      if (n < 0) return 0;
      groups[g++] = Math.floor(n / 65536);
      groups[g++] = n % 65536;
      break;
    }
    const len = j - i;
    if (len === 0 || len > 4 || g === 8) return 0;
    for (let k = i; k < j; k++) {
      const h = hexVal(s.charCodeAt(k));
      if (h < 0) return 0;
      v = v * 16 + h;
    }
    groups[g++] = v;
    if (j === end) break;
    if (j + 1 < end && s.charCodeAt(j + 1) === 58) {
      if (dbl >= 0) return 0;
      dbl = g;
      i = j + 2;
    } else {
      i = j + 1;
      if (i === end) return 0; // a trailing single colon
    }
  }
  if (dbl >= 0) {
    if (g > 7) return 0;
    const tail = g - dbl;
    for (let k = 0; k < tail; k++) groups[7 - k] = groups[g - 1 - k]!;
    for (let k = dbl; k < 8 - tail; k++) groups[k] = 0;
  } else if (g !== 8) return 0;
  out[0] = ((groups[0]! << 16) | groups[1]!) >>> 0;
  out[1] = ((groups[2]! << 16) | groups[3]!) >>> 0;
  out[2] = ((groups[4]! << 16) | groups[5]!) >>> 0;
  out[3] = ((groups[6]! << 16) | groups[7]!) >>> 0;
  if (out[0] === 0 && out[1] === 0 && out[2] === 0xffff) {
    out[0] = out[3]!;
    return 4;
  }
  return 6;
}

/**
 * Parse `s` into `out` (4 words): returns 4 (out[0] is the address), 6, or
 * 0 when `s` is not an address. A zone suffix ("%eth0") is ignored.
 */
export function parseIp(s: string, out: Uint32Array): IpKind {
  if (s.indexOf(':') < 0) {
    const n = parseV4(s, 0, s.length);
    if (n < 0) return 0;
    out[0] = n;
    return 4;
  }
  return parseV6(s, out);
}

export interface Cidr {
  readonly kind: 4 | 6;
  readonly words: ArrayLike<number>;
  readonly len: number;
  /** Canonical text (IPv4-mapped IPv6 written as IPv4). */
  readonly text: string;
}

/**
 * "a.b.c.d/n", "x::/n", or a bare address (a host route). Returns a reason
 * string when the text is not a CIDR or has host bits set (a typo guard:
 * "10.0.0.1/8" is refused with the network it probably meant).
 */
export function parseCidr(text: string): Cidr | string {
  const t = text.trim();
  const slash = t.indexOf('/');
  if (slash > 0 && t.indexOf(':') < 0) {
    // IPv4 "a.b.c.d/n", the common case (100,000-line IPAM files): no allocation but the result.
    const n = parseV4(t, 0, slash);
    let len = 0;
    const digits = t.length - slash - 1;
    for (let i = slash + 1; i < t.length; i++) {
      const c = t.charCodeAt(i);
      if (c < 48 || c > 57) return `not a CIDR: "${text}"`;
      len = len * 10 + (c - 48);
    }
    if (n < 0 || digits < 1 || digits > 2 || (digits === 2 && t.charCodeAt(slash + 1) === 48) || len > 32) return `not a CIDR: "${text}"`;
    const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
    const net = (n & mask) >>> 0;
    if (net !== n) return `"${text}" has host bits set (the network is ${formatIp(Uint32Array.of(net), 4)}/${len})`;
    // Canonical already: the parser refuses leading zeros.
    return { kind: 4, words: [n], len, text: t };
  }
  const addr = slash < 0 ? t : t.slice(0, slash);
  const words = new Uint32Array(4);
  const kind = parseIp(addr, words);
  if (kind === 0) return `not a CIDR: "${text}"`;
  const mapped = kind === 4 && addr.includes(':');
  const max = kind === 4 ? 32 : 128;
  let len = max;
  if (slash >= 0) {
    const p = t.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return `not a CIDR: "${text}"`;
    len = Number(p);
    if (mapped) len -= 96;
    if (len < 0 || len > max) return `not a CIDR: "${text}"`;
  }
  const masked = maskWords(words, kind, len);
  if (!sameWords(masked, words, kind)) return `"${text}" has host bits set (the network is ${formatIp(masked, kind)}/${len})`;
  return { kind, words: masked, len, text: `${formatIp(masked, kind)}/${len}` };
}

function maskWords(w: Uint32Array, kind: 4 | 6, len: number): Uint32Array {
  const out = new Uint32Array(4);
  const n = kind === 4 ? 1 : 4;
  for (let i = 0; i < n; i++) {
    const bits = Math.max(0, Math.min(32, len - i * 32));
    const mask = bits === 0 ? 0 : bits === 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
    out[i] = (w[i]! & mask) >>> 0;
  }
  return out;
}

function sameWords(a: Uint32Array, b: Uint32Array, kind: 4 | 6): boolean {
  const n = kind === 4 ? 1 : 4;
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Words → text: dotted quad, or IPv6 in RFC 5952 form. */
export function formatIp(w: Uint32Array, kind: 4 | 6): string {
  if (kind === 4) {
    const n = w[0]!;
    return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
  }
  const g = [w[0]! >>> 16, w[0]! & 0xffff, w[1]! >>> 16, w[1]! & 0xffff, w[2]! >>> 16, w[2]! & 0xffff, w[3]! >>> 16, w[3]! & 0xffff];
  // The longest run of two or more zero groups becomes "::".
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === bestAt) {
      out += '::';
      i += bestLen - 1;
      continue;
    }
    if (out !== '' && !out.endsWith(':')) out += ':';
    out += g[i]!.toString(16);
  }
  return out;
}

/** Canonical text of an address (IPv4-mapped → IPv4), or undefined. */
export function canonicalIp(s: string): string | undefined {
  const w = new Uint32Array(4);
  const kind = parseIp(s, w);
  return kind === 0 ? undefined : formatIp(w, kind);
}

/** The /len prefix of an address as text ("2001:db8:1:2::/64"); IPv4 unchanged. */
export function prefixOf(s: string, v6Len: number): string | undefined {
  const w = new Uint32Array(4);
  const kind = parseIp(s, w);
  if (kind === 0) return undefined;
  if (kind === 4) return formatIp(w, 4);
  return `${formatIp(maskWords(w, 6, v6Len), 6)}/${v6Len}`;
}

/** DNSBL query label: reversed octets (IPv4) or reversed nibbles (IPv6). */
export function reverseName(s: string): string | undefined {
  const w = new Uint32Array(4);
  const kind = parseIp(s, w);
  if (kind === 0) return undefined;
  if (kind === 4) {
    const n = w[0]!;
    return `${n & 255}.${(n >>> 8) & 255}.${(n >>> 16) & 255}.${n >>> 24}`;
  }
  const nibbles: string[] = [];
  for (let i = 3; i >= 0; i--) {
    let x = w[i]!;
    for (let k = 0; k < 8; k++) {
      nibbles.push((x & 15).toString(16));
      x >>>= 4;
    }
  }
  return nibbles.join('.');
}
