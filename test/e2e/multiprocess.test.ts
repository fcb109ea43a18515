/**
 * Scenario: the gateway as a primary and two workers (`process.workers: 2`).
 * Mail accepted by either worker arrives; a quota is one quota across the
 * workers (the primary's store answers them over IPC), exactly at its
 * limit; a worker killed mid-flight is replaced and nothing acknowledged is
 * lost.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { consoleLogin, section } from '../console/console-session';
import type { TestDns } from '../helpers/dns-server';
import { prepareGateway } from '../helpers/gateway';
import { childPids, freePort, spawnGateway, type GatewayProcess } from '../helpers/process';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startDestination, type TestMx } from '../helpers/test-mx';


const QUOTAS = `
onExceed: { action: tempfail, reply: rate_limited }
plans:
  small: { messagesPerHour: 30 }
defaultPlan: small
classPlans:
  residential-dynamic: small
defaultClassPlan: small
`;

describe('multi-process gateway', () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: GatewayProcess;
  let dir: string;
  let port: number;
  let adminPort: number;

  before(async () => {
    ({ dns, mx } = await startDestination());
    port = await freePort();
    adminPort = await freePort();
    const prepared = await prepareGateway({
      policyFiles: { 'quotas.yaml': QUOTAS },
      config: {
        process: { workers: 2 },
        listeners: [{ name: 'intercept', role: 'intercept', address: '127.0.0.1', port, security: 'none', greetDelay: '0ms' }],
        admin: { address: '127.0.0.1', port: adminPort, token: 't' },
        limits: { maxConnectionsPerIp: 100 },
        relay: { dns: { servers: [dns.server] }, mxPort: mx.port, backoff: ['300ms'] },
      },
    });
    dir = prepared.dir;
    gw = await spawnGateway(prepared.configFile, adminPort);
  });
  after(async () => {
    await gw?.kill('SIGTERM');
    await mx.close();
    await dns.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  async function sendOne(from: string, ip: string): Promise<number> {
    const c = await RawSmtp.connect(port, { localAddress: ip });
    try {
      await c.reply();
      await c.cmd('EHLO mp.test');
      const m = await c.cmd(`MAIL FROM:<${from}>`);
      if (m.code !== 250) return m.code;
      const r = await c.cmd('RCPT TO:<carol@dest.test>');
      if (r.code !== 250) return r.code;
      return (await c.data(message({ from, to: 'carol@dest.test' }))).code;
    } finally {
      c.close();
    }
  }

  it('runs a primary and two workers, and enforces one quota exactly across them', async () => {
    assert.equal(childPids(gw.child.pid!).length, 2, 'two worker processes');
    const codes: number[] = [];
    // 45 attempts, 9 at a time, from one subscriber IP: exactly 30 may pass.
    for (let round = 0; round < 5; round++) {
      codes.push(...(await Promise.all(Array.from({ length: 9 }, () => sendOne('quota@home.test', '127.0.0.5')))));
    }
    const accepted = codes.filter((c) => c === 250).length;
    assert.equal(accepted, 30, `accepted ${accepted} of 45 (codes: ${codes.join(',')})`);
    assert.ok(codes.filter((c) => c !== 250).every((c) => c === 451), 'the rest are 451 rate_limited');
    await mx.waitFor(30);
  });

  it("shows the workers' accepted mail on the primary's console (the primary records it from their batches)", async () => {
    const desk = await consoleLogin(`http://127.0.0.1:${adminPort}`, 't');
    const volume = section((await desk.get('/console/senders')).html, 'Top by volume');
    assert.match(volume, /ip:127\.0\.0\.5 30\b/, `the 30 accepted from 127.0.0.5 (got: ${volume.slice(0, 300)})`);
  });

  it('replaces a killed worker and loses nothing acknowledged', async () => {
    const workers = childPids(gw.child.pid!);
    const before = mx.messages.length;
    let acked = 0;
    const sends = Array.from({ length: 20 }, async (_, i) => {
      if (i === 10) process.kill(workers[0]!, 'SIGKILL');
      const code = await sendOne('other@home.test', '127.0.0.6').catch(() => 0);
      if (code === 250) acked++;
    });
    await Promise.all(sends);
    await mx.waitFor(before + acked, 30_000);
    // A new worker was started in its place.
    for (let i = 0; i < 100 && childPids(gw.child.pid!).length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(childPids(gw.child.pid!).length, 2);
    assert.ok(acked >= 10, `most sends acknowledged (${acked})`);
  });
});
