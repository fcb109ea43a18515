/**
 * Longest-prefix match over IPv4 and IPv6 prefixes, as sorted ranges: the
 * prefixes (nested or not) are flattened once into non-overlapping
 * intervals, each carrying the value of the most specific prefix covering
 * it, stored in flat typed arrays. A lookup is a binary search for the last
 * interval starting at or below the address: for IPv4 first narrowed by a
 * 65,536-entry index on the top 16 bits, so it touches a handful of
 * neighbouring array slots instead of chasing ~20 scattered trie nodes
 * (which, at 100,000 prefixes, is a cache miss per step). IPv6 keys are
 * four uint32 words compared in order.
 *
 * Inserts are collected and the table is (re)built on the next lookup or
 * by build(); loaders call build() so the first connection does not pay.
 *
 * Used for subscriber netblocks, block/allow lists and per-netblock
 * settings. Talks to: nothing. Trusts: nothing.
 */
import { parseIp, type Cidr } from './ip';

/** Words 0..3 of a at ai compared with b at bi (IPv6 keys). */
function cmp6(a: ArrayLike<number>, ai: number, b: ArrayLike<number>, bi: number): number {
  for (let k = 0; k < 4; k++) {
    const x = a[ai + k]!;
    const y = b[bi + k]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

export class PrefixTable<T> {
  private readonly values: T[] = [];
  // Collected prefixes: IPv4 as numbers, IPv6 as 4 words each (start, end).
  private readonly s4: number[] = [];
  private readonly e4: number[] = [];
  private readonly l4: number[] = [];
  private readonly v4: number[] = [];
  private readonly s6: number[] = [];
  private readonly e6: number[] = [];
  private readonly l6: number[] = [];
  private readonly v6: number[] = [];
  private count = 0;
  private dirty = false;
  private starts4 = new Uint32Array(1);
  private vals4 = Int32Array.of(-1);
  private index4 = new Int32Array(65537);
  private starts6 = new Uint32Array(4);
  private vals6 = Int32Array.of(-1);
  private readonly scratch = new Uint32Array(4);

  /** Number of distinct prefixes stored (after build). */
  get size(): number {
    if (this.dirty) this.build();
    return this.count;
  }

  /** Add a prefix. The same prefix added again replaces the earlier value (see build). */
  insert(cidr: Cidr, value: T): void {
    this.values.push(value);
    const val = this.values.length - 1;
    this.dirty = true;
    const w = cidr.words;
    if (cidr.kind === 4) {
      this.s4.push(w[0]!);
      this.e4.push(w[0]! + 2 ** (32 - cidr.len) - 1);
      this.l4.push(cidr.len);
      this.v4.push(val);
      return;
    }
    for (let i = 0; i < 4; i++) {
      const bits = Math.max(0, Math.min(32, cidr.len - i * 32));
      const host = bits === 32 ? 0 : bits === 0 ? 0xffffffff : 0xffffffff >>> bits;
      this.s6.push(w[i]!);
      this.e6.push((w[i]! | host) >>> 0);
    }
    this.l6.push(cidr.len);
    this.v6.push(val);
  }

  /**
   * Flatten the prefixes into the lookup arrays (done on first lookup
   * otherwise). A prefix added more than once keeps its last value;
   * `onDuplicate` is told of each (earlier value, later value).
   */
  build(onDuplicate?: (earlier: T, later: T) => void): void {
    if (!this.dirty) return;
    const dup = (a: number, b: number) => onDuplicate?.(this.values[a]!, this.values[b]!);
    this.count = this.build4(dup) + this.build6(dup);
    this.dirty = false;
  }

  /** Prefix indices in (start, length, insertion) order. */
  private order4(): Uint32Array {
    const n = this.s4.length;
    const { s4: s, l4: l } = this;
    if (n < 2 ** 26 && new Uint8Array(Uint16Array.of(1).buffer)[0] === 1) {
      // Little-endian: sort 64-bit keys (start · 2^32 + length · 2^26 + index) natively.
      const keys = new BigUint64Array(n);
      const words = new Uint32Array(keys.buffer);
      for (let i = 0; i < n; i++) {
        words[2 * i] = ((l[i]! << 26) | i) >>> 0;
        words[2 * i + 1] = s[i]!;
      }
      keys.sort();
      const out = new Uint32Array(n);
      for (let i = 0; i < n; i++) out[i] = words[2 * i]! & 0x3ffffff;
      return out;
    }
    return Uint32Array.from(Array.from(s, (_x, i) => i).sort((a, b) => s[a]! - s[b]! || l[a]! - l[b]! || a - b));
  }

  // The sweep: prefixes in (start, length) order; a stack of the prefixes
  // covering the current position; a boundary is written where a prefix
  // starts (its value) and where one ends (the value of the one around it).
  private build4(dup: (a: number, b: number) => void): number {
    const { s4: s, e4: e, l4: l, v4: v } = this;
    const order = this.order4();
    let distinct = 0;
    const outS: number[] = [0];
    const outV: number[] = [-1];
    const push = (start: number, val: number) => {
      const last = outS.length - 1;
      if (outS[last] === start) outV[last] = val;
      else if (outV[last] !== val) {
        outS.push(start);
        outV.push(val);
      }
    };
    const stack: number[] = [];
    const pop = () => {
      const t = stack.pop()!;
      if (e[t]! < 0xffffffff) push(e[t]! + 1, stack.length ? v[stack[stack.length - 1]!]! : -1);
    };
    for (let k = 0; k < order.length; k++) {
      const i = order[k]!;
      const j = order[k + 1];
      // The same prefix again next in order: the later one wins.
      if (j !== undefined && s[j] === s[i] && l[j] === l[i]) {
        dup(v[i]!, v[j]!);
        continue;
      }
      distinct++;
      while (stack.length && e[stack[stack.length - 1]!]! < s[i]!) pop();
      stack.push(i);
      push(s[i]!, v[i]!);
    }
    while (stack.length) pop();
    this.starts4 = Uint32Array.from(outS);
    this.vals4 = Int32Array.from(outV);
    // index4[b]: the interval containing the first address of the /16 block b.
    const idx = new Int32Array(65537);
    let k = 0;
    for (let b = 0; b < 65536; b++) {
      const base = b * 65536;
      while (k + 1 < outS.length && outS[k + 1]! <= base) k++;
      idx[b] = k;
    }
    idx[65536] = outS.length - 1;
    this.index4 = idx;
    return distinct;
  }

  private build6(dup: (a: number, b: number) => void): number {
    const { s6: s, e6: e, l6: l, v6: v } = this;
    const order = Array.from(l, (_x, i) => i).sort((a, b) => cmp6(s, a * 4, s, b * 4) || l[a]! - l[b]! || a - b);
    let distinct = 0;
    const outS: number[] = [0, 0, 0, 0];
    const outV: number[] = [-1];
    const next = [0, 0, 0, 0];
    const push = (src: ArrayLike<number>, at: number, val: number) => {
      const last = outV.length - 1;
      if (cmp6(outS, last * 4, src, at) === 0) outV[last] = val;
      else if (outV[last] !== val) {
        for (let k = 0; k < 4; k++) outS.push(src[at + k]!);
        outV.push(val);
      }
    };
    const stack: number[] = [];
    const pop = () => {
      const t = stack.pop()!;
      // end + 1, unless the end is the last address
      let carry = 1;
      for (let k = 3; k >= 0; k--) {
        const x = e[t * 4 + k]! + carry;
        next[k] = x >>> 0;
        carry = x > 0xffffffff ? 1 : 0;
      }
      if (!carry) push(next, 0, stack.length ? v[stack[stack.length - 1]!]! : -1);
    };
    for (let k = 0; k < order.length; k++) {
      const i = order[k]!;
      const j = order[k + 1];
      if (j !== undefined && l[j] === l[i] && cmp6(s, j * 4, s, i * 4) === 0) {
        dup(v[i]!, v[j]!);
        continue;
      }
      distinct++;
      while (stack.length && cmp6(e, stack[stack.length - 1]! * 4, s, i * 4) < 0) pop();
      stack.push(i);
      push(s, i * 4, v[i]!);
    }
    while (stack.length) pop();
    this.starts6 = Uint32Array.from(outS);
    this.vals6 = Int32Array.from(outV);
    return distinct;
  }

  /** Most specific prefix containing an IPv4 address (uint32). */
  lookup4(addr: number): T | undefined {
    if (this.dirty) this.build();
    const starts = this.starts4;
    const b = addr >>> 16;
    let lo = this.index4[b]!;
    let hi = this.index4[b + 1]!;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (starts[mid]! <= addr) lo = mid;
      else hi = mid - 1;
    }
    const v = this.vals4[lo]!;
    return v >= 0 ? this.values[v] : undefined;
  }

  /** Most specific prefix containing an IPv6 address (four uint32 words). */
  lookup6(w: Uint32Array): T | undefined {
    if (this.dirty) this.build();
    const s = this.starts6;
    let lo = 0;
    let hi = this.vals6.length - 1;
    const w0 = w[0]!;
    const w1 = w[1]!;
    const w2 = w[2]!;
    const w3 = w[3]!;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      const o = mid * 4;
      // starts[mid] <= w, word by word
      const a0 = s[o]!;
      let le: boolean;
      if (a0 !== w0) le = a0 < w0;
      else if (s[o + 1] !== w1) le = s[o + 1]! < w1;
      else if (s[o + 2] !== w2) le = s[o + 2]! < w2;
      else le = s[o + 3]! <= w3;
      if (le) lo = mid;
      else hi = mid - 1;
    }
    const v = this.vals6[lo]!;
    return v >= 0 ? this.values[v] : undefined;
  }

  /** Most specific prefix containing `ip` (text; IPv4-mapped IPv6 as IPv4). */
  lookup(ip: string): T | undefined {
    const kind = parseIp(ip, this.scratch);
    if (kind === 4) return this.lookup4(this.scratch[0]!);
    if (kind === 6) return this.lookup6(this.scratch);
    return undefined;
  }
}
