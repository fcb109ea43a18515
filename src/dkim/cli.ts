/**
 * Operator functions behind `smarthost dkim keygen` and `smarthost dkim
 * check` (the CLI module wires them): create a key file with its metadata
 * and the TXT record to publish; compare each selector's key on disk with
 * what DNS publishes.
 *
 * Talks to: the file system (keys.ts layout) and DNS through node:dns's
 * Resolver (own servers, timeout). Never prints or returns a private key.
 */
import { generateKeyPair } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import fs from 'node:fs/promises';
import path from 'node:path';
import { isSelector, normalizeDomain } from './config';
import { loadKeys, publicRecord, type KeyAlgorithm, type KeyProblem, type KeyState } from './keys';

export interface KeygenOptions {
  keysDir: string;
  domain: string;
  selector: string;
  algo: KeyAlgorithm;
  /** RSA modulus: 2048 (default), 3072 or 4096. */
  bits?: number;
  /** When the key starts signing (ISO date or Date); default now. Publish DNS before then. */
  activeFrom?: string | Date;
  retireAt?: string | Date;
}

export interface KeygenResult {
  privateKeyPath: string;
  metadataPath: string;
  /** `<selector>._domainkey.<domain>` */
  dnsName: string;
  /** The TXT value, e.g. `v=DKIM1; k=ed25519; p=...` */
  txtRecord: string;
  /** A zone-file line with the value split into ≤255-byte strings. */
  zoneLine: string;
}

export async function dkimKeygen(opts: KeygenOptions): Promise<KeygenResult> {
  const domain = normalizeDomain(opts.domain);
  if (!domain) throw new Error(`not a domain name: "${opts.domain}"`);
  if (!isSelector(opts.selector)) throw new Error(`not a valid selector: "${opts.selector}" (letters, digits, hyphens, dots)`);
  const selector = opts.selector.toLowerCase();
  if (opts.algo !== 'rsa' && opts.algo !== 'ed25519') throw new Error(`algorithm must be rsa or ed25519, got "${String(opts.algo)}"`);
  const bits = opts.bits ?? 2048;
  if (opts.algo === 'rsa' && ![2048, 3072, 4096].includes(bits)) throw new Error(`RSA key size must be 2048, 3072 or 4096, got ${bits}`);
  const activeFrom = toIso(opts.activeFrom ?? new Date(), 'activeFrom');
  const retireAt = opts.retireAt === undefined ? undefined : toIso(opts.retireAt, 'retireAt');
  if (retireAt !== undefined && Date.parse(retireAt) <= Date.parse(activeFrom)) throw new Error('retireAt must be after activeFrom');

  await fs.mkdir(opts.keysDir, { recursive: true, mode: 0o700 });
  const dir = path.join(opts.keysDir, domain);
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  await fs.chmod(dir, 0o700);
  const existing = (await fs.readdir(dir)).filter((n) => n.startsWith(`${selector}.`) && /\.(pem|ya?ml|json)$/.test(n));
  if (existing.length > 0) throw new Error(`selector "${selector}" already exists for ${domain} (${existing.join(', ')}): choose a new selector`);

  const privateKey = await new Promise<import('node:crypto').KeyObject>((resolve, reject) => {
    const done = (err: Error | null, _pub: unknown, priv: import('node:crypto').KeyObject) => (err ? reject(err) : resolve(priv));
    if (opts.algo === 'rsa') generateKeyPair('rsa', { modulusLength: bits }, done);
    else generateKeyPair('ed25519', {}, done);
  });
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const rec = publicRecord(privateKey);

  // Metadata first: a key must never be visible without its activation date.
  const metadataPath = path.join(dir, `${selector}.yaml`);
  const meta = [`# DKIM key ${selector}._domainkey.${domain} (${opts.algo}${opts.algo === 'rsa' ? ` ${bits}` : ''})`, `createdAt: ${new Date().toISOString()}`, `activeFrom: ${activeFrom}`];
  if (retireAt) meta.push(`retireAt: ${retireAt}`);
  await writeNew(metadataPath, meta.join('\n') + '\n', 0o644);
  const privateKeyPath = path.join(dir, `${selector}.${opts.algo}.pem`);
  await writeNew(privateKeyPath, pem, 0o600);

  const dnsName = `${selector}._domainkey.${domain}`;
  return { privateKeyPath, metadataPath, dnsName, txtRecord: rec.txt, zoneLine: zoneLine(dnsName, rec.txt) };
}

/** Write to a hidden temporary file, fsync, then link to the final name (fails if it exists). */
async function writeNew(file: string, content: string, mode: number): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const fh = await fs.open(tmp, 'wx', mode);
  try {
    await fh.chmod(mode);
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fs.link(tmp, file);
  } finally {
    await fs.unlink(tmp);
  }
}

function toIso(v: string | Date, name: string): string {
  const t = v instanceof Date ? v.getTime() : Date.parse(v);
  if (Number.isNaN(t)) throw new Error(`${name}: not a date: "${String(v)}"`);
  return new Date(t).toISOString();
}

function zoneLine(name: string, txt: string): string {
  const parts: string[] = [];
  for (let i = 0; i < txt.length; i += 255) parts.push(`"${txt.slice(i, i + 255)}"`);
  return `${name}. IN TXT ( ${parts.join(' ')} )`;
}

export interface CheckOptions {
  keysDir: string;
  domain: string;
  /** "ip" or "ip:port" entries; default the system's resolvers. */
  dnsServers?: string[];
  timeoutMs?: number;
  now?: number;
}

export interface SelectorCheck {
  selector: string;
  algorithm: KeyAlgorithm;
  state: KeyState;
  dnsName: string;
  /** A DKIM record exists at dnsName. */
  published: boolean;
  /** It carries this key (same k= and p=). */
  matches: boolean;
  reason: string;
  /** What to publish. */
  expected: string;
}

export interface CheckResult {
  domain: string;
  selectors: SelectorCheck[];
  problems: KeyProblem[];
  /** Every active or pending key is published and matches. */
  ok: boolean;
}

export async function dkimCheck(opts: CheckOptions): Promise<CheckResult> {
  const domain = normalizeDomain(opts.domain);
  if (!domain) throw new Error(`not a domain name: "${opts.domain}"`);
  const { ring, problems } = await loadKeys(opts.keysDir, undefined, domain);
  const resolver = new Resolver({ timeout: opts.timeoutMs ?? 3000, tries: 2 });
  if (opts.dnsServers?.length) resolver.setServers(opts.dnsServers);
  const now = opts.now ?? Date.now();
  const selectors: SelectorCheck[] = [];
  for (const key of ring.keysOf(domain)) {
    const dnsName = `${key.selector}._domainkey.${domain}`;
    const expected = publicRecord(key.privateKey).txt;
    const base = { selector: key.selector, algorithm: key.algorithm, state: ring.state(key, now), dnsName, expected };
    let records: string[][];
    try {
      records = await resolver.resolveTxt(dnsName);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const missing = code === 'ENOTFOUND' || code === 'ENODATA';
      selectors.push({ ...base, published: false, matches: false, reason: missing ? 'no TXT record published' : `DNS lookup failed: ${code ?? (e as Error).message}` });
      continue;
    }
    const dkim = records.map((r) => r.join('')).map(parseTags).filter((t) => t.has('p') || t.get('v')?.toUpperCase() === 'DKIM1');
    if (dkim.length === 0) {
      selectors.push({ ...base, published: false, matches: false, reason: 'TXT records exist but none is a DKIM key record' });
      continue;
    }
    if (dkim.length > 1) {
      selectors.push({ ...base, published: true, matches: false, reason: `${dkim.length} DKIM records at one name: verifiers may pick either` });
      continue;
    }
    const tags = dkim[0]!;
    const p = (tags.get('p') ?? '').replace(/\s+/g, '');
    const k = (tags.get('k') ?? 'rsa').toLowerCase();
    const hashes = tags.get('h');
    let reason = 'published and matches';
    let matches = false;
    if (p === '') reason = 'the published record is revoked (empty p=)';
    else if (k !== key.algorithm) reason = `published k=${k} but the key file is ${key.algorithm}`;
    else if (p !== key.publicKey) reason = 'published key differs from the key file';
    else if (hashes && !hashes.toLowerCase().split(':').map((s) => s.trim()).includes('sha256')) reason = `published h=${hashes} does not allow sha256`;
    else if (tags.get('v') !== undefined && tags.get('v') !== 'DKIM1') reason = `published v=${String(tags.get('v'))} (must be DKIM1)`;
    else matches = true;
    selectors.push({ ...base, published: true, matches, reason });
  }
  const ok = selectors.length > 0 && selectors.every((s) => s.matches || s.state === 'retired' || s.state === 'standby');
  return { domain, selectors, problems, ok };
}

function parseTags(record: string): Map<string, string> {
  const tags = new Map<string, string>();
  for (const part of record.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    tags.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  return tags;
}
