/**
 * The classic peer, measured in the same run on the same machine: a private
 * Postfix instance (Debian's postfix package, installed by npm test's pretest, scripts/test-setup.sh) set up as
 * a plain smart host — smtpd on a loopback port, mynetworks 127.0.0.0/8,
 * relayhost = the benchmark's sink, no DKIM, no policy beyond the relay
 * check — so the relay scenario's figures compare with Postfix's, not with
 * numbers from another machine. Postfix fsyncs its queue files before 250,
 * as smarthost does. Needs root (postfix start); returns undefined when
 * Postfix is not installed or cannot start, and the benchmark says so.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { POSTFIX_SERVICES, postfixBaseMainCf } from '../test/helpers/postfix';

export interface PostfixPeer {
  port: number;
  /** The master daemon: its process tree is the peer's CPU and RSS. */
  pid: number;
  stop(): Promise<void>;
}

/**
 * Settings stated in the benchmark's output (the fairness block). Both are
 * Postfix's defaults, written out so a reader sees them: in_flow_delay paces
 * smtpd's acceptance to the queue manager's delivery rate (up to 1 s per
 * message when the queue outruns cleanup), and 20 parallel deliveries per
 * destination is the same limit the gateway runs with.
 */
export const POSTFIX_IN_FLOW_DELAY = '1s';
export const POSTFIX_DESTINATION_CONCURRENCY = 20;

export async function startPostfix(port: number, relayPort: number, baseDir = os.tmpdir()): Promise<PostfixPeer | undefined> {
  if (!existsSync('/usr/sbin/postfix') || !existsSync('/usr/lib/postfix/sbin/master') || process.getuid?.() !== 0) return undefined;
  const dir = await fsp.mkdtemp(path.join(baseDir, 'smarthost-bench-postfix-'));
  // mkdtemp makes it 0700: Postfix's daemons (user postfix) must reach their queue.
  await fsp.chmod(dir, 0o755);
  await fsp.mkdir(path.join(dir, 'queue'));
  await fsp.mkdir(path.join(dir, 'data'));
  spawnSync('chown', ['postfix', path.join(dir, 'data')]);
  // Logging to a file (no syslog here); Postfix logs every message as smarthost does at info.
  const main = `${postfixBaseMainCf(dir, relayPort)}myhostname = postfix.bench.test
default_process_limit = 100
in_flow_delay = ${POSTFIX_IN_FLOW_DELAY}
default_destination_concurrency_limit = ${POSTFIX_DESTINATION_CONCURRENCY}
`;
  await fsp.writeFile(path.join(dir, 'main.cf'), main);
  await fsp.writeFile(path.join(dir, 'master.cf'), `127.0.0.1:${port} inet n - n - - smtpd\n${POSTFIX_SERVICES}`);
  const start = spawnSync('postfix', ['-c', dir, 'start'], { encoding: 'utf8' });
  const pidFile = path.join(dir, 'queue/pid/master.pid');
  for (let i = 0; i < 50 && !existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 100));
  if (start.status !== 0 || !existsSync(pidFile)) {
    const log = existsSync(path.join(dir, 'maillog')) ? readFileSync(path.join(dir, 'maillog'), 'utf8') : start.stderr;
    console.log(`postfix peer did not start: ${log.trim().split('\n').pop()}`);
    await fsp.rm(dir, { recursive: true, force: true });
    return undefined;
  }
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  return {
    port,
    pid,
    stop: async () => {
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
