/**
 * Address rewriting for centralised mail (Postfix's canonical and virtual
 * alias maps), applied once at end of DATA, after the data policy and before
 * Received:/DKIM (signing stays the last change):
 *   sender canonical  envelope sender and the header fields named in
 *                     rewrite.headers (From, Sender, Reply-To by default):
 *                     `root@web01.corp.example  ops@corp.example`, or a
 *                     whole host `@web01.corp.example  @corp.example`;
 *   recipient aliases one address → several (`alias  a@x, b@y`), expanded
 *                     recursively (5 levels), duplicates dropped.
 * Header rewriting needs the header block in memory (it always is unless a
 * single first chunk exceeded the spill threshold; then headers are left
 * alone and that is logged).
 * Talks to: the map files. Trusts: the operator's maps.
 */
import { localPartOf } from '../envelope';
import type { Logger } from '../log';
import type { RewriteConfig } from './config';
import { MapFile } from './maps';

const MAX_ALIAS_DEPTH = 5;
const ADDRESS = /[^\s<>,;:"()@]+@[^\s<>,;:"()@]+/g;

export interface Rewritten {
  mailFrom: string;
  recipients: string[];
  chunks: Buffer[];
  /** Bytes added (negative: removed) by header rewriting. */
  sizeDelta: number;
  changed: boolean;
}

export class Rewriter {
  private readonly canonical?: MapFile;
  private readonly aliases?: MapFile;

  constructor(
    readonly cfg: RewriteConfig,
    private readonly logger: Logger,
  ) {
    if (cfg.senderCanonicalFile) this.canonical = new MapFile(cfg.senderCanonicalFile, logger);
    if (cfg.recipientAliasesFile) this.aliases = new MapFile(cfg.recipientAliasesFile, logger);
  }

  reload(): void {
    this.canonical?.refresh(true);
    this.aliases?.refresh(true);
  }

  appliesTo(listener: { name: string; role: string }): boolean {
    if (this.cfg.listeners) return this.cfg.listeners.includes(listener.name) || this.cfg.listeners.includes(listener.role);
    return listener.role !== 'mx';
  }

  /** The canonical form of a sender address (unchanged when no entry matches). */
  sender(address: string): string {
    if (!this.canonical || address === '') return address;
    const hit = this.canonical.lookup(address);
    const to = hit?.values[0];
    if (!hit || !to) return address;
    // "@old.host → @new.domain" keeps the local part.
    if (to.startsWith('@')) return `${localPartOf(address)}${to}`;
    return to;
  }

  /** Alias expansion of the recipient list. */
  recipients(rcpts: readonly string[]): string[] {
    if (!this.aliases) return [...rcpts];
    const out: string[] = [];
    const seen = new Set<string>();
    const expand = (a: string, depth: number, path: Set<string>) => {
      const hit = depth < MAX_ALIAS_DEPTH && !path.has(a.toLowerCase()) ? this.aliases!.lookup(a) : undefined;
      // An alias may list itself (keep a copy here and send one elsewhere).
      const targets = hit ? hit.values.map((v) => (v.startsWith('@') ? `${localPartOf(a)}${v}` : v)) : undefined;
      if (!targets) {
        if (!seen.has(a.toLowerCase())) {
          seen.add(a.toLowerCase());
          out.push(a);
        }
        return;
      }
      const next = new Set(path).add(a.toLowerCase());
      for (const t of targets) {
        if (t.toLowerCase() === a.toLowerCase()) {
          if (!seen.has(t)) (seen.add(t), out.push(a));
        } else expand(t, depth + 1, next);
      }
    };
    for (const r of rcpts) expand(r, 0, new Set());
    return out;
  }

  apply(mailFrom: string, rcpts: readonly string[], chunks: Buffer[]): Rewritten {
    const newFrom = this.sender(mailFrom);
    const recipients = this.recipients(rcpts);
    const headers = this.canonical ? this.rewriteHeaders(chunks) : undefined;
    const changed = newFrom !== mailFrom || recipients.length !== rcpts.length || recipients.some((r, i) => r !== rcpts[i]) || headers !== undefined;
    if (changed) this.logger.info({ evt: 'rewrite', from: mailFrom, to: newFrom, rcpts: rcpts.length, expanded: recipients.length, headers: headers !== undefined }, 'addresses rewritten');
    return { mailFrom: newFrom, recipients, chunks: headers?.chunks ?? chunks, sizeDelta: headers?.delta ?? 0, changed };
  }

  /** The chunks with sender header fields rewritten, or undefined when nothing changed. */
  private rewriteHeaders(chunks: Buffer[]): { chunks: Buffer[]; delta: number } | undefined {
    // Find the header block across the leading in-memory chunks.
    let taken = 0;
    let joined = Buffer.alloc(0);
    let end = -1;
    while (taken < chunks.length && end < 0 && joined.length < 512 * 1024) {
      joined = Buffer.concat([joined, chunks[taken]!]);
      taken++;
      end = joined.indexOf('\r\n\r\n');
    }
    if (end < 0) {
      if (chunks.length > 0) this.logger.warn({ evt: 'rewrite' }, 'header block not in memory; header addresses left as they are');
      return undefined;
    }
    const head = joined.subarray(0, end + 2).toString('latin1');
    const tail = joined.subarray(end + 2);
    // Split into fields (a field = its first line + continuation lines).
    const fields = head.split(/\r\n(?![ \t])/).filter((f, i, all) => !(i === all.length - 1 && f === ''));
    let changed = false;
    const out = fields.map((f) => {
      const colon = f.indexOf(':');
      if (colon <= 0 || !this.cfg.headers.includes(f.slice(0, colon).trim().toLowerCase())) return f;
      const value = f.slice(colon + 1).replace(ADDRESS, (a) => {
        const to = this.sender(a);
        if (to.toLowerCase() === a.toLowerCase()) return a;
        changed = true;
        return to;
      });
      return f.slice(0, colon + 1) + value;
    });
    if (!changed) return undefined;
    const newHead = Buffer.from(`${out.join('\r\n')}\r\n`, 'latin1');
    return { chunks: [newHead, tail, ...chunks.slice(taken)], delta: newHead.length - (end + 2) };
  }
}
