/**
 * `npm run bench`: the end-to-end benchmark, all in one process tree on
 * loopback, one scenario after the other, so the ratios compare like with
 * like on whatever machine runs it:
 *   limit       load generator straight into the sink (the ceiling)
 *   postfix     the peer: a private Postfix instance relaying to the sink
 *               (same load generator, same sink, same machine, same run)
 *   relay       intercept listener, netblock gate, spool with fsync, relay to the sink
 *   full        + default policy (DNSBL answered by a local DNS server) + DKIM RSA-2048
 *   submission  STARTTLS + AUTH PLAIN clients, full pipeline
 *   ed25519     full pipeline signing with Ed25519
 *   full-half   full pipeline at half its measured rate (accept latency under load)
 *   full-procs  full pipeline, one gateway process per core (primary + workers)
 *   full-1core  full pipeline, one gateway process pinned to one CPU (taskset):
 *               the denominator of the all-cores / one-core ratio
 * Each gateway first takes --warmup messages (not counted: V8 compiles the
 * hot paths during the first thousand or so), then the measured --n.
 *   idle        10,000 idle connections held: the gateway's PSS before and after
 * Flags: --n N --warmup W --c C --per-session K --only a,b --workers W --idle N --out FILE
 *        --dir DIR (where spools and queues live; default os.tmpdir()) --allow-tmpfs
 *
 * Fairness (printed at the start of every run): the gateway runs at the
 * product's default log level (info: a line per reception and per delivery,
 * written to a file like Postfix's maillog); both relays deliver 20
 * messages in parallel to the one destination; both fsync before the 250;
 * memory is PSS summed over each process tree; the spool's filesystem is
 * checked and printed, and tmpfs (no disk, fsync free) is refused unless
 * --allow-tmpfs says otherwise.
 */
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { dkimKeygen } from '../src/dkim/cli';
import { startDnsServer, type TestDns } from '../test/helpers/dns-server';
import { prepareGateway } from '../test/helpers/gateway';
import { freePort } from '../test/helpers/process';
import type { LoadOptions, LoadResult } from './loadgen';
import { diskOrExit } from './disk';
import { percentile, treeCpuMs, treePssKb, waitReady } from './proc';
import { BENCH_POLICY_FILES } from './policy-fixture';
import { POSTFIX_DESTINATION_CONCURRENCY, POSTFIX_IN_FLOW_DELAY, startPostfix } from './postfix-peer';
import { holdIdle } from './idle';

interface ScenarioResult {
  name: string;
  messages: number;
  concurrency: number;
  accepted: number;
  failed: number;
  acceptedPerSec: number;
  deliveredPerSec: number;
  acceptP50: number;
  acceptP99: number;
  e2eP50: number;
  e2eP99: number;
  peakPssMb: number;
  cpuMsPerMsg: number;
  ratioToLimit: number;
  errors: string[];
}

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '10000' },
    warmup: { type: 'string', default: '1000' },
    idle: { type: 'string', default: '10000' },
    c: { type: 'string', default: '20' },
    'per-session': { type: 'string', default: '1' },
    only: { type: 'string' },
    // One process by default: on 2 cores it keeps both busy (RSA signing and fsyncs in the
    // thread pool, the kernel's network and disk work) and beat one process per core, which
    // full-procs measures.
    workers: { type: 'string', default: '1' },
    out: { type: 'string', default: 'bench/results/latest.json' },
    dir: { type: 'string', default: os.tmpdir() },
    'allow-tmpfs': { type: 'boolean', default: false },
  },
});
const N = Number(values.n);
const C = Number(values.c);
const PER = Number(values['per-session']);
const WARMUP = Number(values.warmup);
const IDLE = Number(values.idle);
const WORKERS = Number(values.workers);
const BASE = path.resolve(values.dir!);
/** The gateway's delivery concurrency per destination: Postfix's default_destination_concurrency_limit. */
const DELIVERY_CONCURRENCY = POSTFIX_DESTINATION_CONCURRENCY;
const ROOT = path.resolve(__dirname, '../..');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');

function forkSink(): Promise<{ child: ChildProcess; port: number; ask: (cmd: string) => Promise<{ count: number; e2e?: number[] }> }> {
  const child = fork(path.join(__dirname, 'sink.js'), ['0'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve) => {
    child.once('message', (m: { port: number }) => {
      const ask = (cmd: string) =>
        new Promise<{ count: number; e2e?: number[] }>((res) => {
          child.once('message', (r: { count: number; e2e?: number[] }) => res(r));
          child.send({ cmd });
        });
      resolve({ child, port: m.port, ask });
    });
  });
}

function runLoadgen(o: LoadOptions): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'loadgen.js'), JSON.stringify(o)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', () => {
      try {
        resolve(JSON.parse(out) as LoadResult);
      } catch {
        reject(new Error(`loadgen failed: ${out}`));
      }
    });
  });
}

interface GatewaySetup {
  listener: 'intercept' | 'submission';
  dkim?: 'rsa' | 'ed25519';
  policy: boolean;
  workers: number;
  /** Restrict the whole gateway (every process and thread) to these CPUs (taskset). */
  cpus?: string;
  maxConnections?: number;
}

function loadOptions(target: { port: number; auth?: LoadOptions['auth']; from: string }, messages: number): LoadOptions {
  return { host: '127.0.0.1', port: target.port, messages, concurrency: C, perSession: PER, size: 4096, from: target.from, to: 'sink@sink.bench.test', auth: target.auth, maxMs: 180_000 };
}

/** Until the sink holds every accepted message (bounded): how many it holds. */
async function untilDelivered(sink: Awaited<ReturnType<typeof forkSink>>, accepted: number): Promise<number> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const delivered = (await sink.ask('count')).count;
    if (delivered >= accepted || Date.now() > deadline) return delivered;
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function measure(
  name: string,
  sink: Awaited<ReturnType<typeof forkSink>>,
  target: { port: number; pid?: number; auth?: LoadOptions['auth']; from: string },
  limitRate: number,
  rate?: number,
): Promise<ScenarioResult> {
  if (target.pid && WARMUP > 0) {
    // Steady state, not start-up: a gateway runs for months, and the first
    // thousand messages mostly pay for V8 compiling the hot paths.
    await sink.ask('reset');
    const w = await runLoadgen({ ...loadOptions(target, WARMUP), rate });
    await untilDelivered(sink, w.accepted);
  }
  await sink.ask('reset');
  const cpu0 = target.pid ? treeCpuMs(target.pid) : 0;
  let peakKb = target.pid ? treePssKb(target.pid) : 0;
  const sampler = setInterval(() => {
    if (target.pid) peakKb = Math.max(peakKb, treePssKb(target.pid));
  }, 100);
  const t0 = Date.now();
  const load = await runLoadgen({ ...loadOptions(target, N), rate });
  const delivered = await untilDelivered(sink, load.accepted);
  const tEnd = Date.now();
  clearInterval(sampler);
  const cpuMs = target.pid ? treeCpuMs(target.pid) - cpu0 : 0;
  const { e2e = [] } = await sink.ask('latencies');
  const acceptedPerSec = (load.accepted / load.elapsedMs) * 1000;
  return {
    name,
    messages: N,
    concurrency: C,
    accepted: load.accepted,
    failed: load.failed,
    acceptedPerSec,
    deliveredPerSec: (delivered / (tEnd - t0)) * 1000,
    acceptP50: percentile(load.acceptLatencyMs, 50),
    acceptP99: percentile(load.acceptLatencyMs, 99),
    e2eP50: percentile(e2e, 50),
    e2eP99: percentile(e2e, 99),
    peakPssMb: peakKb / 1024,
    cpuMsPerMsg: load.accepted ? cpuMs / load.accepted : 0,
    ratioToLimit: limitRate ? ((delivered / (tEnd - t0)) * 1000) / limitRate : 1,
    errors: load.errors,
  };
}

async function withGateway<T>(setup: GatewaySetup, sinkPort: number, dns: TestDns, fn: (g: { port: number; pid: number }) => Promise<T>): Promise<T> {
  const port = await freePort();
  const adminPort = await freePort();
  const keysDir = await fsp.mkdtemp(path.join(BASE, 'smarthost-bench-keys-'));
  if (setup.dkim) {
    for (const domain of ['bench.test', 'isp.test']) {
      const r = await dkimKeygen({ keysDir, domain, selector: `b${setup.dkim}`, algo: setup.dkim, activeFrom: new Date(Date.now() - 60_000) });
      dns.set(r.dnsName, 'TXT', [r.txtRecord]);
    }
  }
  const { dir, configFile } = await prepareGateway({
    baseDir: BASE,
    policyFiles: setup.policy ? BENCH_POLICY_FILES(dns.server) : {},
    config: {
      log: { level: PRODUCT_LOG_LEVEL },
      listeners: [
        setup.listener === 'intercept'
          ? { name: 'intercept', role: 'intercept', address: '127.0.0.1', port, security: 'none', greetDelay: '0ms' }
          : { name: 'submission', role: 'submission', address: '127.0.0.1', port, security: 'starttls' },
      ],
      limits: { maxConnectionsPerIp: 1000, maxConnections: setup.maxConnections ?? 5000 },
      admin: { address: '127.0.0.1', port: adminPort, token: 'bench' },
      relay: { relayhost: { host: '127.0.0.1', port: sinkPort, tlsLevel: 'none' }, dns: { servers: [dns.server] }, concurrencyPerDestination: DELIVERY_CONCURRENCY, maxConnections: 100 },
      dkim: setup.dkim ? { keysDir, signingDomain: 'bench.test' } : { enabled: false },
      ...(setup.workers > 1 ? { process: { workers: setup.workers } } : {}),
    },
  });
  // BENCH_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof", profiles the gateway.
  const nodeArgs = process.env.BENCH_NODE_ARGS ? process.env.BENCH_NODE_ARGS.split(' ') : [];
  const argv = [...nodeArgs, CLI, 'start', '--config', configFile];
  // The log goes to a file on the spool's filesystem, as Postfix's maillog does.
  const logFd = openSync(path.join(dir, 'smarthost.log'), 'a');
  const stdio: ['ignore', number, 'inherit'] = ['ignore', logFd, 'inherit'];
  // taskset execs node in place, so child.pid is the gateway's own pid.
  const child = setup.cpus ? spawn('taskset', ['-c', setup.cpus, process.execPath, ...argv], { stdio }) : spawn(process.execPath, argv, { stdio });
  closeSync(logFd);
  try {
    await waitReady(adminPort, child);
    return await fn({ port, pid: child.pid! });
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.rm(keysDir, { recursive: true, force: true });
  }
}

/** The product's default log level (the embedded defaults say `log: { level: info }`). */
const PRODUCT_LOG_LEVEL = 'info';

function smtpSourceLimit(): number | undefined {
  // Reference only: Postfix's smtp-source into smtp-sink, to show our load generator is not the bottleneck.
  const probe = spawnSync('which', ['smtp-source']);
  if (probe.status !== 0) return undefined;
  const port = 20000 + Math.floor(Math.random() * 20000);
  const sink = spawn('smtp-sink', ['-u', 'nobody', `127.0.0.1:${port}`, '1000'], { stdio: 'ignore' });
  spawnSync('sleep', ['0.3']);
  const t0 = Date.now();
  const r = spawnSync('smtp-source', ['-s', String(C), '-l', '4096', '-m', String(N), '-f', 'a@bench.test', '-t', 'b@sink.bench.test', `127.0.0.1:${port}`], { timeout: 60_000 });
  const ms = Date.now() - t0;
  sink.kill();
  return r.status === 0 ? (N / ms) * 1000 : undefined;
}

function fmt(r: ScenarioResult): string {
  const f = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '-');
  return [r.name.padEnd(11), f(r.acceptedPerSec).padStart(7), f(r.deliveredPerSec).padStart(7), `${f(r.acceptP50, 1)}/${f(r.acceptP99, 1)}`.padStart(11), `${f(r.e2eP50, 0)}/${f(r.e2eP99, 0)}`.padStart(11), f(r.peakPssMb).padStart(6), f(r.cpuMsPerMsg, 2).padStart(6), f(r.ratioToLimit, 3).padStart(6), r.failed ? ` failed=${r.failed} ${r.errors[0] ?? ''}` : ''].join('  ');
}

async function main(): Promise<void> {
  const only = values.only ? new Set(values.only.split(',')) : undefined;
  const want = (s: string) => !only || only.has(s);
  const fs = diskOrExit('bench', BASE, values['allow-tmpfs']!);
  const sink = await forkSink();
  const dns = await startDnsServer();
  const results: ScenarioResult[] = [];
  console.log(`smarthost bench: N=${N} C=${C} per-session=${PER} workers=${WORKERS} on ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), node ${process.version}`);
  console.log('fairness:');
  console.log(`  spools and queues: ${BASE} (${fs}); both fsync before the 250 (smarthost: spool.fsync + journal group commit)`);
  console.log(`  logging: smarthost at its default level (${PRODUCT_LOG_LEVEL}) to a file; Postfix at its default to its maillog file`);
  console.log(`  delivery: ${DELIVERY_CONCURRENCY} parallel deliveries per destination for both (Postfix default_destination_concurrency_limit)`);
  console.log(`  Postfix in_flow_delay = ${POSTFIX_IN_FLOW_DELAY} (its default: paces acceptance to delivery)`);
  console.log(`  memory: peak PSS of each process tree (shared pages split between sharers), sampled every 100 ms`);
  const ref = smtpSourceLimit();
  if (ref) console.log(`reference: Postfix smtp-source → smtp-sink ${ref.toFixed(0)} msgs/s`);
  console.log(`${'scenario'.padEnd(11)}  ${'acc/s'.padStart(7)}  ${'dlv/s'.padStart(7)}  ${'acc p50/p99'.padStart(11)}  ${'e2e p50/p99'.padStart(11)}  ${'PSS MB'.padStart(6)}  ${'cpu/ms'.padStart(6)}  ${'ratio'.padStart(6)}`);
  const limit = await measure('limit', sink, { port: sink.port, from: 'load@bench.test' }, 0);
  results.push(limit);
  console.log(fmt(limit));
  const L = limit.deliveredPerSec;
  if (want('postfix')) {
    const peer = await startPostfix(await freePort(), sink.port, BASE);
    if (!peer) console.log('postfix      (not measured: Postfix is not installed here or needs root)');
    else {
      try {
        const r = await measure('postfix', sink, { port: peer.port, pid: peer.pid, from: 'load@bench.test' }, L);
        results.push(r);
        console.log(fmt(r));
      } finally {
        await peer.stop();
      }
    }
  }
  const scenarios: Array<[string, GatewaySetup, { from: string; auth?: LoadOptions['auth'] }]> = [
    ['relay', { listener: 'intercept', policy: false, workers: WORKERS }, { from: 'load@bench.test' }],
    ['full', { listener: 'intercept', policy: true, dkim: 'rsa', workers: WORKERS }, { from: 'load@bench.test' }],
    ['submission', { listener: 'submission', policy: true, dkim: 'rsa', workers: WORKERS }, { from: 'alice@isp.test', auth: { user: 'alice@isp.test', pass: 'alice-secret-1' } }],
    ['ed25519', { listener: 'intercept', policy: true, dkim: 'ed25519', workers: WORKERS }, { from: 'load@bench.test' }],
    // One gateway process per core, for comparison with the default (one process, thread pool).
    ...(os.availableParallelism() > 1 && WORKERS === 1
      ? ([['full-procs', { listener: 'intercept', policy: true, dkim: 'rsa', workers: os.availableParallelism() }, { from: 'load@bench.test' }]] as Array<[string, GatewaySetup, { from: string }]>)
      : []),
    // One core: one process, pinned to CPU 0 with its threads (the load generator and sink run where the kernel puts them).
    ['full-1core', { listener: 'intercept', policy: true, dkim: 'rsa', workers: 1, cpus: '0' }, { from: 'load@bench.test' }],
  ];
  for (const [name, setup, who] of scenarios) {
    if (!want(name)) continue;
    const r = await withGateway(setup, sink.port, dns, (g) => measure(name, sink, { port: g.port, pid: g.pid, ...who }, L));
    results.push(r);
    console.log(fmt(r));
    if (name === 'full' && want('full-half')) {
      const half = await withGateway(setup, sink.port, dns, (g) => measure('full-half', sink, { port: g.port, pid: g.pid, ...who }, L, r.acceptedPerSec / 2));
      results.push(half);
      console.log(fmt(half));
    }
  }
  let idle: Awaited<ReturnType<typeof holdIdle>>[] = [];
  if (want('idle')) {
    // Memory: 10,000 idle sessions (greeted, then silent), one process and all of them (PSS).
    for (const workers of [...new Set([1, WORKERS])]) {
      const r = await withGateway({ listener: 'intercept', policy: false, workers, maxConnections: IDLE + 100 }, sink.port, dns, (g) => holdIdle(g.port, g.pid, IDLE, workers));
      idle = [...idle, r];
      console.log(`idle        ${r.connections} connections held by ${workers} process(es): PSS ${r.pssBeforeMb.toFixed(0)} → ${r.pssAfterMb.toFixed(0)} MB (${r.kbPerConnection.toFixed(1)} KB each)${r.failed ? `, ${r.failed} failed` : ''}`);
    }
  }
  const zen = dns.queries.filter((q) => q.includes('zen.spamhaus.org')).length;
  console.log(`local DNS answered ${zen} DNSBL queries (the rest came from the gateways' caches)`);
  const full = results.find((r) => r.name === 'full');
  const one = results.find((r) => r.name === 'full-1core');
  if (full && one) console.log(`all-cores / one-core (full, delivered): ${(full.deliveredPerSec / one.deliveredPerSec).toFixed(2)}`);
  const pf = results.find((r) => r.name === 'postfix');
  if (pf) {
    const vs = (n: string) => results.find((r) => r.name === n);
    const line = ['relay', 'full', 'submission', 'ed25519'].flatMap((n) => (vs(n) ? [`${n} ${(vs(n)!.deliveredPerSec / pf.deliveredPerSec).toFixed(2)}×`] : []));
    console.log(`versus Postfix (delivered msgs/s, same run): ${line.join(', ')}`);
  }
  const out = path.resolve(ROOT, values.out!);
  await fsp.mkdir(path.dirname(out), { recursive: true });
  await fsp.writeFile(
    out,
    `${JSON.stringify({ date: new Date().toISOString(), machine: { cores: os.cpus().length, cpu: os.cpus()[0]?.model, memGb: Math.round(os.totalmem() / 2 ** 30), node: process.version }, params: { N, C, perSession: PER, workers: WORKERS, warmup: WARMUP, spoolFs: fs, logLevel: PRODUCT_LOG_LEVEL, deliveryConcurrency: DELIVERY_CONCURRENCY, postfixInFlowDelay: POSTFIX_IN_FLOW_DELAY }, reference: { smtpSourceToSink: ref }, results, idle }, null, 2)}\n`,
  );
  console.log(`results written to ${out.startsWith(ROOT) ? path.relative(ROOT, out) : out}`);
  sink.child.send({ cmd: 'exit' });
  await dns.close();
}

void main().then(
  () => process.exit(0),
  (err: Error) => {
    console.error(err);
    process.exit(1);
  },
);
