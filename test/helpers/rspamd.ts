/**
 * A private rspamd (Debian's /usr/bin/rspamd) for tests: its own config,
 * database, run and log directories under a temporary directory, one
 * normal worker on a free loopback port, no controller, no proxy, no
 * Redis. It never touches the network: every module that fetches maps or
 * asks remote services (RBLs, SURBL, fuzzy, phishing feeds, updates,
 * reputation, ASN, ...) is disabled, and the resolver is the test's DNS
 * server. The public-suffix list is replaced with a five-line one so
 * startup takes about two seconds instead of compiling 9,600 suffixes.
 * Startup is bounded (`startupMs`); a missing rspamd fails with a clear
 * message, never a skip.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { childPids, freePort } from './process';

export interface TestRspamd {
  readonly url: string;
  readonly port: number;
  /** The normal worker's pid (SIGSTOP it to make rspamd hang). */
  workerPids(): number[];
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

const RSPAMD = '/usr/bin/rspamd';
const REMOTE_MODULES = [
  'rbl', 'surbl', 'whitelist', 'phishing', 'multimap', 'mime_types', 'rspamd_update', 'mid', 'fuzzy_check', 'url_redirector', 'asn', 'hfilter',
  'greylist', 'neural', 'ratelimit', 'replies', 'reputation', 'history_redis', 'dcc', 'antivirus', 'external_services', 'metadata_exporter',
  'clickhouse', 'elastic', 'spamtrap', 'bimi', 'p0f', 'aws_s3', 'emails', 'dmarc', 'spf', 'dkim', 'arc', 'maillist', 'mx_check', 'http_headers',
];

export async function startRspamd(opts: { dns: string; startupMs?: number }): Promise<TestRspamd> {
  if (!existsSync(RSPAMD)) throw new Error(`${RSPAMD} is missing: install the Debian package rspamd (npm test's pretest, scripts/test-setup.sh, does as root)`);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-rspamd-'));
  for (const d of ['override.d', 'db', 'run', 'log']) await fsp.mkdir(path.join(dir, d));
  const port = await freePort();
  await fsp.writeFile(path.join(dir, 'tld.dat'), 'com\nnet\norg\ntest\nexample\n');
  await fsp.writeFile(
    path.join(dir, 'rspamd.conf'),
    `.include "$CONFDIR/common.conf"
options {
  pidfile = "$RUNDIR/rspamd.pid";
  .include "$CONFDIR/options.inc"
  .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/options.inc"
}
logging { type = "file"; filename = "$LOGDIR/rspamd.log"; level = "warning"; }
worker "normal" { bind_socket = "127.0.0.1:${port}"; count = 1; .include "$CONFDIR/worker-normal.inc" }
`,
  );
  const [dnsHost, dnsPort] = opts.dns.split(':');
  await fsp.writeFile(
    path.join(dir, 'override.d', 'options.inc'),
    `filters = "chartable,regexp";
dns { nameserver = ["${dnsHost}:${dnsPort}"]; timeout = 0.5s; retransmits = 1; }
url_tld = "${path.join(dir, 'tld.dat')}";
local_addrs = [];
`,
  );
  for (const m of REMOTE_MODULES) await fsp.writeFile(path.join(dir, 'override.d', `${m}.conf`), 'enabled = false;\n');
  const child: ChildProcess = spawn(
    RSPAMD,
    ['-f', '-u', 'root', '-g', 'root', '-c', path.join(dir, 'rspamd.conf'), '--var', `LOCAL_CONFDIR=${dir}`, '--var', `DBDIR=${dir}/db`, '--var', `RUNDIR=${dir}/run`, '--var', `LOGDIR=${dir}/log`],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const url = `http://127.0.0.1:${port}`;
  const end = Date.now() + (opts.startupMs ?? 30_000);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`rspamd exited (${child.exitCode}) at startup: ${stderr}`);
    const ok = await fetch(`${url}/ping`, { signal: AbortSignal.timeout(500) }).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > end) {
      child.kill('SIGKILL');
      throw new Error(`rspamd did not answer /ping within ${opts.startupMs ?? 30_000} ms: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  // rspamd compiles its regexp classes on the first task: one scan now, so no test's deadline meets a cold start.
  await fetch(`${url}/checkv2`, { method: 'POST', body: 'From: <warm@up.test>\r\nSubject: warm-up\r\n\r\nwarm-up\r\n', signal: AbortSignal.timeout(opts.startupMs ?? 30_000) });
  const workerPids = () => childPids(child.pid!);
  return {
    url,
    port,
    workerPids,
    pause: () => workerPids().forEach((p) => process.kill(p, 'SIGSTOP')),
    resume: () => workerPids().forEach((p) => process.kill(p, 'SIGCONT')),
    async stop() {
      for (const p of workerPids()) process.kill(p, 'SIGCONT');
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}
