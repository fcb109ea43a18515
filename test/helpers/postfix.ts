/**
 * A private Postfix instance for tests, the way bench/postfix-peer.ts runs
 * the benchmark's peer: its own config and queue directory, smtpd on a
 * loopback port, relaying to a test sink; `main` adds the lines under test
 * (check_policy_service, smtpd_milters). Needs root and Debian's postfix
 * package (npm test's pretest installs it): a missing Postfix fails the
 * test, it is never skipped.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './process';

export interface TestPostfix {
  readonly port: number;
  readonly dir: string;
  /** Postfix's log so far (for assertions and failure messages). */
  log(): string;
  /** Queue ids in the hold queue. */
  held(): string[];
  /** Change main.cf settings and reload. */
  set(settings: Record<string, string>): void;
  stop(): Promise<void>;
}

const POSTFIX_SERVICES = `
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
`;

/** main.cf lines every private instance has: its own directories, loopback only, relaying to `relayPort`, logging to a file. */
function postfixBaseMainCf(dir: string, relayPort: number): string {
  return `compatibility_level = 3.6
queue_directory = ${dir}/queue
data_directory = ${dir}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:${relayPort}
smtpd_relay_restrictions = permit_mynetworks, reject
maillog_file_prefixes = ${dir}
maillog_file = ${dir}/maillog
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
biff = no
`;
}

export function postfixInstalled(): boolean {
  return existsSync('/usr/sbin/postfix') && existsSync('/usr/lib/postfix/sbin/master');
}

/** A private instance as it runs: its master's pid, its log, and how to stop it. */
export interface LaunchedPostfix {
  readonly dir: string;
  readonly pid: number;
  log(): string;
  /** `postfix stop`, wait (bounded) for the master to go, remove the directory. */
  stop(): Promise<void>;
}

/**
 * Starts a private Postfix in a new directory under `baseDir`: smtpd on
 * 127.0.0.1:`port` relaying to `relayPort`, the base main.cf plus `main`.
 * Needs root. On failure the directory is removed and the reason returned
 * (the last maillog line, else postfix's stderr). `startTries`: how many
 * 100 ms waits for the master's pid file.
 */
export async function launchPostfix(o: { port: number; relayPort: number; main: string; baseDir: string; prefix: string; startTries: number }): Promise<LaunchedPostfix | { failed: string }> {
  const dir = await fsp.mkdtemp(path.join(o.baseDir, o.prefix));
  // mkdtemp makes it 0700: Postfix's daemons (user postfix) must reach their queue.
  await fsp.chmod(dir, 0o755);
  await fsp.mkdir(path.join(dir, 'queue'));
  await fsp.mkdir(path.join(dir, 'data'));
  spawnSync('chown', ['postfix', path.join(dir, 'data')]);
  await fsp.writeFile(path.join(dir, 'main.cf'), `${postfixBaseMainCf(dir, o.relayPort)}${o.main}`);
  await fsp.writeFile(path.join(dir, 'master.cf'), `127.0.0.1:${o.port} inet n - n - - smtpd\n${POSTFIX_SERVICES}`);
  const start = spawnSync('postfix', ['-c', dir, 'start'], { encoding: 'utf8' });
  const pidFile = path.join(dir, 'queue/pid/master.pid');
  for (let i = 0; i < o.startTries && !existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 100));
  const log = () => (existsSync(path.join(dir, 'maillog')) ? readFileSync(path.join(dir, 'maillog'), 'utf8') : '');
  if (start.status !== 0 || !existsSync(pidFile)) {
    const why = log().trim().split('\n').pop() || start.stderr;
    await fsp.rm(dir, { recursive: true, force: true });
    return { failed: why };
  }
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  return {
    dir,
    pid,
    log,
    async stop() {
      spawnSync('postfix', ['-c', dir, 'stop']);
      for (let i = 0; i < 50; i++) {
        try {
          process.kill(pid, 0);
        } catch {
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

export async function startPostfix(opts: { relayPort: number; main?: string }): Promise<TestPostfix> {
  assert.ok(postfixInstalled(), 'Postfix is missing: install the Debian package postfix (npm test pretest does, as root)');
  assert.equal(process.getuid?.(), 0, 'a private Postfix needs root (postfix start)');
  const port = await freePort();
  const main = `myhostname = postfix.test
in_flow_delay = 0
smtp_connection_cache_on_demand = no
${opts.main ?? ''}
`;
  const pf = await launchPostfix({ port, relayPort: opts.relayPort, main, baseDir: os.tmpdir(), prefix: 'smarthost-test-postfix-', startTries: 100 });
  if ('failed' in pf) assert.fail(`postfix did not start: ${pf.failed}`);
  const dir = pf.dir;
  return {
    port,
    dir,
    log: pf.log,
    held: () => {
      const hold = path.join(dir, 'queue/hold');
      return existsSync(hold) ? spawnSync('find', [hold, '-type', 'f'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map((f) => path.basename(f)) : [];
    },
    set(settings) {
      for (const [k, v] of Object.entries(settings)) spawnSync('postconf', ['-c', dir, '-e', `${k} = ${v}`]);
      spawnSync('postfix', ['-c', dir, 'reload']);
    },
    stop: () => pf.stop(),
  };
}
