/**
 * Scenario: the gateway process is SIGKILLed several times while clients
 * are mid-DATA and deliveries are mid-flight. Every message that got a 250
 * must arrive at the MX at least once; duplicates are counted and
 * reported; after recovery no half-written or orphan spool file remains.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { prepareGateway } from '../helpers/gateway';
import { freePort, spawnGateway } from '../helpers/process';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';

const ROUNDS = 4;
const CLIENTS = 16;
const MAX_MESSAGES = 800;

describe('crash safety', () => {
  let dns: TestDns;
  let mx: TestMx;
  let dir: string;

  before(async () => {
    dns = await startDnsServer();
    mx = await startTestMx({ host: '127.0.0.2', dataDelayMs: 5 });
    dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
    dns.set('mx.dest.test', 'A', ['127.0.0.2']);
  });
  after(async () => {
    await mx.close();
    await dns.close();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('delivers every acknowledged message across repeated SIGKILLs', async () => {
    const smtpPort = await freePort();
    const adminPort = await freePort();
    const prepared = await prepareGateway({
      config: {
        listeners: [{ name: 'intercept', role: 'intercept', address: '127.0.0.1', port: smtpPort, tls: 'none', greetDelay: '0ms' }],
        admin: { address: '127.0.0.1', port: adminPort, token: 'crash-token' },
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port, backoff: ['200ms'] },
      },
    });
    dir = prepared.dir;
    const acked = new Set<number>();
    let seq = 0;
    let refusedOrCut = 0;

    const client = async (stopAt: () => boolean) => {
      while (!stopAt() && seq < MAX_MESSAGES) {
        const n = seq++;
        try {
          const c = await RawSmtp.connect(smtpPort, { localAddress: '127.0.0.4' });
          await c.reply(3000);
          await c.cmd('EHLO load.test');
          await c.cmd('MAIL FROM:<load@sender.test>');
          await c.cmd('RCPT TO:<sink@dest.test>');
          const r = await c.data(message({ from: 'load@sender.test', to: 'sink@dest.test', headers: [`X-Seq: ${n}`], body: 'x'.repeat(2000) }));
          if (r.code === 250) acked.add(n);
          else refusedOrCut++;
          c.close();
        } catch {
          refusedOrCut++;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    };

    for (let round = 0; round < ROUNDS; round++) {
      const gw = await spawnGateway(prepared.configFile, adminPort);
      let stop = false;
      const loops = Array.from({ length: CLIENTS }, () => client(() => stop));
      await new Promise((r) => setTimeout(r, 400 + round * 150));
      await gw.kill('SIGKILL');
      stop = true;
      await Promise.all(loops);
    }
    assert.ok(acked.size > 50, `enough load went through (${acked.size} acked)`);

    // Final start: recovery, then everything drains.
    const gw = await spawnGateway(prepared.configFile, adminPort);
    try {
      const seen = new Map<number, number>();
      const deadline = Date.now() + 60_000;
      for (;;) {
        seen.clear();
        for (const m of mx.messages) {
          const n = Number(/X-Seq: (\d+)/.exec(m.data.toString())?.[1]);
          seen.set(n, (seen.get(n) ?? 0) + 1);
        }
        const missing = [...acked].filter((n) => !seen.has(n));
        if (missing.length === 0) break;
        if (Date.now() > deadline) assert.fail(`${missing.length} acknowledged messages never arrived: ${missing.slice(0, 10).join(',')}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const duplicates = [...seen.values()].filter((c) => c > 1).length;
      // Reported, not failed: at-least-once delivery may repeat a message cut mid-delivery.
      console.log(`# crash: ${acked.size} acknowledged, ${refusedOrCut} refused or cut, ${mx.messages.length} arrived, ${duplicates} duplicated`);

      // Let the queue settle, then nothing must remain in the spool.
      const spool = path.join(prepared.dir, 'spool');
      const left = async () => {
        const out: string[] = [];
        for (const d of ['tmp', 'incoming', 'active', 'deferred', 'meta']) {
          for (const f of await fsp.readdir(path.join(spool, d))) out.push(`${d}/${f}`);
        }
        return out;
      };
      const settle = Date.now() + 20_000;
      while ((await left()).length > 0 && Date.now() < settle) await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(await left(), [], 'spool is empty after recovery and delivery');
    } finally {
      await gw.kill('SIGTERM');
    }
  });
});
