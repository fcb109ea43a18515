/**
 * DKIM signing throughput: smarthost's signer (node:crypto, parsed keys
 * cached, private-key operation on libuv's thread pool) against mailauth's
 * dkimSign (the baseline: re-parses the PEM per call, signs on the event
 * loop), for RSA-2048, Ed25519 and dual signing, on 4 KB messages.
 *
 * Saturation: messages/s with DKIM_BENCH_CONCURRENCY in flight (each
 * "dual" message carries two signatures) and the event loop's utilisation.
 * Fixed load (DKIM_BENCH_RATE msgs/s, under both ceilings): sign latency
 * and event-loop delay, which is what the SMTP sessions feel. Bounded:
 * DKIM_BENCH_SECONDS per case (default 3).
 *
 *   node dist/bench/dkim.js
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import pino from 'pino';
import { dkimSign } from 'mailauth/lib/dkim/sign';
import { dkimKeygen } from '../src/dkim/cli';
import { DEFAULT_SIGNED_HEADERS } from '../src/dkim/config';
import { createSigner } from '../src/dkim/sign';
import type { SigningRequest } from '../src/dkim/types';

const SECONDS = Number(process.env.DKIM_BENCH_SECONDS ?? 3);
const CONCURRENCY = Number(process.env.DKIM_BENCH_CONCURRENCY ?? 32);
const RATE = Number(process.env.DKIM_BENCH_RATE ?? 200);

function message4k(): Buffer {
  const head =
    'Received: from [192.0.2.10] (helo=pc) by smarthost.isp.example with ESMTPSA id 4a1b2c;\r\n Mon, 1 Jan 2024 10:00:00 +0000\r\n' +
    'From: Alice <alice@rsa.example>\r\nTo: Bob <bob@remote.example>\r\nSubject: Quarterly report\r\n' +
    'Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <abc123@rsa.example>\r\nMIME-Version: 1.0\r\n' +
    'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n';
  let body = '';
  const line = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n';
  while (head.length + body.length + line.length <= 4096) body += line;
  return Buffer.from(head + body);
}

interface Row {
  name: string;
  msgsPerSec: number;
  sigsPerSec: number;
  elu: number;
  p99DelayMs: number;
  maxDelayMs: number;
}

async function run(name: string, sigsPerMsg: number, once: () => Promise<unknown>): Promise<Row> {
  for (let i = 0; i < 20; i++) await once(); // warm up
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  const elu0 = performance.eventLoopUtilization();
  const start = performance.now();
  const deadline = start + SECONDS * 1000;
  let n = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < deadline) {
        await once();
        n++;
      }
    }),
  );
  const secs = (performance.now() - start) / 1000;
  const elu = performance.eventLoopUtilization(elu0).utilization;
  h.disable();
  return { name, msgsPerSec: n / secs, sigsPerSec: (n * sigsPerMsg) / secs, elu, p99DelayMs: h.percentile(99) / 1e6, maxDelayMs: h.max / 1e6 };
}

interface RateRow {
  name: string;
  p50Ms: number;
  p99Ms: number;
  loopP99Ms: number;
  loopMaxMs: number;
}

/** Offer `RATE` messages/s for SECONDS; measure sign latency and event-loop delay. */
async function atRate(name: string, once: () => Promise<unknown>): Promise<RateRow> {
  for (let i = 0; i < 20; i++) await once();
  const h = monitorEventLoopDelay({ resolution: 2 });
  h.enable();
  const lat: number[] = [];
  const pending = new Set<Promise<void>>();
  const start = performance.now();
  const end = start + SECONDS * 1000;
  let sent = 0;
  while (performance.now() < end) {
    const due = Math.floor(((performance.now() - start) / 1000) * RATE);
    while (sent < due) {
      sent++;
      const t = performance.now();
      const p: Promise<void> = once().then(() => {
        lat.push(performance.now() - t);
        pending.delete(p);
      });
      pending.add(p);
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  await Promise.all(pending);
  h.disable();
  lat.sort((a, b) => a - b);
  const q = (f: number) => lat[Math.min(lat.length - 1, Math.floor(lat.length * f))]!;
  return { name, p50Ms: q(0.5), p99Ms: q(0.99), loopP99Ms: h.percentile(99) / 1e6, loopMaxMs: h.max / 1e6 };
}

/** Signing requests from a client authorised for the domain (the bench measures signing, not authorisation). */
const signAs = (domain: string): SigningRequest => ({ headerFromDomain: domain, authority: { authorises: (d) => (d === domain ? 'bench' : undefined), summary: 'bench' } });

async function main(): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'smarthost-dkim-bench-'));
  try {
    const activeFrom = new Date(Date.now() - 60_000);
    const rsa = await dkimKeygen({ keysDir: dir, domain: 'rsa.example', selector: 'r', algo: 'rsa', activeFrom });
    const ed = await dkimKeygen({ keysDir: dir, domain: 'ed.example', selector: 'e', algo: 'ed25519', activeFrom });
    const dualR = await dkimKeygen({ keysDir: dir, domain: 'dual.example', selector: 'r', algo: 'rsa', activeFrom });
    const dualE = await dkimKeygen({ keysDir: dir, domain: 'dual.example', selector: 'e', algo: 'ed25519', activeFrom });
    const pem = async (p: string) => fs.readFile(p, 'utf8');
    const [rsaPem, edPem, dualRPem, dualEPem] = await Promise.all([rsa, ed, dualR, dualE].map((k) => pem(k.privateKeyPath)));

    const signer = await createSigner(
      { enabled: true, keysDir: dir, unsignedPolicy: 'pass', headers: [...DEFAULT_SIGNED_HEADERS], internalHosts: [] },
      pino({ level: 'silent' }),
    );
    const msg = message4k();
    const chunks = [msg];
    const headerList = 'From:From:To:Subject:Date:Message-ID:MIME-Version:Content-Type:Content-Transfer-Encoding';
    const ma = (signatureData: Array<{ signingDomain: string; selector: string; privateKey: string }>) => () =>
      // mailauth 4.13 typings describe a single key; the implementation takes signatureData[].
      dkimSign(msg, { canonicalization: 'relaxed/relaxed', headerList, signatureData } as unknown as Parameters<typeof dkimSign>[1]);

    console.log(`DKIM signing, ${msg.length}-byte messages, ${CONCURRENCY} in flight, ${SECONDS}s per case, ${os.cpus().length} CPUs, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? '4 (default)'}`);
    const rows: Row[] = [];
    rows.push(await run('smarthost RSA-2048', 1, () => signer.sign(chunks, signAs('rsa.example'))));
    rows.push(await run('smarthost Ed25519', 1, () => signer.sign(chunks, signAs('ed.example'))));
    rows.push(await run('smarthost dual', 2, () => signer.sign(chunks, signAs('dual.example'))));
    rows.push(await run('mailauth RSA-2048', 1, ma([{ signingDomain: 'rsa.example', selector: 'r', privateKey: rsaPem! }])));
    rows.push(await run('mailauth Ed25519', 1, ma([{ signingDomain: 'ed.example', selector: 'e', privateKey: edPem! }])));
    rows.push(
      await run('mailauth dual', 2, ma([
        { signingDomain: 'dual.example', selector: 'r', privateKey: dualRPem! },
        { signingDomain: 'dual.example', selector: 'e', privateKey: dualEPem! },
      ])),
    );
    const rateRows: RateRow[] = [];
    rateRows.push(await atRate('smarthost RSA-2048', () => signer.sign(chunks, signAs('rsa.example'))));
    rateRows.push(await atRate('smarthost dual', () => signer.sign(chunks, signAs('dual.example'))));
    rateRows.push(await atRate('mailauth RSA-2048', ma([{ signingDomain: 'rsa.example', selector: 'r', privateKey: rsaPem! }])));
    rateRows.push(
      await atRate('mailauth dual', ma([
        { signingDomain: 'dual.example', selector: 'r', privateKey: dualRPem! },
        { signingDomain: 'dual.example', selector: 'e', privateKey: dualEPem! },
      ])),
    );
    await signer.close();
    const pad = (s: string, n: number) => s.padEnd(n);
    console.log(`${pad('case', 22)}${pad('msgs/s', 10)}${pad('sigs/s', 10)}${pad('loop busy', 11)}loop delay p99 / max`);
    for (const r of rows) {
      console.log(`${pad(r.name, 22)}${pad(r.msgsPerSec.toFixed(0), 10)}${pad(r.sigsPerSec.toFixed(0), 10)}${pad(`${(r.elu * 100).toFixed(0)}%`, 11)}${r.p99DelayMs.toFixed(1)} / ${r.maxDelayMs.toFixed(1)} ms`);
    }
    console.log(`\nat a fixed ${RATE} msgs/s:`);
    console.log(`${pad('case', 22)}${pad('sign p50 / p99', 20)}loop delay p99 / max`);
    for (const r of rateRows) {
      console.log(`${pad(r.name, 22)}${pad(`${r.p50Ms.toFixed(2)} / ${r.p99Ms.toFixed(2)} ms`, 20)}${r.loopP99Ms.toFixed(1)} / ${r.loopMaxMs.toFixed(1)} ms`);
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
