/**
 * Least privilege: `process.user` / `process.group` in the config. The
 * gateway starts as root, reserves its addresses (25, 465, 587, admin:
 * bound, not accepting) and only then becomes the unprivileged user, for
 * good (setgroups, setgid, setuid: no way back); everything else (recovery,
 * delivery, the admin API, accepting, the mailbox log) runs after that
 * (src/cli/start.ts, test/security/privilege.test.ts). Before the drop the
 * gateway's own state is handed to that user so it can keep writing it: the
 * spool, the accounts file and its directory (atomic replace), the admin
 * token, the self-signed TLS material and the DKIM keys. Files stay
 * 0600/0700: readable by the gateway user only.
 *
 * That state may have been written by the service user in an earlier run,
 * so root walks it without following anything the user could plant:
 * every entry is opened with O_NOFOLLOW relative to its parent's open
 * descriptor (/proc/self/fd), changed with fchown on that descriptor, and a
 * file with more than one hard link (possibly someone else's file linked
 * in) is left alone. The user and group are resolved through the system
 * (NSS: `getent`), so LDAP or systemd users work like /etc/passwd ones.
 * Talks to: the file system, getent, process credentials. Trusts: the config.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants as fsc, fchownSync, fstatSync, openSync, readdirSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/schema';
import type { Logger } from '../log';
import { CliError } from './common';

interface Ids {
  uid: number;
  gid: number;
}

/** A passwd or group entry through NSS; undefined when there is none. */
function getent(db: 'passwd' | 'group', name: string, key: string): string[] | undefined {
  try {
    return execFileSync('getent', [db, name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split('\n')[0]!.split(':');
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { status?: number };
    // getent: exit 2 = no such entry.
    if (e.status === 2) return undefined;
    throw new CliError(`${key}: cannot look up "${name}" with getent ${db}: ${e.code ?? e.message}`);
  }
}

export function resolveIds(user: string, group?: string): Ids {
  const pw = getent('passwd', user, 'process.user');
  if (!pw || !/^\d+$/.test(pw[2] ?? '') || !/^\d+$/.test(pw[3] ?? '')) throw new CliError(`process.user: no such user "${user}"`);
  let gid = Number(pw[3]);
  if (group) {
    const gr = getent('group', group, 'process.group');
    if (!gr || !/^\d+$/.test(gr[2] ?? '')) throw new CliError(`process.group: no such group "${group}"`);
    gid = Number(gr[2]);
  }
  return { uid: Number(pw[2]), gid };
}

const OPEN_FLAGS = fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK;
const MAX_DEPTH = 8;

/** fchown what `fd` is, and below it; never through a symlink, never a hard-linked file. */
function chownAt(fd: number, where: string, ids: Ids, logger: Logger, depth: number): void {
  const st = fstatSync(fd);
  if (st.isFile() && st.nlink > 1) {
    logger.warn({ evt: 'privileges', file: where, links: st.nlink }, 'left a hard-linked file alone (not handing it to the service user)');
    return;
  }
  if (!st.isFile() && !st.isDirectory()) return;
  if (st.uid !== ids.uid || st.gid !== ids.gid) fchownSync(fd, ids.uid, ids.gid);
  if (!st.isDirectory() || depth >= MAX_DEPTH) return;
  for (const name of readdirSync(`/proc/self/fd/${fd}`)) {
    const child = openAt(`/proc/self/fd/${fd}/${name}`);
    if (child === undefined) continue;
    try {
      chownAt(child, path.join(where, name), ids, logger, depth + 1);
    } finally {
      closeSync(child);
    }
  }
}

/** Opens without following a final symlink; undefined for what cannot or need not be handed over. */
function openAt(p: string): number | undefined {
  try {
    return openSync(p, OPEN_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ELOOP: a symlink; ENXIO: a socket; ENOENT: gone meanwhile.
    if (code === 'ELOOP' || code === 'ENXIO' || code === 'ENOENT') return undefined;
    throw err;
  }
}

function chownTree(p: string, ids: Ids, logger: Logger, recursive = true): void {
  const fd = openAt(p);
  if (fd === undefined) return;
  try {
    chownAt(fd, p, ids, logger, recursive ? 0 : MAX_DEPTH);
  } finally {
    closeSync(fd);
  }
}

/** Call once every address is reserved, before anything else runs. A no-op without `process.user`. */
export function dropPrivileges(cfg: Config, logger: Logger): void {
  const { user, group } = cfg.process;
  if (!user) return;
  const ids = resolveIds(user, group);
  const uid = process.getuid?.();
  if (uid === ids.uid) return; // already that user (a worker forked by the unprivileged primary)
  if (uid !== 0) throw new CliError(`process.user "${user}": only root can change user (running as uid ${uid})`);
  chownTree(cfg.spool.dir, ids, logger);
  chownTree(path.join(path.dirname(cfg.spool.dir), 'tls'), ids, logger);
  chownTree(cfg.dkim.keysDir, ids, logger);
  // The accounts file is replaced atomically (containment suspends accounts), so its directory is handed
  // over too; never the config's directory: the service user could then replace the config root reads.
  const accountsDir = path.dirname(cfg.accounts.file);
  if (accountsDir === path.dirname(cfg.file)) logger.warn({ evt: 'privileges', dir: accountsDir }, 'accounts.file is next to the config file: its directory stays root\'s, so the gateway cannot rewrite the accounts file (move it to a state directory such as /var/lib/smarthost)');
  else chownTree(accountsDir, ids, logger, false);
  chownTree(cfg.accounts.file, ids, logger, false);
  chownTree(cfg.admin.tokenFile, ids, logger, false);
  process.setgroups?.([ids.gid]);
  process.setgid?.(ids.gid);
  process.setuid?.(ids.uid);
  if (process.getuid?.() !== ids.uid || process.geteuid?.() !== ids.uid || process.getgid?.() !== ids.gid) throw new CliError(`could not become ${user}`);
  logger.info({ evt: 'privileges', user, uid: ids.uid, gid: ids.gid }, 'dropped root privileges');
}
