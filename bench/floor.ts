/**
 * How far smarthost is from what Node itself allows, on the peers harness's
 * relay job (../shared/peers: Postfix's smtp-source, 20 sessions, one 4 KB
 * message per session, into Postfix's smtp-sink), all on this machine in
 * the same run, in alternating rounds:
 *
 *   answer        floor-relay.ts --mode answer: SMTP replies, message dropped
 *   smtp-layer    floor-smtp-server.ts: the same through our SMTP layer (src/smtp/server.ts)
 *   floor         floor-relay.ts: + journal with fdatasync group commit before
 *                 the 250, a log line per message, pipelined relay to the sink
 *   smarthost     the gateway, configured as the harness configures it
 *   postfix       a private Postfix as `npm run bench` runs it (root only)
 *
 * answer → smtp-layer prices our SMTP protocol layer; floor → smarthost prices our
 * own per-message work (policy, spool, queue, relay, metrics, logs); floor
 * against Postfix (`npm run bench`, ../shared/peers) says whether a target
 * is out of Node's reach or only out of ours. CPU is the process tree's
 * (utime + stime from /proc, every thread); msgs/s is smtp-source's N over
 * its run time, and for the relaying targets the time until the sink has
 * all N. Needs smtp-source and smtp-sink (Debian's postfix package; `npm
 * test`'s setup installs it) and a disk filesystem under --dir.
 *
 * `--job auth` is the harness's STARTTLS + AUTH PLAIN job instead (its own load
 * generator, ../shared/peers/smtp-auth-load.js: a TLS handshake per message):
 * answer and floor with STARTTLS and AUTH PLAIN, smarthost on a submission
 * listener; Postfix + Dovecot for it is the harness's. It tells how much of
 * that job is Node's TLS, on both sides of the connection, and how much is ours.
 *
 * Everything shares one machine, so each round also prints what the load
 * generator and the sink cost per message (the generator's CPU read from
 * this process's reaped children, the sink's from /proc) and how busy the
 * machine was; the table adds the rate at which the target, the generator
 * and the sink together would fill every core ("cores full at"). Under
 * 100 % busy the bound is an event loop, not the machine.
 *
 * Run: npm run bench:floor -- [--n 20000] [--rounds 3] [--dir /var/tmp] [--only a,b] [--allow-tmpfs]
 *        [--job auth] [--auth-load ../shared/peers/smtp-auth-load.js]
 *        [--node-flags="--cpu-prof --cpu-prof-dir=/tmp/prof"]  (the gateway's Node flags: profile it under this load)
 *        [--workers 2]  (the gateway's process.workers; with several processes the CPU is split per process)
 */
import { type ChildProcess, fork, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { waitUntil } from '../test/helpers/wait-until';
import { diskOrExit } from './disk';
import { startPostfix } from './postfix-peer';
import { machineCpuMs, percentile, procCpuMs, reapedChildrenCpuMs, treeCpuMs, treePids, treePssKb, waitReady } from './proc';

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '20000' },
    warmup: { type: 'string', default: '500' },
    rounds: { type: 'string', default: '3' },
    dir: { type: 'string', default: '/var/tmp' },
    only: { type: 'string' },
    // The gateway's process.workers (the harness's smarthost-workers2 job is 2).
    workers: { type: 'string', default: '1' },
    'allow-tmpfs': { type: 'boolean', default: false },
    // Node flags for the gateway only, to profile it under this load: "--node-flags=--cpu-prof --cpu-prof-dir=/tmp/prof"
    'node-flags': { type: 'string', default: '' },
    job: { type: 'string', default: 'relay' },
    'auth-load': { type: 'string' },
  },
});
const AUTH_JOB = values.job === 'auth';
if (!AUTH_JOB && values.job !== 'relay') {
  console.error(`bench:floor: --job must be relay or auth, not ${values.job}`);
  process.exit(2);
}
const NODE_FLAGS = values['node-flags']!.split(/\s+/).filter(Boolean);
const N = Number(values.n);
const WARMUP = Number(values.warmup);
const ROUNDS = Number(values.rounds);
const FS_TYPE = diskOrExit('bench:floor', values.dir!, values['allow-tmpfs']!);
const BASE = fs.mkdtempSync(path.join(values.dir!, 'smarthost-floor-'));
fs.chmodSync(BASE, 0o755); // Postfix's daemons (user postfix) reach their queue through it
const IN_PORT = 2640;
const SINK_PORT = 2646;
/** The harness's load generator for the STARTTLS + AUTH job, and its account. */
const AUTH_LOAD = values['auth-load'] ?? path.resolve(__dirname, '..', '..', '..', 'shared', 'peers', 'smtp-auth-load.js');
const AUTH_USER = 'bench';
const AUTH_PASS = 'bench-secret';
const FROM = 'bench@example.com';
const TO = 'user@example.net';
if (AUTH_JOB && !fs.existsSync(AUTH_LOAD)) {
  console.error(`bench:floor --job auth needs the peers harness's load generator; not found at ${AUTH_LOAD} (give --auth-load)`);
  process.exit(2);
}
const ADMIN_PORT = 2641;
const ROOT = path.resolve(__dirname, '..', '..');
/** How often the sink's count is read: the end-to-end time is known to this much. */
const POLL_MS = 5;
const CORES = os.availableParallelism();

interface Running {
  pid: number;
  stop(): Promise<void>;
}
interface Target {
  name: string;
  relays: boolean;
  start(): Promise<Running>;
}

function running(child: ChildProcess): Running {
  return {
    pid: child.pid!,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

function need(tool: string): string {
  const r = spawnSync('sh', ['-c', `command -v ${tool} || ls /usr/sbin/${tool}`], { encoding: 'utf8' });
  const found = r.stdout.trim().split('\n')[0];
  if (r.status !== 0 || !found) {
    console.error(`bench:floor needs ${tool} (Debian package postfix); not found`);
    process.exit(2);
  }
  return found;
}
const SMTP_SOURCE = need('smtp-source');
const SMTP_SINK = need('smtp-sink');

/** An RSA-2048 certificate like the harness's (../shared/peers/smarthost.sh), made once per run. */
let tls: { cert: string; key: string } | undefined;
function tlsFiles(): { cert: string; key: string } {
  if (tls) return tls;
  const cert = path.join(BASE, 'tls.crt');
  const key = path.join(BASE, 'tls.key');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=relay.bench.invalid', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  if (r.status !== 0) throw new Error('openssl could not make the test certificate');
  return (tls = { cert, key });
}
function tlsArgs(): string[] {
  if (!AUTH_JOB) return [];
  const { cert, key } = tlsFiles();
  return ['--tls-cert', cert, '--tls-key', key, '--auth', `${AUTH_USER}:${AUTH_PASS}`];
}

function forked(script: string, args: string[]): Promise<Running> {
  const child = fork(path.join(__dirname, script), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    child.once('message', () => resolve(running(child)));
    child.once('exit', (code) => reject(new Error(`${script} exited (${code}) before it was ready`)));
  });
}

function smarthostConfig(dir: string): string {
  fs.mkdirSync(path.join(dir, 'policies'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'policies', 'netblocks.yaml'), 'netblocks:\n  - cidr: 127.0.0.0/8\n    class: local\n');
  const cfg = path.join(dir, 'smarthost.yaml');
  // The harness's relay job (../shared/peers/smarthost.sh), on this script's ports.
  fs.writeFileSync(
    cfg,
    [
      'hostname: relay.bench.invalid',
      'log: { level: info }',
      'spool: { dir: spool, fsync: true, journal: true }',
      'policy: { dir: policies }',
      'accounts: { file: accounts.yaml }',
      `admin: { address: 127.0.0.1, port: ${ADMIN_PORT}, tokenFile: admin.token }`,
      ...(AUTH_JOB ? [`serverTls: { cert: ${tlsFiles().cert}, key: ${tlsFiles().key} }`] : []),
      'listeners:',
      AUTH_JOB
        ? `  - { name: submission, role: submission, address: 127.0.0.1, port: ${IN_PORT}, security: starttls, auth: required, greetDelay: 0ms }`
        : `  - { name: intercept, role: intercept, address: 127.0.0.1, port: ${IN_PORT}, security: none, auth: none, greetDelay: 0ms }`,
      'limits: { maxConnectionsPerIp: 1000 }',
      `relay: { relayhost: { host: 127.0.0.1, port: ${SINK_PORT}, tlsLevel: none } }`,
      'dkim: { enabled: false }',
      `process: { workers: ${Number(values.workers)} }`,
      '',
    ].join('\n'),
  );
  return cfg;
}

async function startSmarthost(): Promise<Running> {
  const dir = path.join(BASE, 'smarthost');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const cfg = smarthostConfig(dir);
  if (AUTH_JOB) {
    // The load generator's MAIL FROM and From: are the account's own address.
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'smarthost.js'), 'account', 'add', AUTH_USER, '--sender', FROM, '--password-stdin', '--config', cfg], { cwd: dir, input: `${AUTH_PASS}\n`, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`smarthost account add failed: ${r.stderr}`);
  }
  // Its log goes to a file, as the harness's does.
  const child = spawn(process.execPath, [...NODE_FLAGS, path.join(ROOT, 'bin', 'smarthost.js'), 'start', '--config', cfg], { cwd: dir, stdio: ['ignore', fs.openSync(path.join(dir, 'out.log'), 'w'), 'inherit'] });
  await waitReady(ADMIN_PORT, child).catch((err: Error) => {
    child.kill('SIGKILL');
    throw new Error(`smarthost: ${err.message}; see ${dir}/out.log`);
  });
  return running(child);
}

const TARGETS: Target[] = [
  { name: 'answer', relays: false, start: () => forked('floor-relay.js', ['--port', String(IN_PORT), '--mode', 'answer', ...tlsArgs()]) },
  { name: 'smtp-layer', relays: false, start: () => forked('floor-smtp-server.js', ['--port', String(IN_PORT)]) },
  { name: 'floor', relays: true, start: () => forked('floor-relay.js', ['--port', String(IN_PORT), '--sink-port', String(SINK_PORT), '--dir', path.join(BASE, 'floor'), ...tlsArgs()]) },
  { name: 'smarthost', relays: true, start: startSmarthost },
  {
    name: 'postfix',
    relays: true,
    async start() {
      const peer = await startPostfix(IN_PORT, SINK_PORT, BASE);
      if (!peer) throw new Error('Postfix did not start (it needs root and the postfix package); leave it out with --only');
      return { pid: peer.pid, stop: () => peer.stop() };
    },
  },
];

/** smtp-sink with running counters (-c): the last "mesg=N" it printed. */
class Sink {
  private out = '';
  private readonly child: ChildProcess;
  constructor() {
    const root = process.getuid?.() === 0;
    this.child = spawn(SMTP_SINK, [...(root ? ['-u', 'nobody'] : []), '-c', '-m', '1024', `127.0.0.1:${SINK_PORT}`, '1024'], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.child.stdout!.on('data', (d: Buffer) => {
      this.out = (this.out + d.toString('latin1')).slice(-200);
    });
  }
  get pid(): number {
    return this.child.pid!;
  }
  get count(): number {
    const all = [...this.out.matchAll(/mesg=(\d+)/g)];
    return all.length ? Number(all[all.length - 1]![1]) : 0;
  }
  stop(): void {
    this.child.kill();
  }
}

function source(count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = AUTH_JOB
      ? spawn(process.execPath, [AUTH_LOAD, '--port', String(IN_PORT), '--count', String(count), '--conc', '20', '--size', '4096', '--user', AUTH_USER, '--pass', AUTH_PASS, '--from', FROM, '--to', TO], { stdio: ['ignore', 'inherit', 'pipe'], timeout: 600_000 })
      : spawn(SMTP_SOURCE, ['-s', '20', '-l', '4096', '-m', String(count), '-f', FROM, '-t', TO, `127.0.0.1:${IN_PORT}`], { stdio: 'inherit', timeout: 600_000 });
    // smtp-auth-load prints a summary line per run on stderr: shown only when it failed.
    let said = '';
    c.stderr?.on('data', (d: Buffer) => (said = (said + d.toString()).slice(-500)));
    c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${AUTH_JOB ? 'smtp-auth-load' : 'smtp-source'} exited ${code} ${said.trim()}`))));
  });
}

interface Run {
  accept: number;
  e2e: number;
  cpuMs: number;
  /** Peak PSS of the target's process tree during the timed part, sampled every 250 ms. */
  pssMiB: number;
  /** The load generator's and the sink's CPU per message: they share the machine with the target. */
  loadCpuMs: number;
  sinkCpuMs: number;
  /** The whole machine's busy share during the timed part (100 = every core). */
  busyPct: number;
}

async function runOnce(t: Target, sink: Sink): Promise<Run> {
  const target = await t.start();
  try {
    const base = sink.count;
    await source(WARMUP);
    if (t.relays) await waitUntil('the warm-up at the sink', () => sink.count >= base + WARMUP, 60_000, POLL_MS);
    const cpu0 = treeCpuMs(target.pid);
    const perProc0 = new Map(treePids(target.pid).map((p) => [p, procCpuMs(p)]));
    const from = sink.count;
    let pss = treePssKb(target.pid);
    const sampler = setInterval(() => (pss = Math.max(pss, treePssKb(target.pid))), 250);
    const load0 = reapedChildrenCpuMs();
    const sink0 = procCpuMs(sink.pid);
    const machine0 = machineCpuMs();
    const t0 = performance.now();
    await source(N);
    const t1 = performance.now();
    const load = reapedChildrenCpuMs() - load0;
    if (t.relays) await waitUntil('every message at the sink', () => sink.count >= from + N, 120_000, POLL_MS);
    const t2 = performance.now();
    clearInterval(sampler);
    const cpu = treeCpuMs(target.pid) - cpu0;
    const machine1 = machineCpuMs();
    const busyPct = (100 * (machine1.busy - machine0.busy)) / Math.max(1, machine1.total - machine0.total);
    const sinkCpu = procCpuMs(sink.pid) - sink0;
    if (t.name === 'smarthost' && perProc0.size > 1) {
      const split = [...perProc0].map(([p, c0]) => `${p === target.pid ? 'primary' : `pid ${p}`} ${((procCpuMs(p) - c0) / N).toFixed(3)}`);
      console.log(`  cpu ms/msg per process: ${split.join(', ')}`);
    }
    return { accept: (N / (t1 - t0)) * 1000, e2e: (N / ((t.relays ? t2 : t1) - t0)) * 1000, cpuMs: cpu / N, pssMiB: pss / 1024, loadCpuMs: load / N, sinkCpuMs: sinkCpu / N, busyPct };
  } finally {
    await target.stop();
  }
}

async function main(): Promise<void> {
  const only = values.only ? new Set(values.only.split(',')) : undefined;
  // The STARTTLS + AUTH job: no smtp-layer target (its server has no TLS) and no Postfix (the harness has Postfix + Dovecot).
  const targets = TARGETS.filter((t) => (!only || only.has(t.name)) && (!AUTH_JOB || !['smtp-layer', 'postfix'].includes(t.name)));
  console.log(`bench:floor${AUTH_JOB ? ' --job auth (STARTTLS + AUTH PLAIN, a handshake per message)' : ''} N=${N} (after ${WARMUP}), 20 sessions, 4 KB, ${ROUNDS} rounds; ${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, node ${process.version}; dir ${BASE} (${FS_TYPE})`);
  const sink = new Sink();
  const runs = new Map<string, Run[]>(targets.map((t) => [t.name, []]));
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const t of targets) {
        const r = await runOnce(t, sink);
        runs.get(t.name)!.push(r);
        console.log(`round ${round} ${t.name.padEnd(11)} accept ${r.accept.toFixed(0).padStart(6)}  e2e ${r.e2e.toFixed(0).padStart(6)} msgs/s  cpu ${r.cpuMs.toFixed(3)} ms/msg  pss ${r.pssMiB.toFixed(0)} MiB  load ${r.loadCpuMs.toFixed(3)} sink ${r.sinkCpuMs.toFixed(3)} ms/msg  machine ${r.busyPct.toFixed(0)} % busy`);
      }
    }
  } finally {
    sink.stop();
    fs.rmSync(BASE, { recursive: true, force: true });
  }
  console.log(`\nmedians of ${ROUNDS}:`);
  const med = (name: string, f: (r: Run) => number) => (runs.has(name) ? percentile(runs.get(name)!.map(f), 50) : NaN);
  const pf = { e2e: med('postfix', (r) => r.e2e), cpu: med('postfix', (r) => r.cpuMs) };
  const ratio = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '-');
  console.log(`${'target'.padEnd(12)}${'e2e msgs/s'.padStart(11)}${'cpu ms/msg'.padStart(12)}${'peak PSS MiB'.padStart(14)}${'× Postfix msgs/s'.padStart(18)}${'CPU ÷ Postfix'.padStart(15)}${'load+sink ms/msg'.padStart(18)}${'busy %'.padStart(8)}${'cores full at'.padStart(15)}`);
  for (const t of targets) {
    const e2e = med(t.name, (r) => r.e2e);
    const cpu = med(t.name, (r) => r.cpuMs);
    const pssMiB = med(t.name, (r) => r.pssMiB);
    const others = med(t.name, (r) => r.loadCpuMs + r.sinkCpuMs);
    // The rate at which the target, the load generator and the sink together would use every core, at these costs per message.
    const full = (CORES * 1000) / (cpu + others);
    console.log(`${t.name.padEnd(12)}${e2e.toFixed(0).padStart(11)}${cpu.toFixed(3).padStart(12)}${pssMiB.toFixed(0).padStart(14)}${ratio(e2e / pf.e2e).padStart(18)}${ratio(cpu / pf.cpu).padStart(15)}${others.toFixed(3).padStart(18)}${med(t.name, (r) => r.busyPct).toFixed(0).padStart(8)}${full.toFixed(0).padStart(15)}`);
  }
  console.log(`(load+sink: the load generator's and smtp-sink's CPU per message; cores full at: ${CORES} × 1000 ms ÷ (cpu + load+sink), the rate no target can pass on this machine at its own cost per message)`);
}

main().catch((err: Error) => {
  console.error(`bench:floor: ${err.message}`);
  process.exit(1);
});

