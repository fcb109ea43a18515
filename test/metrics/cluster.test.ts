/**
 * Scenario: /metrics of a multi-process gateway (primary + 2 workers, a
 * real `smarthost start`). The workers accept the mail; the primary's
 * /metrics shows their counters merged with its own (prom-client's
 * AggregatorRegistry over the cluster IPC channel), one metric family per
 * name, the queue gauges once (from the primary, which owns the queue).
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { TestDns } from '../helpers/dns-server';
import { prepareGateway } from '../helpers/gateway';
import { freePort, spawnGateway, type GatewayProcess } from '../helpers/process';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startDestination, type TestMx } from '../helpers/test-mx';

describe('metrics of a multi-process gateway', () => {
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
      config: {
        process: { workers: 2 },
        listeners: [{ name: 'intercept', role: 'intercept', address: '127.0.0.1', port, security: 'none', greetDelay: '0ms' }],
        admin: { address: '127.0.0.1', port: adminPort, token: 't' },
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port },
        dkim: { enabled: false },
      },
    });
    dir = prepared.dir;
    gw = await spawnGateway(prepared.configFile, adminPort);
  });
  after(async () => {
    await gw?.kill();
    await mx?.close();
    await dns?.close();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('the primary serves the workers\' metrics merged with its own', async () => {
    const n = 6;
    for (let i = 0; i < n; i++) {
      const c = await RawSmtp.connect(port, { localAddress: '127.0.0.5' });
      assert.equal((await c.reply()).code, 220);
      await c.cmd('EHLO home.test');
      await c.cmd('MAIL FROM:<a@home.test>');
      await c.cmd('RCPT TO:<erin@dest.test>');
      assert.equal((await c.data(message({ from: 'a@home.test', to: 'erin@dest.test' }))).code, 250);
      await c.quit();
    }
    await mx.waitFor(n);
    // The MX has the last message before the worker has its 250 and counts the attempt: wait (bounded) for the count.
    const delivered = /^smarthost_delivery_attempts_total\{result="delivered",domain="other"\} (\S+)$/m;
    let text = '';
    const sample = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    for (let i = 0; i < 50; i++) {
      text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      if (sample(delivered) >= n) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(sample(/^smarthost_messages_accepted_total\{listener="intercept"\} (\S+)$/m), n, text.slice(0, 3000));
    assert.equal(sample(/^smarthost_connections_total\{listener="intercept",outcome="accepted"\} (\S+)$/m), n);
    assert.equal(sample(/^smarthost_delivery_attempts_total\{result="delivered",domain="other"\} (\S+)$/m), n);
    // One family per name (a naive concatenation of expositions would repeat them).
    const helps = text.split('\n').filter((l) => l.startsWith('# HELP '));
    assert.equal(new Set(helps).size, helps.length, 'duplicate metric families');
    // The queue gauges come from the primary only; the state gauge is a max, not a sum.
    assert.match(text, /^smarthost_queue_messages\{state="hold"\} 0$/m);
    assert.match(text, /^smarthost_build_info\{version="[^"]+",node_version="[^"]+"\} 1$/m);
    assert.match(text, /^smarthost_state_degraded 0$/m);
  });
});
