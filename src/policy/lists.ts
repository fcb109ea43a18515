/**
 * Local block/allow lists: plain text files under policies/lists/, one
 * entry per line, "#" starts a comment. Two kinds:
 *
 *   IP lists        192.0.2.7   198.51.100.0/24   2001:db8::/48
 *   address lists   spammer@example.com   (that address)
 *                   example.com  or  @example.com   (that domain)
 *                   *.example.com   (any subdomain of it, not itself)
 *                   <>              (the null sender)
 *
 * What a match does (permit, reject, ...) is said by the rule that uses the
 * list in rules.yaml. Matching is on the most specific entry; domains are
 * compared lower-case.
 *
 * Talks to: the filesystem (reads). Trusts: nothing (each line validated,
 * errors name file and line).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { At } from '../config/validate';
import { domainOf } from '../envelope';
import { parseCidr } from './ip';
import { forEachLine } from './netblocks';
import { PrefixTable } from './prefix-table';

export interface ListMatch {
  /** The entry as written. */
  readonly entry: string;
  /** "block-ips.txt:12" */
  readonly source: string;
}

function readList(file: string, at: At): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    return at.fail(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export class IpList {
  private constructor(
    readonly file: string,
    private readonly trie: PrefixTable<ListMatch>,
  ) {}

  static load(file: string, at: At): IpList {
    const text = readList(file, at);
    const trie = new PrefixTable<ListMatch>();
    const fat = new At(file);
    const base = path.basename(file);
    forEachLine(text, (line, n) => {
      const c = parseCidr(line);
      if (typeof c === 'string') return fat.child(`line ${n}`).fail(c.startsWith('not a CIDR') ? `not an IP address or CIDR: "${line}"` : c);
      trie.insert(c, { entry: c.text, source: `${base}:${n}` });
    });
    trie.build();
    return new IpList(file, trie);
  }

  match(ip: string): ListMatch | undefined {
    return this.trie.lookup(ip);
  }

  get size(): number {
    return this.trie.size;
  }
}

const DOMAIN_RE = /^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/;

/** Domains as written in policy files: "example.com" (exactly) and "*.example.com" (its subdomains). */
export class DomainSet {
  private readonly exact = new Map<string, string>();
  private readonly under = new Map<string, string>();

  /** Returns a reason when `entry` is not a domain or "*.domain". */
  add(entry: string, source: string): string | undefined {
    const e = entry.toLowerCase().replace(/\.$/, '');
    if (e.startsWith('*.')) {
      if (!DOMAIN_RE.test(e.slice(2))) return `not a domain: "${entry}"`;
      this.under.set(e.slice(2), source);
    } else {
      if (!DOMAIN_RE.test(e)) return `not a domain: "${entry}"`;
      this.exact.set(e, source);
    }
    return undefined;
  }

  /** The entry (as stored) and source that match `domain`, most specific first. */
  match(domain: string): ListMatch | undefined {
    const d = domain.toLowerCase().replace(/\.$/, '');
    const src = this.exact.get(d);
    if (src !== undefined) return { entry: d, source: src };
    let rest = d;
    for (let i = rest.indexOf('.'); i >= 0; i = rest.indexOf('.')) {
      rest = rest.slice(i + 1);
      const s = this.under.get(rest);
      if (s !== undefined) return { entry: `*.${rest}`, source: s };
    }
    return undefined;
  }

  get size(): number {
    return this.exact.size + this.under.size;
  }

  /** The entries as stored ("example.com", "*.example.com"), for explanations. */
  entries(): string[] {
    return [...this.exact.keys(), ...[...this.under.keys()].map((d) => `*.${d}`)];
  }
}

export class AddressList {
  private readonly addresses = new Map<string, string>();
  private readonly domains = new DomainSet();
  private nullSender: string | undefined;

  private constructor(readonly file: string) {}

  static load(file: string, at: At): AddressList {
    const text = readList(file, at);
    const l = new AddressList(file);
    const fat = new At(file);
    const base = path.basename(file);
    forEachLine(text, (line, n) => {
      const src = `${base}:${n}`;
      const where = fat.child(`line ${n}`);
      if (line === '<>') {
        l.nullSender = src;
        return;
      }
      const at = line.indexOf('@');
      if (at > 0) {
        if (line.indexOf('@', at + 1) >= 0 || /\s/.test(line)) where.fail(`not an address: "${line}"`);
        const why = new DomainSet().add(line.slice(at + 1), src);
        if (why) where.fail(`not an address: "${line}"`);
        l.addresses.set(line.toLowerCase(), src);
        return;
      }
      const why = l.domains.add(at === 0 ? line.slice(1) : line, src);
      if (why) where.fail(why);
    });
    return l;
  }

  /** Does the list name `address` ('' is the null sender)? */
  match(address: string): ListMatch | undefined {
    if (address === '') return this.nullSender ? { entry: '<>', source: this.nullSender } : undefined;
    const a = address.toLowerCase();
    const src = this.addresses.get(a);
    if (src !== undefined) return { entry: a, source: src };
    return this.domains.match(domainOf(a));
  }

  get size(): number {
    return this.addresses.size + this.domains.size + (this.nullSender ? 1 : 0);
  }
}
