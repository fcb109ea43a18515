/**
 * Subscriber netblocks (policies/netblocks.yaml and the prefix files it
 * names): which addresses belong to our subscribers, and the class of each
 * block (residential-dynamic, business, ...). The class is a fact for later
 * rules (quota plans, DNSBL actions, identity) and the intercept listener's
 * relay gate refuses every address outside all blocks.
 *
 * Two ways to list blocks, mixable:
 *   netblocks: [{ cidr, class, comment }]        small hand-kept lists
 *   files: [{ file, class }]                      IPAM exports: "CIDR [class]" per line
 * The text files are for size: 100,000 prefixes load in well under a
 * second, where a YAML list that long would not.
 *
 * Talks to: the filesystem (reads). Trusts: nothing (validated; errors name
 * file, key or line, and reason).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { At, list, obj, str } from '../config/validate';
import { parseCidr } from './ip';
import { PrefixTable } from './prefix-table';
import { readYaml } from './yaml';

export interface Netblock {
  /** Canonical CIDR text. */
  readonly cidr: string;
  readonly cls: string;
  /** Where it was listed ("netblocks.yaml netblocks[3]", "residential.txt:17"). */
  readonly source: string;
}

/** Where a block was written: shared per file; the line (or YAML key) per block. */
interface Origin {
  readonly file: string;
  readonly base: string;
}

/** A block as loaded; its source text is built only when asked for (explain), not 100,000 times at load. */
class Block implements Netblock {
  constructor(
    readonly cidr: string,
    readonly cls: string,
    private readonly origin: Origin,
    private readonly where: number | string,
  ) {}

  get source(): string {
    return typeof this.where === 'number' ? `${this.origin.base}:${this.where}` : `${this.origin.base} ${this.where}`;
  }

  /** For errors about this block. */
  at(): At {
    return new At(this.origin.file, typeof this.where === 'number' ? `line ${this.where}` : `${this.where}.cidr`);
  }
}

export class Netblocks {
  constructor(
    private readonly trie: PrefixTable<Netblock>,
    readonly classes: ReadonlySet<string>,
  ) {}

  /** The most specific block containing `ip`. */
  match(ip: string): Netblock | undefined {
    return this.trie.lookup(ip);
  }

  get size(): number {
    return this.trie.size;
  }
}

const CLASS_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function checkClassName(name: string, at: At): string {
  if (!CLASS_RE.test(name)) at.fail(`not a class name: "${name}" (letters, digits, ".", "_", "-")`);
  return name;
}

/** Reads netblocks.yaml (absent: no subscriber blocks, so intercept refuses everyone). */
export function loadNetblocks(file: string): Netblocks {
  const at = new At(file);
  const raw = readYaml(file);
  const top = obj(raw ?? {}, at, ['netblocks', 'files']);
  const trie = new PrefixTable<Block>();
  const classes = new Set<string>();
  const origin: Origin = { file, base: path.basename(file) };
  const add = (cidrText: string, cls: string, o: Origin, where: number | string, at: () => At) => {
    const c = parseCidr(cidrText);
    if (typeof c === 'string') return at().fail(c);
    trie.insert(c, new Block(c.text, cls, o, where));
    classes.add(cls);
  };
  list(top.netblocks, at.child('netblocks')).forEach((item, i) => {
    const a = at.child('netblocks').child(i);
    const o = obj(item, a, ['cidr', 'class', 'comment']);
    const cls = checkClassName(str(o.class, a.child('class'), 'subscriber'), a.child('class'));
    add(str(o.cidr, a.child('cidr')), cls, origin, `netblocks[${i}]`, () => a.child('cidr'));
  });
  list(top.files, at.child('files')).forEach((item, i) => {
    const a = at.child('files').child(i);
    const o = obj(item, a, ['file', 'class', 'comment']);
    const rel = str(o.file, a.child('file'));
    const dflt = o.class === undefined ? undefined : checkClassName(str(o.class, a.child('class')), a.child('class'));
    const f = path.resolve(path.dirname(file), rel);
    let text = '';
    try {
      text = readFileSync(f, 'utf8');
    } catch (err) {
      a.child('file').fail(`cannot read ${f}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const fo: Origin = { file: f, base: path.basename(f) };
    const known = new Set<string>();
    forEachLine(text, (line, n) => {
      const lineAt = () => new At(f, `line ${n}`);
      let sp = -1;
      for (let k = 0; k < line.length; k++) {
        const ch = line.charCodeAt(k);
        if (ch === 32 || ch === 9) {
          sp = k;
          break;
        }
      }
      const cidr = sp < 0 ? line : line.slice(0, sp);
      let cls = dflt;
      if (sp >= 0) {
        cls = line.slice(sp + 1).trim();
        if (!known.has(cls)) known.add(checkClassName(cls, lineAt()));
      }
      if (!cls) return lineAt().fail('no class: write "CIDR CLASS" or give the file a class in netblocks.yaml');
      add(cidr, cls, fo, n, lineAt);
    });
  });
  trie.build((earlier, later) => {
    if (earlier.cls !== later.cls) later.at().fail(`${later.cidr} is also listed as class "${earlier.cls}" (${earlier.source})`);
  });
  return new Netblocks(trie, classes);
}

/** Calls `fn` for each line that is not blank or a "#" comment (text after "#" is dropped). */
export function forEachLine(text: string, fn: (line: string, lineNo: number) => void): void {
  let n = 0;
  let start = 0;
  while (start <= text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    n++;
    let line = text.slice(start, end);
    const hash = line.indexOf('#');
    if (hash >= 0) line = line.slice(0, hash);
    line = line.trim();
    if (line) fn(line, n);
    start = end + 1;
  }
}

