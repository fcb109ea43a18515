/**
 * User names for logs, as a keyed hash. A failed AUTH's user name is what
 * the client typed, and people type their password there: it must not reach
 * the log as text. HMAC-SHA256 with a per-install secret keeps correlation
 * (the same name gives the same hash, across restarts and worker processes)
 * without letting a log reader test guesses against it. The secret is
 * `<spool>/log-hash.key` (32 random bytes, 0600, created once; the spool is
 * the service user's, so it is handed over with it). Names are compared
 * case-insensitively, as account names are.
 *
 * Talks to: the filesystem (once, at start). Trusts: nothing.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';

export type UserHash = (name: string) => string;

export const USER_HASH_KEY_FILE = 'log-hash.key';

/** The install's key (created on first use), and the hash function over it. */
export async function loadUserHash(spoolDir: string): Promise<UserHash> {
  const file = path.join(spoolDir, USER_HASH_KEY_FILE);
  let key = await fsp.readFile(file).catch(() => undefined);
  if (!key || key.length < 32) {
    await fsp.mkdir(spoolDir, { recursive: true, mode: 0o700 });
    // Several processes may start at once: write aside, then link (fails if one
    // already exists), so every process ends up with the same key.
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
    await fsp.writeFile(tmp, randomBytes(32), { mode: 0o600 });
    await fsp.link(tmp, file).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
    await fsp.unlink(tmp);
    key = await fsp.readFile(file);
  }
  const k = key;
  return (name) => createHmac('sha256', k).update(name.toLowerCase()).digest('hex').slice(0, 16);
}
