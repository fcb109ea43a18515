/**
 * Least privilege: `process.user` / `process.group` in the config. The
 * gateway starts as root, binds its ports (25, 465, 587, admin) and only
 * then becomes the unprivileged user, for good (setgroups, setgid, setuid:
 * no way back). Before that, the gateway's own state is handed to that
 * user so it can keep writing it: the spool, the accounts file and its
 * directory (atomic replace), the admin token, the self-signed TLS
 * material and the DKIM keys. Files stay 0600/0700: readable by the
 * gateway user only (test/security/privilege.test.ts).
 * Talks to: the file system, process credentials. Trusts: the config.
 */
import { chownSync, existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/schema';
import type { Logger } from '../log';
import { CliError } from './common';

interface Ids {
  uid: number;
  gid: number;
}

function lookup(file: string, name: string): string[] | undefined {
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name || (/^\d+$/.test(name) && f[2] === name)) return f;
  }
  return undefined;
}

export function resolveIds(user: string, group?: string): Ids {
  const pw = lookup('/etc/passwd', user);
  if (!pw) throw new CliError(`process.user: no such user "${user}"`);
  let gid = Number(pw[3]);
  if (group) {
    const gr = lookup('/etc/group', group);
    if (!gr) throw new CliError(`process.group: no such group "${group}"`);
    gid = Number(gr[2]);
  }
  return { uid: Number(pw[2]), gid };
}

function chownTree(p: string, ids: Ids): void {
  if (!existsSync(p)) return;
  const st = lstatSync(p);
  if (st.isSymbolicLink()) return;
  chownSync(p, ids.uid, ids.gid);
  if (st.isDirectory()) for (const name of readdirSync(p)) chownTree(path.join(p, name), ids);
}

function chownOne(p: string, ids: Ids): void {
  if (existsSync(p) && !lstatSync(p).isSymbolicLink()) chownSync(p, ids.uid, ids.gid);
}

/** Call once every port is bound. A no-op without `process.user`. */
export function dropPrivileges(cfg: Config, logger: Logger): void {
  const { user, group } = cfg.process;
  if (!user) return;
  const ids = resolveIds(user, group);
  const uid = process.getuid?.();
  if (uid === ids.uid) return; // already that user (a worker forked by an unprivileged primary)
  if (uid !== 0) throw new CliError(`process.user "${user}": only root can change user (running as uid ${uid})`);
  chownTree(cfg.spool.dir, ids);
  chownTree(path.join(path.dirname(cfg.spool.dir), 'tls'), ids);
  chownTree(cfg.dkim.keysDir, ids);
  chownOne(path.dirname(cfg.accounts.file), ids);
  chownOne(cfg.accounts.file, ids);
  chownOne(cfg.admin.tokenFile, ids);
  process.setgroups?.([ids.gid]);
  process.setgid?.(ids.gid);
  process.setuid?.(ids.uid);
  if (process.getuid?.() !== ids.uid || process.getgid?.() !== ids.gid) throw new CliError(`could not become ${user}`);
  logger.info({ evt: 'privileges', user, uid: ids.uid, gid: ids.gid }, 'dropped root privileges');
}
