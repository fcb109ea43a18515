/**
 * Scenario: large messages go through a real gateway process (signed with
 * DKIM, spooled, relayed) without the gateway holding them in memory: a
 * 6 MB and then a 48 MB message; the gateway's peak RSS growth must not
 * scale with the size (an 8× larger message may not cost more than a small
 * constant extra), and the MX receives every byte with a valid signature.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { keyAndPublish, verify } from '../dkim/helpers';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { prepareGateway } from '../helpers/gateway';
import { freePort, rssMb, spawnGateway, type GatewayProcess } from '../helpers/process';
import { RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';


const LINE = `${'0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'.slice(0, 76)}\r\n`;

describe('large messages', () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: GatewayProcess;
  let dir: string;
  let keysDir: string;
  let port: number;

  before(async () => {
    dns = await startDnsServer();
    mx = await startTestMx({ host: '127.0.0.2' });
    dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
    dns.set('mx.dest.test', 'A', ['127.0.0.2']);
    keysDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-large-keys-'));
    await keyAndPublish(dns, { keysDir, domain: 'isp.test', selector: 'big', algo: 'rsa' });
    port = await freePort();
    const adminPort = await freePort();
    const prepared = await prepareGateway({
      config: {
        listeners: [{ name: 'intercept', role: 'intercept', address: '127.0.0.1', port, tls: 'none', greetDelay: '0ms' }],
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
    assert.match((await c.cmd(`MAIL FROM:<big@isp.test> SIZE=${lines * LINE.length + 1000}`)).text, /^250 /);
    await c.cmd('RCPT TO:<carol@dest.test>');
    assert.equal((await c.cmd('DATA')).code, 354);
    c.write(`From: big@isp.test\r\nTo: carol@dest.test\r\nSubject: ${mb} MB\r\n\r\n`);
    const block = LINE.repeat(1000);
    for (let i = 0; i < lines; i += 1000) {
      c.write(block);
      await new Promise((r) => setImmediate(r));
    }
    c.write('.\r\n');
    assert.match((await c.reply(120_000)).text, /^250 /);
    await c.quit();
  }

  it('streams 6 MB and 48 MB messages through signing, spool and relay without buffering them', async () => {
    const pid = gw.child.pid!;
    const base = rssMb(pid);
    let peak = base;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb(pid))), 20);
    try {
      await send(6);
      await mx.waitFor(1, 60_000);
      const small = peak - base;
      await send(48);
      const got = (await mx.waitFor(2, 120_000))[1]!;
      const large = peak - base;
      console.log(`# large messages: gateway RSS ${base.toFixed(0)} MB at rest; peak +${small.toFixed(1)} MB for 6 MB, +${large.toFixed(1)} MB for 48 MB`);
      assert.ok(got.data.length > 48 * 1024 * 1024, `all bytes arrived (${got.data.length})`);
      assert.equal((await verify(got.data, dns))[0]?.status.result, 'pass', 'the signature over 48 MB verifies');
      assert.ok(large < small + 16, `an 8× larger message cost ${(large - small).toFixed(1)} MB more: it was buffered`);
      assert.ok(large < 48, `peak growth ${large.toFixed(1)} MB: the 48 MB message was held whole`);
    } finally {
      clearInterval(sampler);
    }
  });
});
