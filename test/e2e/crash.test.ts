/**
 * Scenario: crash safety at scale. 2,000 messages, one per connection from
 * 24 concurrent clients on four addresses, while the gateway process is
 * SIGKILLed and restarted 5 times (each kill lands mid-traffic: sessions
 * mid-DATA, commits mid-write, deliveries mid-flight to a slow MX).
 * - Every message that got a 250 arrives at the MX at least once;
 *   duplicates (at-least-once after a kill mid-delivery) are counted and
 *   reported, not failed.
 * - Right after each kill, every committed queue file (incoming, active,
 *   deferred, hold) is whole: its envelope line parses and all the bytes
 *   the client sent follow it; every meta/ state file parses. Only tmp/
 *   may hold partial writes, and the next start removes them (recovery).
 * - After the last restart everything drains: no queue, meta, tmp or
 *   corrupt file remains.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Spool } from '../../src/spool/store';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { prepareGateway } from '../helpers/gateway';
import { freePort, spawnGateway, type GatewayProcess } from '../helpers/process';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';

const TARGET = 2000;
const KILLS = 5;
const CLIENTS = 24;
const IPS = ['127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7'];
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Recovery {
  tmpRemoved: number;
  activeRequeued: number;
  orphanMetaRemoved: number;
  corrupt: number;
}

describe('crash safety', () => {
  let dns: TestDns;
  let mx: TestMx;
  let dir: string;
  let gw: GatewayProcess | undefined;

  before(async () => {
    dns = await startDnsServer();
    // A slow MX keeps deliveries in flight when the gateway dies.
    mx = await startTestMx({ host: '127.0.0.2', dataDelayMs: 15, extra: { maxClients: 500 } });
    dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
    dns.set('mx.dest.test', 'A', ['127.0.0.2']);
  });
  after(async () => {
    await gw?.kill('SIGKILL');
    await mx.close();
    await dns.close();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it(`delivers every acknowledged message of ${TARGET} across ${KILLS} SIGKILLs`, { timeout: 120_000 }, async () => {
    const t0 = Date.now();
    const smtpPort = await freePort();
    const adminPort = await freePort();
    const prepared = await prepareGateway({
      config: {
        log: { level: 'info' },
        listeners: [{ name: 'intercept', role: 'intercept', address: '127.0.0.1', port: smtpPort, security: 'none', greetDelay: '0ms' }],
        admin: { address: '127.0.0.1', port: adminPort, token: 'crash-token' },
        limits: { maxConnectionsPerIp: 200 },
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port, backoff: ['200ms'] },
      },
    });
    dir = prepared.dir;
    const spoolDir = path.join(dir, 'spool');
    const spool = new Spool(spoolDir, { fsync: false });

    const acked = new Set<number>();
    let seq = 0;
    let refusedOrCut = 0; // a session that got no 250: cut by a kill, or refused
    let connectFailures = 0; // the gateway was down
    let stop = false;

    const client = async (k: number) => {
      const ip = IPS[k % IPS.length]!;
      while (!stop) {
        const n = seq++;
        let c: RawSmtp | undefined;
        try {
          c = await RawSmtp.connect(smtpPort, { localAddress: ip });
        } catch {
          connectFailures++;
          await sleep(20); // the gateway is down: try again shortly
          continue;
        }
        try {
          if ((await c.reply(5000)).code !== 220) throw new Error('no greeting');
          await c.cmd('EHLO load.test');
          await c.cmd('MAIL FROM:<load@sender.test>');
          await c.cmd('RCPT TO:<sink@dest.test>');
          const r = await c.data(message({ from: 'load@sender.test', to: 'sink@dest.test', headers: [`X-Seq: ${n}`], body: `${'x'.repeat(76)}\r\n`.repeat(20 + (n % 40)) }));
          if (r.code === 250) acked.add(n);
          else refusedOrCut++;
        } catch {
          refusedOrCut++;
        } finally {
          c?.close();
        }
      }
    };

    /** Every committed file is whole; returns the names of the partial writes in tmp/. */
    const inspectAfterKill = async (): Promise<string[]> => {
      for (const state of ['incoming', 'active', 'deferred', 'hold'] as const) {
        if (!existsSync(path.join(spoolDir, state))) continue;
        for (const id of await spool.list(state)) {
          const m = await spool.read(id, state); // throws on a torn envelope line
          assert.ok(m.fileSize - m.dataOffset >= m.envelope.size, `${state}/${id}: ${m.fileSize - m.dataOffset} bytes of data for a ${m.envelope.size}-byte message`);
        }
      }
      for (const f of await fsp.readdir(path.join(spoolDir, 'meta'))) JSON.parse(await fsp.readFile(path.join(spoolDir, 'meta', f), 'utf8'));
      return fsp.readdir(path.join(spoolDir, 'tmp'));
    };

    const recoveries: Recovery[] = [];
    const recoveryOf = async (g: GatewayProcess): Promise<Recovery | undefined> => {
      for (let i = 0; i < 100; i++) {
        const line = g
          .output()
          .split('\n')
          .find((l) => l.includes('"evt":"recovery"'));
        if (line) return JSON.parse(line) as Recovery;
        await sleep(20);
      }
      return undefined;
    };

    let tmpLeftByKills = 0;
    let previousTmp: string[] = [];
    const loops: Array<Promise<void>> = [];
    for (let cycle = 0; cycle <= KILLS; cycle++) {
      gw = await spawnGateway(prepared.configFile, adminPort);
      const rec = await recoveryOf(gw);
      assert.ok(rec, 'the gateway logged its spool recovery');
      recoveries.push(rec);
      assert.equal(rec.corrupt, 0, 'no queue file was torn by a kill');
      const tmpNow = await fsp.readdir(path.join(spoolDir, 'tmp'));
      assert.deepEqual(
        tmpNow.filter((f) => previousTmp.includes(f)),
        [],
        'recovery removed the partial writes the kill left in tmp/',
      );
      if (cycle === 0) for (let k = 0; k < CLIENTS; k++) loops.push(client(k));
      if (cycle === KILLS) break;
      // Kill at an uneven point of the run, while traffic flows.
      const killAt = Math.floor((TARGET * (cycle + 1)) / (KILLS + 1)) - 60 + ((cycle * 37) % 120);
      const deadline = Date.now() + 30_000;
      while (acked.size < killAt && Date.now() < deadline) await sleep(5);
      await gw.kill('SIGKILL');
      gw = undefined;
      previousTmp = await inspectAfterKill();
      tmpLeftByKills += previousTmp.length;
    }
    const deadline = Date.now() + 40_000;
    while (acked.size < TARGET && Date.now() < deadline) await sleep(20);
    stop = true;
    await Promise.all(loops);
    const tLoad = Date.now() - t0;
    assert.ok(acked.size >= TARGET, `only ${acked.size} of ${TARGET} acknowledged in time`);

    // Everything acknowledged arrives.
    const seen = new Map<number, number>();
    const drainBy = Date.now() + 40_000;
    for (;;) {
      seen.clear();
      for (const m of mx.messages) {
        const n = Number(/X-Seq: (\d+)/.exec(m.data.toString('latin1'))?.[1]);
        seen.set(n, (seen.get(n) ?? 0) + 1);
      }
      const missing = [...acked].filter((n) => !seen.has(n));
      if (missing.length === 0) break;
      if (Date.now() > drainBy) assert.fail(`${missing.length} acknowledged messages never arrived: ${missing.slice(0, 10).join(',')}`);
      await sleep(100);
    }
    const duplicated = [...seen.values()].filter((c) => c > 1).length;
    const extraCopies = [...seen.values()].reduce((a, c) => a + c - 1, 0);
    const unackedDelivered = [...seen.keys()].filter((n) => !acked.has(n)).length;

    // Then the spool settles to nothing.
    const left = async () => {
      const out: string[] = [];
      for (const d of ['tmp', 'incoming', 'active', 'deferred', 'hold', 'meta', 'corrupt']) {
        if (!existsSync(path.join(spoolDir, d))) continue;
        for (const f of await fsp.readdir(path.join(spoolDir, d))) out.push(`${d}/${f}`);
      }
      return out;
    };
    const settle = Date.now() + 20_000;
    while ((await left()).length > 0 && Date.now() < settle) await sleep(100);
    assert.deepEqual(await left(), [], 'spool is empty after recovery and delivery');

    const sum = (k: keyof Recovery) => recoveries.reduce((a, r) => a + r[k], 0);
    console.log(
      `# crash: ${acked.size} acknowledged over ${KILLS} SIGKILLs (${refusedOrCut} sessions cut or refused, ${connectFailures} connects while down), ` +
        `${mx.messages.length} deliveries, ${duplicated} messages duplicated (${extraCopies} extra copies), ` +
        `${unackedDelivered} unacknowledged messages delivered anyway; recovery: ${sum('tmpRemoved')} tmp files removed ` +
        `(${tmpLeftByKills} seen after kills), ${sum('activeRequeued')} active requeued, ${sum('orphanMetaRemoved')} orphan meta removed, ` +
        `${sum('corrupt')} corrupt; load ${(tLoad / 1000).toFixed(1)} s, total ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
  });
});
