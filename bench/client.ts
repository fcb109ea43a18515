/**
 * The outbound SMTP client alone: CPU per message of src/relay/client.ts
 * relaying into Postfix's smtp-sink on loopback, the way the delivery agent
 * uses it (C pooled sessions, RSET between transactions, one 4 KB message and
 * one recipient per transaction). Bounded: N messages, then it stops.
 *
 *   node dist/bench/client.js [--n 20000] [--c 20] [--no-pipelining]
 *
 * Prints msgs/s and this process's CPU ms per message (user + system,
 * process.cpuUsage), after a warm-up of N/10 messages (V8 compiling).
 * Run it with --cpu-prof to see where the client's time goes.
 */
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { closeSession, openSession, resetSession, sendOnSession, type Session } from '../src/relay/client';
import { freePort } from '../test/helpers/process';

const { values } = parseArgs({ options: { n: { type: 'string' }, c: { type: 'string' }, 'no-pipelining': { type: 'boolean' } } });
const N = Number(values.n ?? 20_000);
const C = Number(values.c ?? 20);
const BODY = Buffer.from(`From: a@bench.test\r\nTo: b@sink.bench.test\r\nSubject: bench\r\n\r\n${'x'.repeat(76).concat('\r\n').repeat(52)}`);

async function waitListening(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('smtp-sink did not start');
}

async function run(port: number, count: number): Promise<{ sent: number; failed: number }> {
  const target = { host: 'sink.bench.test', ip: '127.0.0.1', port, tls: 'none' as const };
  const settings = { name: 'bench.test', connectTimeoutMs: 5000, greetingTimeoutMs: 5000, socketTimeoutMs: 10_000, dataTimeoutMs: 180_000, minDataRate: 16 * 1024, dataDoneTimeoutMs: 600_000 };
  let next = 0;
  let sent = 0;
  let failed = 0;
  const worker = async (): Promise<void> => {
    let s: Session | undefined;
    while (next < count) {
      next++;
      if (s && !(await resetSession(s))) {
        closeSession(s);
        s = undefined;
      }
      if (!s) {
        const r = await openSession(target, settings);
        if (!r.ok) throw new Error(`open: ${r.err.message}`);
        s = r.session;
      }
      const res = await sendOnSession(s, { from: 'a@bench.test', to: ['b@sink.bench.test'], size: BODY.length, smtpUtf8: false }, () => Readable.from([BODY]));
      if (res.accepted.size === 1) sent++;
      else failed++;
      if (!res.reusable) {
        closeSession(s);
        s = undefined;
      }
    }
    if (s) closeSession(s);
  };
  await Promise.all(Array.from({ length: C }, worker));
  return { sent, failed };
}

async function main(): Promise<void> {
  if (spawnSync('which', ['smtp-sink']).status !== 0) throw new Error('smtp-sink not found (sh scripts/test-setup.sh installs Postfix)');
  const port = await freePort();
  const args = ['-u', 'nobody', ...(values['no-pipelining'] ? ['-p'] : []), `127.0.0.1:${port}`, '1000'];
  const sink = spawn('smtp-sink', args, { stdio: 'ignore' });
  try {
    await waitListening(port);
    await run(port, Math.ceil(N / 10));
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const r = await run(port, N);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const cpu = process.cpuUsage(cpu0);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    console.log(
      `client → smtp-sink${values['no-pipelining'] ? ' (no PIPELINING)' : ''}: N=${N} C=${C} sent=${r.sent} failed=${r.failed} ` +
        `${((r.sent / ms) * 1000).toFixed(0)} msgs/s, CPU ${(cpuMs / N).toFixed(3)} ms/msg (user ${(cpu.user / 1000 / N).toFixed(3)}, system ${(cpu.system / 1000 / N).toFixed(3)})`,
    );
  } finally {
    sink.kill();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
