/**
 * Scenario: crash safety with `process.workers: 2`. The primary (queue,
 * recovery) and both workers (listeners, first delivery attempts) are
 * SIGKILLed at once, 3 times over 1,000 messages, mid-DATA and
 * mid-delivery. Every message that got a 250 arrives at the MX at least
 * once; duplicates are counted and reported; no half-written or orphan
 * file is left in the spool after recovery and delivery. (The single
 * process at 2,000 messages and 5 kills: test/e2e/crash.test.ts.)
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { prepareGateway } from '../helpers/gateway';
import { freePort, killTree, spawnGateway } from '../helpers/process';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';
import { OPEN_QUOTAS, sleep } from '../security/util';

const CLIENTS = 24;

describe('crash safety with workers', () => {
  let dns: TestDns;
  let mx: TestMx;
  const dirs: string[] = [];

  before(async () => {
    dns = await startDnsServer();
    mx = await startTestMx({ host: '127.0.0.2', dataDelayMs: 2 });
    dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
    dns.set('mx.dest.test', 'A', ['127.0.0.2']);
  });
  after(async () => {
    await mx.close();
    await dns.close();
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  });

  async function scenario(tag: string, workers: number, total: number, kills: number): Promise<void> {
    const smtpPort = await freePort();
    const adminPort = await freePort();
    const prepared = await prepareGateway({
      policyFiles: { 'quotas.yaml': OPEN_QUOTAS },
      config: {
        process: { workers },
        listeners: [{ name: 'intercept', role: 'intercept', address: '127.0.0.1', port: smtpPort, security: 'none', greetDelay: '0ms' }],
        admin: { address: '127.0.0.1', port: adminPort, token: 'crash-token' },
        limits: { maxConnectionsPerIp: 500 },
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port, backoff: ['200ms'] },
      },
    });
    dirs.push(prepared.dir);
    const spool = path.join(prepared.dir, 'spool');
    const acked = new Set<number>();
    let seq = 0;
    let cut = 0;
    const codes = new Map<number, number>();
    const body = 'z'.repeat(1500);

    const client = async (stopAt: () => boolean) => {
      while (!stopAt() && seq < total) {
        const n = seq++;
        try {
          const c = await RawSmtp.connect(smtpPort, { localAddress: '127.0.0.4' });
          await c.reply(3000);
          await c.cmd('EHLO load.test');
          await c.cmd('MAIL FROM:<load@sender.test>');
          await c.cmd('RCPT TO:<sink@dest.test>');
          const r = await c.data(message({ from: 'load@sender.test', to: 'sink@dest.test', headers: [`X-Tag: ${tag}`, `X-Seq: ${n}`], body }));
          if (r.code === 250) acked.add(n);
          else {
            cut++;
            codes.set(r.code, (codes.get(r.code) ?? 0) + 1);
          }
          c.close();
        } catch {
          cut++;
          codes.set(0, (codes.get(0) ?? 0) + 1);
          await sleep(10);
        }
      }
    };

    let halfWritten = 0;
    const t0 = Date.now();
    for (let round = 0; round < kills; round++) {
      const gw = await spawnGateway(prepared.configFile, adminPort);
      let stop = false;
      const target = Math.round(((round + 1) * total) / kills);
      const loops = Array.from({ length: CLIENTS }, () => client(() => stop));
      const deadline = Date.now() + 8000;
      while (seq < target && Date.now() < deadline) await sleep(5);
      // No new sessions after this point; the ones in flight are cut by the kill.
      stop = true;
      await killTree(gw);
      await Promise.all(loops);
      halfWritten += (await fsp.readdir(path.join(spool, 'tmp'))).length;
    }
    assert.ok(acked.size > total / 4, `enough load went through (${acked.size} acked)`);

    const gw = await spawnGateway(prepared.configFile, adminPort);
    try {
      const seen = new Map<number, number>();
      const deadline = Date.now() + 60_000;
      for (;;) {
        seen.clear();
        for (const m of mx.messages) {
          const text = m.data.toString();
          if (!text.includes(`X-Tag: ${tag}`)) continue;
          const n = Number(/X-Seq: (\d+)/.exec(text)?.[1]);
          seen.set(n, (seen.get(n) ?? 0) + 1);
        }
        const missing = [...acked].filter((n) => !seen.has(n));
        if (missing.length === 0) break;
        if (Date.now() > deadline) assert.fail(`${tag}: ${missing.length} acknowledged messages never arrived: ${missing.slice(0, 10).join(',')}`);
        await sleep(100);
      }
      const duplicates = [...seen.values()].filter((c) => c > 1).length;
      const unacked = [...seen.keys()].filter((n) => !acked.has(n)).length;
      const left = async () => {
        const out: string[] = [];
        for (const d of ['tmp', 'incoming', 'active', 'deferred', 'meta']) for (const f of await fsp.readdir(path.join(spool, d))) out.push(`${d}/${f}`);
        return out;
      };
      const settle = Date.now() + 20_000;
      while ((await left()).length > 0 && Date.now() < settle) await sleep(100);
      assert.deepEqual(await left(), [], 'spool is empty after recovery and delivery');
      assert.ok(!existsSync(path.join(spool, 'corrupt')) || (await fsp.readdir(path.join(spool, 'corrupt'))).length === 0, 'no corrupt queue file');
      console.log(
        `# crash-scale ${tag}: ${seq} attempted, ${acked.size} acknowledged, ${cut} refused or cut ${JSON.stringify(Object.fromEntries(codes))}, ${kills} SIGKILLs, ` +
          `${seen.size} distinct delivered (${unacked} never acknowledged but delivered), ${duplicates} duplicated, ` +
          `${halfWritten} unacknowledged tmp files found after kills (removed by recovery), ${Math.round((Date.now() - t0) / 100) / 10}s`,
      );
    } finally {
      await killTree(gw);
    }
  }

  it('primary + 2 workers: 1,000 messages, 3 SIGKILLs of the whole process tree', async () => {
    await scenario('workers', 2, 1000, 3);
  });
});
