/**
 * A small typed reader for YAML data: each function takes an unknown value
 * and its key path and returns a typed value or throws ConfigError naming
 * the file, the key and the reason. Config sections and policy files are
 * parsed with these, so every refusal reads the same way.
 */

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly key: string,
    readonly reason: string,
  ) {
    super(`${file}: ${key || '(top level)'}: ${reason}`);
    this.name = 'ConfigError';
  }
}

/** A key that is still read but should change (a renamed key's old name): file, key and what to do. */
export interface ConfigWarning {
  readonly file: string;
  readonly key: string;
  readonly reason: string;
}

export function formatWarning(w: ConfigWarning): string {
  return `${w.file}: ${w.key}: ${w.reason}`;
}

/** What a parser says about a key beyond its type: for the configuration reference. */
export interface KeyMeta {
  /** One line for docs/configuration-reference.md (else the comment in smarthost.example.yaml). */
  doc?: string;
  /** The default in words, when the parser computes it (from the host, from another key). */
  default?: string;
  /** The type in words, when the parser reads the value itself. */
  type?: string;
}

/**
 * Listens to the readers below while a config is parsed: every key a section
 * accepts, and each value's type and default. The configuration reference
 * is made from this (src/config/reference.ts); parsing for real has none.
 */
export interface KeyRecorder {
  section(path: string, keys: readonly string[]): void;
  leaf(path: string, r: { type: string; dflt?: unknown; required: boolean; value: unknown }): void;
  meta(path: string, m: KeyMeta): void;
}

/**
 * Where a value sits: the file and the dotted key path inside it. `schemaKey`
 * is the same path with list indexes as `[]` and map keys as `<name>`: the
 * key as the reference names it.
 */
export class At {
  constructor(
    readonly file: string,
    readonly key: string = '',
    readonly recorder?: KeyRecorder,
    readonly schemaKey: string = key,
    /** Where warn() collects (the config's warnings); none: warnings are dropped. */
    readonly warnings?: ConfigWarning[],
  ) {}
  child(k: string | number, meta?: KeyMeta): At {
    const c =
      typeof k === 'number'
        ? new At(this.file, `${this.key}[${k}]`, this.recorder, `${this.schemaKey}[]`, this.warnings)
        : new At(this.file, join(this.key, k), this.recorder, join(this.schemaKey, k), this.warnings);
    if (meta) this.recorder?.meta(c.schemaKey, meta);
    return c;
  }
  /** A key of a map whose keys are data (a domain, a name): `placeholder` names it in the reference. */
  entry(k: string, placeholder: string, meta?: KeyMeta): At {
    const c = new At(this.file, join(this.key, k), this.recorder, join(this.schemaKey, `<${placeholder}>`), this.warnings);
    if (meta) this.recorder?.meta(c.schemaKey, meta);
    return c;
  }
  fail(reason: string): never {
    throw new ConfigError(this.file, this.key, reason);
  }
  warn(reason: string): void {
    this.warnings?.push({ file: this.file, key: this.key, reason });
  }
}

/**
 * A key renamed in this release: a mapping that still uses the old name is
 * read as if it used the new one, with a warning naming the file, the key
 * and the new name; both names in one mapping is an error. Applied before
 * obj(), which knows only the new name (so does the reference). Remove the
 * call in the next release, and the old name is an unknown key.
 */
export function renamed(v: unknown, at: At, oldKey: string, newKey: string): unknown {
  if (!isObj(v) || !(oldKey in v)) return v;
  if (newKey in v) at.child(oldKey).fail(`renamed to ${newKey}, which is given too: keep only ${newKey}`);
  at.child(oldKey).warn(`renamed to ${newKey}; the old name is read in this release only`);
  const { [oldKey]: value, ...rest } = v;
  return { ...rest, [newKey]: value };
}

function join(base: string, k: string): string {
  return base ? `${base}.${k}` : k;
}

/** Tell the recorder (if any) what was read at `at`. */
function note(at: At, type: string, v: unknown, dflt: unknown, required = dflt === undefined): void {
  at.recorder?.leaf(at.schemaKey, { type, dflt, required, value: v });
}

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An object whose keys must all be known: typos are errors, not silence. */
export function obj(v: unknown, at: At, known: readonly string[]): Obj {
  at.recorder?.section(at.schemaKey, known);
  if (v === undefined || v === null) return {};
  if (!isObj(v)) at.fail(`expected a mapping, got ${describe(v)}`);
  for (const k of Object.keys(v)) {
    if (!known.includes(k)) at.child(k).fail(`unknown key (known: ${known.join(', ')})`);
  }
  return v;
}

export function str(v: unknown, at: At, dflt?: string): string {
  note(at, 'string', v, dflt);
  return readStr(v, at, dflt);
}

function readStr(v: unknown, at: At, dflt?: string): string {
  if (v === undefined || v === null) {
    if (dflt !== undefined) return dflt;
    at.fail('is required');
  }
  if (typeof v !== 'string') at.fail(`expected a string, got ${describe(v)}`);
  return v;
}

export function optStr(v: unknown, at: At): string | undefined {
  note(at, 'string', v, undefined, false);
  return v === undefined || v === null ? undefined : readStr(v, at);
}

export function bool(v: unknown, at: At, dflt: boolean): boolean {
  note(at, 'bool', v, dflt);
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') at.fail(`expected true or false, got ${describe(v)}`);
  return v;
}

export function int(v: unknown, at: At, dflt: number | undefined, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  note(at, max < Number.MAX_SAFE_INTEGER ? `int ${min}–${max}` : min > 0 ? `int ≥ ${min}` : 'int', v, dflt);
  if (v === undefined || v === null) {
    if (dflt !== undefined) return dflt;
    at.fail('is required');
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) at.fail(`expected a whole number, got ${describe(v)}`);
  if (v < min || v > max) at.fail(`must be between ${min} and ${max}, got ${v}`);
  return v;
}

export function oneOf<T extends string>(v: unknown, at: At, options: readonly T[], dflt?: T): T {
  note(at, options.join(' | '), v, dflt);
  const s = readStr(v, at, dflt);
  if (!options.includes(s as T)) at.fail(`must be one of ${options.join(', ')}, got "${s}"`);
  return s as T;
}

export function list(v: unknown, at: At, dflt: unknown[] = []): unknown[] {
  note(at, 'list', v, dflt);
  return readList(v, at, dflt);
}

function readList(v: unknown, at: At, dflt: unknown[]): unknown[] {
  if (v === undefined || v === null) return dflt;
  if (!Array.isArray(v)) at.fail(`expected a list, got ${describe(v)}`);
  return v;
}

export function strList(v: unknown, at: At, dflt: string[] = []): string[] {
  note(at, 'list of string', v, dflt);
  return readList(v, at, dflt).map((item, i) => readStr(item, at.child(i)));
}

/** A mapping whose keys are data (domain → next hop, …): each value is read by the caller. */
export function mapOf(v: unknown, at: At, what: string): Obj {
  note(at, `map of ${what}`, v, {});
  if (v === undefined || v === null) return {};
  if (!isObj(v)) at.fail(`expected a mapping of ${what}, got ${describe(v)}`);
  return v;
}

const DURATION_UNITS: Record<string, number> = {
  ms: 1, s: 1000, sec: 1000, secs: 1000, second: 1000, seconds: 1000,
  m: 60_000, min: 60_000, mins: 60_000, minute: 60_000, minutes: 60_000,
  h: 3_600_000, hour: 3_600_000, hours: 3_600_000,
  d: 86_400_000, day: 86_400_000, days: 86_400_000,
};

/** "90s", "17 mins", "5d" → milliseconds. A bare number is milliseconds. */
export function parseDuration(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  if (!m) return undefined;
  const unit = m[2]!.toLowerCase() || 'ms';
  const factor = DURATION_UNITS[unit];
  return factor === undefined ? undefined : Math.round(Number(m[1]) * factor);
}

export function duration(v: unknown, at: At, dflt?: string): number {
  note(at, 'duration', v, dflt);
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return v;
  const s = readStr(v, at, dflt);
  const ms = parseDuration(s);
  if (ms === undefined) at.fail(`not a duration: "${s}" (examples: 500ms, 30s, 5m, 2h, 5d)`);
  return ms;
}

/** A duration that must be more than 0: a deadline or an interval that 0 would switch off or divide by. */
export function positiveDuration(v: unknown, at: At, dflt?: string, hint?: string): number {
  const ms = duration(v, at, dflt);
  if (ms <= 0) at.fail(hint ? `must be more than 0: ${hint}` : 'must be more than 0');
  return ms;
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3 };

/** "25MB", "512k", 1048576 → bytes. */
export function size(v: unknown, at: At, dflt?: string): number {
  note(at, 'size', v, dflt);
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
  const s = readStr(v, at, dflt);
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(s);
  const factor = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || factor === undefined) at.fail(`not a size: "${s}" (examples: 512k, 25MB, 1GB)`);
  return Math.round(Number(m[1]) * factor);
}

/** "host:port" or "[v6]:port" → parts; the port may default. */
export function hostPort(v: unknown, at: At, defaultPort?: number): { host: string; port: number } {
  note(at, 'host:port', v, undefined);
  const s = readStr(v, at);
  const m = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d+))?$/.exec(s.trim());
  if (!m) at.fail(`expected host:port, got "${s}"`);
  const host = (m[1] ?? m[2])!;
  const port = m[3] !== undefined ? Number(m[3]) : defaultPort;
  if (port === undefined || port < 1 || port > 65535) at.fail(`expected host:port with a port 1-65535, got "${s}"`);
  return { host, port };
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}
