/**
 * Map files (Postfix-style lookup tables) re-read when they change: each
 * lookup checks the file's mtime at most once per `checkMs`, and a file that
 * fails to parse keeps the last good table (logged). Format: one entry a
 * line, `key  value[, value…]`, `#` comments, keys compared in lower case.
 * A key `@domain` matches any address of that domain (after exact keys).
 * Talks to: the filesystem. Trusts: the operator's files.
 */
import { readFileSync, statSync } from 'node:fs';
import { domainOf } from '../envelope';
import type { Logger } from '../log';

export class MapFile {
  private table = new Map<string, string[]>();
  private domains = new Set<string>();
  private mtimeMs = -1;
  private size = -1;
  private checkedAt = 0;
  private missing = false;

  constructor(
    readonly file: string,
    private readonly logger: Logger,
    /** Lists (no values) are maps whose keys stand alone. */
    private readonly keysOnly = false,
    private readonly checkMs = 1000,
  ) {
    this.refresh(true);
  }

  /** Re-read if the file changed (or `force`); returns whether the table was replaced. */
  refresh(force = false): boolean {
    const now = Date.now();
    if (!force && now - this.checkedAt < this.checkMs) return false;
    this.checkedAt = now;
    let st;
    try {
      st = statSync(this.file);
    } catch (err) {
      // Logged once per outage (and on every forced reload), not on every lookup.
      if (!this.missing || force) this.logger.error({ evt: 'reload', what: 'map', file: this.file, err: (err as Error).message }, 'map file unreadable; keeping the last good table');
      this.missing = true;
      return false;
    }
    this.missing = false;
    if (!force && st.mtimeMs === this.mtimeMs && st.size === this.size) return false;
    const table = new Map<string, string[]>();
    const lines = readFileSync(this.file, 'utf8').split(/\r?\n/);
    lines.forEach((raw) => {
      const line = raw.replace(/#.*$/, '').trim();
      if (!line) return;
      const [key, ...rest] = line.split(/\s+/);
      const values = rest.join(' ').split(/[,\s]+/).filter(Boolean).map((x) => x.toLowerCase());
      if (!this.keysOnly && values.length === 0) {
        this.logger.warn({ evt: 'reload', what: 'map', file: this.file, line: raw }, 'map line without a value ignored');
        return;
      }
      table.set(key!.toLowerCase(), values);
    });
    this.table = table;
    this.domains = new Set([...table.keys()].map((k) => domainOf(k)));
    this.mtimeMs = st.mtimeMs;
    this.size = st.size;
    this.logger.info({ evt: 'reload', what: 'map', file: this.file, entries: table.size }, 'map loaded');
    return true;
  }

  /** Values for an address: exact key first, then `@domain`. */
  lookup(address: string): { key: string; values: string[] } | undefined {
    this.refresh();
    const a = address.toLowerCase();
    const exact = this.table.get(a);
    if (exact) return { key: a, values: exact };
    const d = `@${domainOf(a)}`;
    const dom = this.table.get(d);
    return dom ? { key: d, values: dom } : undefined;
  }

  /** Whether any key belongs to the domain (the list speaks for that domain). */
  coversDomain(domain: string): boolean {
    this.refresh();
    return this.domains.has(domain.toLowerCase());
  }
}
