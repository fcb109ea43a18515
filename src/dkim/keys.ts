/**
 * DKIM private keys on disk and which one signs now (rotation).
 *
 * Layout, one directory per signing domain:
 *   <keysDir>/<domain>/<selector>.rsa.pem        PKCS#8 or PKCS#1 PEM
 *   <keysDir>/<domain>/<selector>.ed25519.pem    PKCS#8 PEM
 *   <keysDir>/<domain>/<selector>.yaml|.yml|.json  optional: activeFrom, retireAt (ISO dates)
 * A selector names one DNS record, so it holds one algorithm. Per domain and
 * algorithm the newest key whose window [activeFrom, retireAt) contains
 * "now" signs; a key without activeFrom counts as active since forever and
 * older than any dated key (ties: the selector sorting last). Activation is
 * judged at signing time, so a dated key takes over without a reload.
 *
 * Talks to: the file system only. Trusts: nothing in the files; every
 * problem is reported with its path and the key is skipped. Key material is
 * never logged or put in a problem text. Parsing a PEM costs ~1 ms (RSA), so
 * a reload reuses the parsed KeyObject of files that did not change and
 * yields to the event loop between domains.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { At, ConfigError, obj } from '../config/validate';
import { isSelector, normalizeDomain } from './config';

export type KeyAlgorithm = 'rsa' | 'ed25519';
export const KEY_ALGORITHMS: readonly KeyAlgorithm[] = ['rsa', 'ed25519'];

export interface DkimKey {
  readonly domain: string;
  readonly selector: string;
  readonly algorithm: KeyAlgorithm;
  /** Epoch ms; undefined = active since forever. */
  readonly activeFrom?: number;
  /** Epoch ms; undefined = never retires. */
  readonly retireAt?: number;
  readonly privateKey: KeyObject;
  /** The p= value for DNS: base64 SPKI (RSA) or raw 32-byte key (Ed25519). */
  readonly publicKey: string;
  readonly bits?: number;
  readonly path: string;
}

export type KeyState = 'active' | 'standby' | 'pending' | 'retired';

export interface KeyProblem {
  readonly severity: 'error' | 'warning';
  readonly path: string;
  readonly reason: string;
}

const PEM_FILE = /^(.+)\.(rsa|ed25519)\.pem$/;
const META_FILE = /^(.+)\.(yaml|yml|json)$/;
const META_KEYS = ['activeFrom', 'retireAt', 'createdAt', 'note'] as const;
/** SPKI DER prefix of an Ed25519 public key; the raw key is the 32 bytes after it. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

interface Cached {
  readonly mtimeMs: number;
  readonly size: number;
  readonly ino: number;
  readonly privateKey: KeyObject;
  readonly publicKey: string;
  readonly bits?: number;
}

/** The keys found at one load; immutable, swapped whole on reload. */
export class KeyRing {
  private readonly byDomain = new Map<string, DkimKey[]>();

  constructor(
    readonly keys: readonly DkimKey[],
    /** Parsed keys by path, reused by the next load for unchanged files. */
    readonly cache: ReadonlyMap<string, Cached> = new Map(),
  ) {
    for (const k of keys) {
      const list = this.byDomain.get(k.domain) ?? [];
      list.push(k);
      this.byDomain.set(k.domain, list);
    }
    for (const list of this.byDomain.values()) list.sort(newestFirst);
  }

  domains(): string[] {
    return [...this.byDomain.keys()].sort();
  }

  keysOf(domain: string): readonly DkimKey[] {
    return this.byDomain.get(domain) ?? [];
  }

  /** The key that signs now, per algorithm (absent when none is active). */
  active(domain: string, now: number): Partial<Record<KeyAlgorithm, DkimKey>> {
    const out: Partial<Record<KeyAlgorithm, DkimKey>> = {};
    for (const k of this.byDomain.get(domain) ?? []) {
      if (out[k.algorithm] === undefined && inWindow(k, now)) out[k.algorithm] = k;
    }
    return out;
  }

  state(k: DkimKey, now: number): KeyState {
    if (k.retireAt !== undefined && now >= k.retireAt) return 'retired';
    if (k.activeFrom !== undefined && now < k.activeFrom) return 'pending';
    return this.active(k.domain, now)[k.algorithm] === k ? 'active' : 'standby';
  }
}

function inWindow(k: DkimKey, now: number): boolean {
  return (k.activeFrom === undefined || k.activeFrom <= now) && (k.retireAt === undefined || now < k.retireAt);
}

function newestFirst(a: DkimKey, b: DkimKey): number {
  const fa = a.activeFrom ?? -Infinity;
  const fb = b.activeFrom ?? -Infinity;
  if (fa !== fb) return fb > fa ? 1 : -1;
  return a.selector < b.selector ? 1 : a.selector > b.selector ? -1 : 0;
}

/** The DNS p= value and TXT record for a key (private or public KeyObject). */
export function publicRecord(key: KeyObject): { algorithm: KeyAlgorithm; p: string; txt: string; bits?: number } {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const der = pub.export({ type: 'spki', format: 'der' });
  const type = pub.asymmetricKeyType;
  if (type === 'ed25519') {
    // RFC 8463: p= is the raw 32-byte key, not the SPKI structure.
    const p = der.subarray(ED25519_SPKI_PREFIX.length).toString('base64');
    return { algorithm: 'ed25519', p, txt: `v=DKIM1; k=ed25519; p=${p}` };
  }
  if (type === 'rsa') {
    const p = der.toString('base64');
    return { algorithm: 'rsa', p, txt: `v=DKIM1; k=rsa; p=${p}`, bits: pub.asymmetricKeyDetails?.modulusLength };
  }
  throw new Error(`unsupported key type ${String(type)}`);
}

/** Read an ISO date (string, or a Date from YAML) into epoch ms. */
function date(v: unknown, at: At): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (v instanceof Date && !Number.isNaN(v.getTime())) return v.getTime();
  if (typeof v === 'string') {
    const t = Date.parse(v);
    if (!Number.isNaN(t)) return t;
  }
  return at.fail(`expected an ISO date like 2025-01-31T00:00:00Z, got ${JSON.stringify(v)}`);
}

export interface KeyMeta {
  activeFrom?: number;
  retireAt?: number;
}

export async function readMeta(file: string): Promise<KeyMeta> {
  const text = await fs.readFile(file, 'utf8');
  const at = new At(file);
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (e) {
    return at.fail(`not valid YAML/JSON: ${(e as Error).message.split('\n')[0]}`);
  }
  const o = obj(raw, at, META_KEYS);
  const activeFrom = date(o.activeFrom, at.child('activeFrom'));
  const retireAt = date(o.retireAt, at.child('retireAt'));
  if (activeFrom !== undefined && retireAt !== undefined && retireAt <= activeFrom) at.child('retireAt').fail('must be after activeFrom');
  return { activeFrom, retireAt };
}

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Load every key under keysDir (or only `onlyDomain`'s). A missing keysDir
 * is an empty ring with a warning; other directory errors throw (the caller
 * keeps its last good ring).
 */
export async function loadKeys(
  keysDir: string,
  previous?: KeyRing,
  onlyDomain?: string,
): Promise<{ ring: KeyRing; problems: KeyProblem[] }> {
  const problems: KeyProblem[] = [];
  const keys: DkimKey[] = [];
  const cache = new Map<string, Cached>();
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fs.readdir(keysDir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      problems.push({ severity: 'warning', path: keysDir, reason: 'keys directory does not exist: no keys' });
      return { ring: new KeyRing([], cache), problems };
    }
    throw e;
  }
  for (const dirent of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (dirent.name.startsWith('.')) continue;
    const dir = path.join(keysDir, dirent.name);
    if (!dirent.isDirectory()) {
      problems.push({ severity: 'warning', path: dir, reason: 'not a directory (expected <keysDir>/<domain>/), ignored' });
      continue;
    }
    const domain = normalizeDomain(dirent.name);
    if (!domain || domain !== dirent.name.toLowerCase()) {
      problems.push({ severity: 'error', path: dir, reason: domain ? `directory must be named by the A-label lower-case domain "${domain}"` : 'not a domain name' });
      continue;
    }
    if (onlyDomain !== undefined && domain !== onlyDomain) continue;
    await loadDomain(dir, domain, previous?.cache, cache, keys, problems);
    await yieldToLoop();
  }
  return { ring: new KeyRing(keys, cache), problems };
}

async function loadDomain(
  dir: string,
  domain: string,
  oldCache: ReadonlyMap<string, Cached> | undefined,
  cache: Map<string, Cached>,
  keys: DkimKey[],
  problems: KeyProblem[],
): Promise<void> {
  const names = (await fs.readdir(dir)).sort();
  const pems = new Map<string, { file: string; algorithm: KeyAlgorithm }[]>();
  const metas = new Map<string, string[]>();
  for (const name of names) {
    if (name.startsWith('.')) continue; // keygen's temporary files
    const pem = PEM_FILE.exec(name);
    const meta = pem ? null : META_FILE.exec(name);
    const selector = (pem ?? meta)?.[1];
    if (selector === undefined) {
      if (name.endsWith('.pem')) problems.push({ severity: 'error', path: path.join(dir, name), reason: 'expected <selector>.rsa.pem or <selector>.ed25519.pem' });
      continue;
    }
    if (!isSelector(selector)) {
      problems.push({ severity: 'error', path: path.join(dir, name), reason: `"${selector}" is not a valid selector (letters, digits, hyphens, dots)` });
      continue;
    }
    const sel = selector.toLowerCase();
    if (pem) pems.set(sel, [...(pems.get(sel) ?? []), { file: path.join(dir, name), algorithm: pem[2] as KeyAlgorithm }]);
    else metas.set(sel, [...(metas.get(sel) ?? []), path.join(dir, name)]);
  }
  for (const [selector, files] of pems) {
    if (files.length > 1) {
      for (const f of files) problems.push({ severity: 'error', path: f.file, reason: `selector "${selector}" has more than one key file; a selector names one DNS record` });
      continue;
    }
    const { file, algorithm } = files[0]!;
    const metaFiles = metas.get(selector) ?? [];
    if (metaFiles.length > 1) {
      problems.push({ severity: 'error', path: metaFiles[0]!, reason: `selector "${selector}" has more than one metadata file` });
      continue;
    }
    try {
      const meta = metaFiles[0] ? await readMeta(metaFiles[0]) : {};
      const parsed = await readKey(file, algorithm, oldCache, problems);
      cache.set(file, parsed);
      keys.push({ domain, selector, algorithm, ...meta, privateKey: parsed.privateKey, publicKey: parsed.publicKey, bits: parsed.bits, path: file });
    } catch (e) {
      const reason = e instanceof ConfigError ? `${e.key ? `${e.key}: ` : ''}${e.reason}` : (e as Error).message;
      problems.push({ severity: 'error', path: e instanceof ConfigError ? e.file : file, reason });
    }
  }
  for (const [selector, files] of metas) {
    if (!pems.has(selector)) problems.push({ severity: 'warning', path: files[0]!, reason: `metadata without a key file for selector "${selector}"` });
  }
}

async function readKey(file: string, algorithm: KeyAlgorithm, oldCache: ReadonlyMap<string, Cached> | undefined, problems: KeyProblem[]): Promise<Cached> {
  const st = await fs.stat(file);
  if ((st.mode & 0o077) !== 0) {
    problems.push({ severity: 'warning', path: file, reason: `private key is readable by group/others (mode ${(st.mode & 0o777).toString(8)}); chmod 600` });
  }
  const old = oldCache?.get(file);
  if (old && old.mtimeMs === st.mtimeMs && old.size === st.size && old.ino === st.ino) return old;
  const pem = await fs.readFile(file);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    // The parser's message may quote the input: say only what failed.
    throw new Error('cannot parse the private key (expected an unencrypted PEM private key)');
  } finally {
    pem.fill(0);
  }
  if (privateKey.asymmetricKeyType !== algorithm) {
    throw new Error(`file name says ${algorithm} but the key is ${String(privateKey.asymmetricKeyType)}`);
  }
  const rec = publicRecord(privateKey);
  if (algorithm === 'rsa') {
    const bits = rec.bits ?? 0;
    if (bits < 1024) throw new Error(`RSA key of ${bits} bits: verifiers refuse keys under 1024 bits`);
    if (bits < 2048) problems.push({ severity: 'warning', path: file, reason: `RSA key of ${bits} bits; 2048 is recommended` });
  }
  return { mtimeMs: st.mtimeMs, size: st.size, ino: st.ino, privateKey, publicKey: rec.p, bits: rec.bits };
}
