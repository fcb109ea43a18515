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

/** Where a value sits: the file and the dotted key path inside it. */
export class At {
  constructor(
    readonly file: string,
    readonly key: string = '',
  ) {}
  child(k: string | number): At {
    if (typeof k === 'number') return new At(this.file, `${this.key}[${k}]`);
    return new At(this.file, this.key ? `${this.key}.${k}` : k);
  }
  fail(reason: string): never {
    throw new ConfigError(this.file, this.key, reason);
  }
}

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An object whose keys must all be known: typos are errors, not silence. */
export function obj(v: unknown, at: At, known: readonly string[]): Obj {
  if (v === undefined || v === null) return {};
  if (!isObj(v)) at.fail(`expected a mapping, got ${describe(v)}`);
  for (const k of Object.keys(v)) {
    if (!known.includes(k)) at.child(k).fail(`unknown key (known: ${known.join(', ')})`);
  }
  return v;
}

export function str(v: unknown, at: At, dflt?: string): string {
  if (v === undefined || v === null) {
    if (dflt !== undefined) return dflt;
    at.fail('is required');
  }
  if (typeof v !== 'string') at.fail(`expected a string, got ${describe(v)}`);
  return v;
}

export function optStr(v: unknown, at: At): string | undefined {
  return v === undefined || v === null ? undefined : str(v, at);
}

export function bool(v: unknown, at: At, dflt: boolean): boolean {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') at.fail(`expected true or false, got ${describe(v)}`);
  return v;
}

export function int(v: unknown, at: At, dflt: number | undefined, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined || v === null) {
    if (dflt !== undefined) return dflt;
    at.fail('is required');
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) at.fail(`expected a whole number, got ${describe(v)}`);
  if (v < min || v > max) at.fail(`must be between ${min} and ${max}, got ${v}`);
  return v;
}

export function oneOf<T extends string>(v: unknown, at: At, options: readonly T[], dflt?: T): T {
  const s = str(v, at, dflt);
  if (!options.includes(s as T)) at.fail(`must be one of ${options.join(', ')}, got "${s}"`);
  return s as T;
}

export function list(v: unknown, at: At, dflt: unknown[] = []): unknown[] {
  if (v === undefined || v === null) return dflt;
  if (!Array.isArray(v)) at.fail(`expected a list, got ${describe(v)}`);
  return v;
}

export function strList(v: unknown, at: At, dflt: string[] = []): string[] {
  return list(v, at, dflt).map((item, i) => str(item, at.child(i)));
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
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return v;
  const s = str(v, at, dflt);
  const ms = parseDuration(s);
  if (ms === undefined) at.fail(`not a duration: "${s}" (examples: 500ms, 30s, 5m, 2h, 5d)`);
  return ms;
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3 };

/** "25MB", "512k", 1048576 → bytes. */
export function size(v: unknown, at: At, dflt?: string): number {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
  const s = str(v, at, dflt);
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(s);
  const factor = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || factor === undefined) at.fail(`not a size: "${s}" (examples: 512k, 25MB, 1GB)`);
  return Math.round(Number(m[1]) * factor);
}

/** "host:port" or "[v6]:port" → parts; the port may default. */
export function hostPort(v: unknown, at: At, defaultPort?: number): { host: string; port: number } {
  const s = str(v, at);
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
