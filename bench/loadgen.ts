/**
 * Load generator process: N messages of a given size over C concurrent
 * sessions (one message per session by default, like smtp-source), plain
 * or STARTTLS + AUTH PLAIN. Measures accept latency (end of DATA → 250)
 * and stamps each message with its send time so the sink can measure
 * end-to-end latency. Prints one JSON line with the results.
 * Run: node dist/bench/loadgen.js '<json options>'
 */
import { LineClient } from './smtp-line-client';

export interface LoadOptions {
  host: string;
  port: number;
  messages: number;
  concurrency: number;
  perSession: number;
  size: number;
  from: string;
  to: string;
  auth?: { user: string; pass: string };
  localAddress?: string;
  /** Stop after this long even if not all were sent (bounded). */
  maxMs: number;
  /** Pause between messages per session, ms (for fixed-rate runs). */
  rate?: number;
}

export interface LoadResult {
  sent: number;
  accepted: number;
  failed: number;
  elapsedMs: number;
  acceptLatencyMs: number[];
  errors: string[];
}

function body(size: number, seq: number, from: string, to: string): Buffer {
  const head = `From: <${from}>\r\nTo: <${to}>\r\nSubject: bench ${seq}\r\nMessage-ID: <bench.${seq}.${process.pid}@bench.test>\r\nDate: ${new Date().toUTCString()}\r\nX-Bench-T: ${Date.now()}\r\n\r\n`;
  const line = `${'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(2).slice(0, 70)}\r\n`;
  let text = head;
  while (text.length + line.length < size) text += line;
  return Buffer.from(`${text}.\r\n`);
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const res: LoadResult = { sent: 0, accepted: 0, failed: 0, elapsedMs: 0, acceptLatencyMs: [], errors: [] };
  const start = Date.now();
  let next = 0;
  const authLine = o.auth ? `AUTH PLAIN ${Buffer.from(`\0${o.auth.user}\0${o.auth.pass}`).toString('base64')}\r\n` : '';
  // With a target rate, each message has a scheduled send time.
  const interval = o.rate ? 1000 / o.rate : 0;
  const session = async () => {
    while (next < o.messages && Date.now() - start < o.maxMs) {
      const batch = Math.min(o.perSession, o.messages - next);
      const first = next;
      next += batch;
      if (interval) {
        const due = start + first * interval;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      let c: LineClient | undefined;
      try {
        c = await LineClient.connect(o.host, o.port, o.localAddress);
        await c.reply();
        await c.cmd('EHLO loadgen.bench.test\r\n', 250);
        if (o.auth) {
          await c.starttls();
          await c.cmd('EHLO loadgen.bench.test\r\n', 250);
          await c.cmd(authLine, 235);
        }
        for (let i = 0; i < batch; i++) {
          const seq = first + i;
          res.sent++;
          await c.cmd(`MAIL FROM:<${o.from}>\r\n`, 250);
          await c.cmd(`RCPT TO:<${o.to}>\r\n`, 250);
          await c.cmd('DATA\r\n', 354);
          const t0 = process.hrtime.bigint();
          await c.cmd(body(o.size, seq, o.from, o.to), 250);
          res.acceptLatencyMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
          res.accepted++;
        }
        c.socket_quit();
      } catch (e) {
        res.failed++;
        if (res.errors.length < 5) res.errors.push((e as Error).message);
        c?.close();
      }
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, session));
  res.elapsedMs = Date.now() - start;
  return res;
}

if (require.main === module) {
  const o = JSON.parse(process.argv[2]!) as LoadOptions;
  void runLoad(o).then((r) => {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    process.exit(0);
  });
}
