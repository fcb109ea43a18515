/**
 * Password hashes: scrypt (memory-hard, in node:crypto), stored as
 * `scrypt$N$r$p$salt$hash` (base64). Verification is constant-time.
 *
 * Hashes are slow on purpose (tens of ms), and submission does one AUTH per
 * session, so verified credentials are remembered briefly in an auth cache
 * (Dovecot's auth_cache): keyed by an HMAC of user, password and the stored
 * hash under a per-process random key — the password itself is never kept,
 * and a password change invalidates the entry because the hash changes.
 */
import { createHmac, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const DEFAULT = { N: 16384, r: 8, p: 1 };
const KEYLEN = 32;

function scryptAsync(password: string, salt: Buffer, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, KEYLEN, { ...opts, maxmem: 256 * opts.N! * opts.r! }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, DEFAULT);
  return `scrypt$${DEFAULT.N}$${DEFAULT.r}$${DEFAULT.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export function isPasswordHash(s: string): boolean {
  return /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/.test(s);
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])];
  const salt = Buffer.from(parts[4]!, 'base64');
  const expected = Buffer.from(parts[5]!, 'base64');
  const key = await scryptAsync(password, salt, { N, r, p });
  return key.length === expected.length && timingSafeEqual(key, expected);
}

/** A hash of a made-up password, verified for unknown users so timing does not reveal who exists. */
let decoy: Promise<string> | undefined;
export function decoyHash(): Promise<string> {
  decoy ??= hashPassword(randomBytes(12).toString('hex'));
  return decoy;
}

export class AuthCache {
  private readonly key = randomBytes(32);
  private readonly entries = new Map<string, number>();
  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries = 100_000,
  ) {}

  private fingerprint(user: string, password: string, storedHash: string): string {
    return createHmac('sha256', this.key).update(user).update('\0').update(password).update('\0').update(storedHash).digest('base64');
  }

  has(user: string, password: string, storedHash: string, now = Date.now()): boolean {
    if (this.ttlMs <= 0) return false;
    const fp = this.fingerprint(user, password, storedHash);
    const exp = this.entries.get(fp);
    if (exp === undefined) return false;
    if (exp < now) {
      this.entries.delete(fp);
      return false;
    }
    return true;
  }

  add(user: string, password: string, storedHash: string, now = Date.now()): void {
    if (this.ttlMs <= 0) return;
    if (this.entries.size >= this.maxEntries) {
      // Drop the oldest insertion (Map keeps insertion order).
      const first = this.entries.keys().next().value;
      if (first !== undefined) this.entries.delete(first);
    }
    this.entries.set(this.fingerprint(user, password, storedHash), now + this.ttlMs);
  }

  clear(): void {
    this.entries.clear();
  }
}
