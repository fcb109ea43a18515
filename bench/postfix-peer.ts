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
import os from 'node:os';
import { launchPostfix, postfixInstalled } from '../test/helpers/postfix';

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
  if (!postfixInstalled() || process.getuid?.() !== 0) return undefined;
  // Logging to a file (no syslog here); Postfix logs every message as smarthost does at info.
  const main = `myhostname = postfix.bench.test
default_process_limit = 100
in_flow_delay = ${POSTFIX_IN_FLOW_DELAY}
default_destination_concurrency_limit = ${POSTFIX_DESTINATION_CONCURRENCY}
`;
  const pf = await launchPostfix({ port, relayPort, main, baseDir, prefix: 'smarthost-bench-postfix-', startTries: 50 });
  if ('failed' in pf) {
    console.log(`postfix peer did not start: ${pf.failed}`);
    return undefined;
  }
  return { port, pid: pf.pid, stop: () => pf.stop() };
}
