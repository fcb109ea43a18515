/**
 * Spool commits per second with the real Spool class on the machine's disk
 * (os.tmpdir()): 4 KB messages written, fdatasync'd, renamed into incoming/
 * and the directory fsync'd, as before every 250. Sequential (one session:
 * the disk's fsync latency is the bound) and with 20 concurrent commits
 * (what a loaded gateway sees: directory syncs are shared, the fdatasyncs
 * overlap in the thread pool), then the same commits with fsync off to show
 * what durability costs. Also the delivered path: move to active/, remove.
 * Then the acceptance journal (src/spool/journal.ts) doing the same job for
 * a message delivered at once: append + shared fdatasync, then a done record.
 * Bounded: N commits per case (default 3,000).
 *
 *   node dist/bench/spool.js [N]
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Envelope } from '../src/envelope';
import { createLogger } from '../src/log';
import { Journal } from '../src/spool/journal';
import { newQueueId } from '../src/spool/queue-id';
import { Spool } from '../src/spool/store';

const N = Number(process.argv[2] ?? 3000);
const BODY = Buffer.alloc(4096, 'x');

function envelope(): Envelope {
  return {
    id: newQueueId(),
    receivedAt: Date.now(),
    client: { listener: 'intercept', role: 'intercept', ip: '127.0.0.1', tls: false },
    mailFrom: 'a@bench.test',
    recipients: ['b@sink.bench.test'],
    size: BODY.length,
    smtpUtf8: false,
    verdicts: [],
  };
}

/** N messages through `one`, `concurrency` at a time: messages/s and CPU per message. */
async function measure(label: string, concurrency: number, one: (env: Envelope) => Promise<void>): Promise<void> {
  let next = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < N) {
        next++;
        await one(envelope());
      }
    }),
  );
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  console.log(`${label.padEnd(34)} ${((N / ms) * 1000).toFixed(0).padStart(7)} msgs/s  ${((cpu.user + cpu.system) / 1000 / N).toFixed(3)} ms CPU each (event loop + thread pool)`);
}

async function run(label: string, fsync: boolean, concurrency: number): Promise<void> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-bench-spool-'));
  const spool = new Spool(dir, { fsync });
  await spool.init();
  await measure(label, concurrency, async (env) => {
    await spool.commit(env, { prefix: Buffer.alloc(0), chunks: [BODY] });
    await spool.move(env.id, 'incoming', 'active', { sync: false });
    await spool.remove(env.id, 'active', { hasMeta: false });
  });
  await fsp.rm(dir, { recursive: true, force: true });
}

async function runJournal(label: string, concurrency: number): Promise<void> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-bench-journal-'));
  const journal = new Journal(dir, 'BENCH000', { fsync: true, logger: createLogger({ level: 'silent', pretty: false }) });
  await journal.init();
  await measure(label, concurrency, async (env) => {
    await journal.append(env, [BODY]);
    journal.done(env.id);
  });
  journal.close();
  await fsp.rm(dir, { recursive: true, force: true });
}

async function main(): Promise<void> {
  console.log(`spool: ${N} × 4 KB commit → active → remove, in ${os.tmpdir()}`);
  await run('fsync, 1 at a time', true, 1);
  await run('fsync, 20 concurrent (group commit)', true, 20);
  await run('no fsync, 20 concurrent', false, 20);
  await runJournal('journal, 1 at a time', 1);
  await runJournal('journal, 20 concurrent (group commit)', 20);
}

void main();
