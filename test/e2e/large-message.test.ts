/**
 * Scenario: large messages go through a real gateway process (signed with
 * DKIM, spooled, relayed) without the gateway holding them in memory: 6 MB,
 * then 25 MB, then 48 MB; the MX receives every byte with a valid signature
 * and the gateway's RSS stays within a few MB of where it was.
 *
 * What the bounds mean (peak RSS, sampled every 20 ms from /proc):
 * - WARM_MB: a message on a warm gateway (one large message already through
 *   it), peak RSS minus the RSS just before it, whatever its size. Measured
 *   1.5–4.5 MB for 25 and 48 MB (2 cores, other tests running): the chunks in
 *   flight and the garbage between two collections (src/spool/reclaim.ts).
 *   A message held whole would cost its size.
 * - TOTAL_MB: the whole run, peak RSS minus the RSS at rest before the first
 *   message. Measured 12–14 MB: the first large message of a process also
 *   grows V8's heap and glibc's (8–9 MB, once); each later one may leave a
 *   MB or two of malloc fragmentation, which levels off. Before reclaim.ts:
 *   36–39 MB, the first message alone 28–30 MB.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { keyAndPublish, verify } from '../dkim/helpers';
import type { TestDns } from '../helpers/dns-server';
import { prepareGateway } from '../helpers/gateway';
import { freePort, rssMb, spawnGateway, type GatewayProcess } from '../helpers/process';
import { RawSmtp } from '../helpers/smtp-client';
import { startDestination, type TestMx } from '../helpers/test-mx';


const LINE = `${'0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'.slice(0, 76)}\r\n`;

describe('large messages', () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: GatewayProcess;
  let dir: string;
  let keysDir: string;
  let port: number;

  before(async () => {
    ({ dns, mx } = await startDestination());
    keysDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-large-keys-'));
    await keyAndPublish(dns, { keysDir, domain: 'isp.test', selector: 'big', algo: 'rsa' });
    port = await freePort();
    const adminPort = await freePort();
    const prepared = await prepareGateway({
      config: {
        listeners: [{ name: 'intercept', role: 'intercept', address: '127.0.0.1', port, security: 'none', greetDelay: '0ms' }],
        admin: { address: '127.0.0.1', port: adminPort, token: 't' },
        limits: { maxMessageSize: '60MB' },
        relay: { dns: { servers: [dns.server] }, mxPort: mx.port },
        dkim: { keysDir, signingDomain: 'isp.test' },
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
    await fsp.rm(keysDir, { recursive: true, force: true });
  });

  async function send(mb: number): Promise<void> {
    const lines = Math.ceil((mb * 1024 * 1024) / LINE.length);
    const c = await RawSmtp.connect(port, { localAddress: '127.0.0.3' });
    await c.reply();
    await c.cmd('EHLO big.test');
    // A subscriber's own domain: the ISP's fallback signs it (From: @isp.test would stay unsigned: an intercept client is not authorised for isp.test).
    assert.match((await c.cmd(`MAIL FROM:<big@home.test> SIZE=${lines * LINE.length + 1000}`)).text, /^250 /);
    await c.cmd('RCPT TO:<carol@dest.test>');
    assert.equal((await c.cmd('DATA')).code, 354);
    c.write(`From: big@home.test\r\nTo: carol@dest.test\r\nSubject: ${mb} MB\r\n\r\n`);
    const block = LINE.repeat(1000);
    for (let i = 0; i < lines; i += 1000) {
      c.write(block);
      await new Promise((r) => setImmediate(r));
    }
    c.write('.\r\n');
    assert.match((await c.reply(120_000)).text, /^250 /);
    await c.quit();
  }

  it('streams 6, 25 and 48 MB messages through signing, spool and relay within a few MB of RSS', async () => {
    const WARM_MB = 8;
    const TOTAL_MB = 20;
    const pid = gw.child.pid!;
    const base = rssMb(pid);
    let peak = base;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb(pid))), 20);
    const growth: Record<number, { pre: number; peak: number }> = {};
    let received = 0;
    const pass = async (mb: number): Promise<Buffer> => {
      await new Promise((r) => setTimeout(r, 100)); // at rest
      const pre = rssMb(pid);
      peak = pre;
      await send(mb);
      const got = (await mx.waitFor(++received, 120_000))[received - 1]!;
      await new Promise((r) => setTimeout(r, 60)); // a last sample after the relay
      growth[mb] = { pre, peak };
      assert.ok(got.data.length > mb * 1024 * 1024, `all bytes of the ${mb} MB message arrived (${got.data.length})`);
      return got.data;
    };
    try {
      await pass(6);
      const m25 = await pass(25);
      assert.equal((await verify(m25, dns))[0]?.status.result, 'pass', 'the signature over 25 MB verifies');
      const m48 = await pass(48);
      assert.equal((await verify(m48, dns))[0]?.status.result, 'pass', 'the signature over 48 MB verifies');
    } finally {
      clearInterval(sampler);
    }
    const over = (mb: number) => growth[mb]!.peak - growth[mb]!.pre;
    const total = Math.max(...Object.values(growth).map((g) => g.peak)) - base;
    console.log(
      `# large messages: gateway RSS ${base.toFixed(0)} MB at rest; peak over the RSS before each message: ` +
        `6 MB +${over(6).toFixed(1)} (the first), 25 MB +${over(25).toFixed(1)}, 48 MB +${over(48).toFixed(1)}; over the start +${total.toFixed(1)} MB`,
    );
    for (const mb of [25, 48]) assert.ok(over(mb) < WARM_MB, `a ${mb} MB message raised RSS by ${over(mb).toFixed(1)} MB (bound ${WARM_MB}): buffered?`);
    assert.ok(total < TOTAL_MB, `RSS rose ${total.toFixed(1)} MB over the run (bound ${TOTAL_MB})`);
  });
});
