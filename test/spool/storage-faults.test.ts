/**
 * Scenario: the spool's disk fails under a running gateway, for a journal
 * segment and for a queue file, at write and at fdatasync, with EIO and
 * ENOSPC (test seam: src/spool/storage-faults.ts, a failed write leaving
 * half its bytes). The next hop is down, so what was accepted stays queued.
 * Invariants, per case: new mail gets a 4xx with its RFC 3463 code (452
 * 4.3.1 full disk, 451 4.3.0 I/O error), what was queued stays queued and
 * whole, /readyz is red, smarthost_spool_storage_errors_total counts it and
 * smarthost_spool_storage_degraded is 1; once the disk works again the
 * gateway notices by itself (its probe, /readyz not asked) and takes mail.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { build, type App } from '../../src/app';
import { loadConfigFile } from '../../src/config/load';
import { createLogger } from '../../src/log';
import { injectStorageFaults, type StorageFile, type StorageOp } from '../../src/spool/storage-faults';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { prepareGateway } from '../helpers/gateway';
import { freePort } from '../helpers/process';
import { message, RawSmtp } from '../helpers/smtp-client';

const REPLY: Record<string, RegExp> = { ENOSPC: /^452 4\.3\.1 /, EIO: /^451 4\.3\.0 / };

for (const file of ['queue', 'journal'] as StorageFile[]) {
  describe(`storage faults on ${file} files`, () => {
    let dns: TestDns;
    let app: App;
    let dir: string;

    before(async () => {
      dns = await startDnsServer();
      dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
      dns.set('mx.dest.test', 'A', ['127.0.0.2']);
      const deadPort = await freePort('127.0.0.2');
      const p = await prepareGateway({
        config: { spool: { dir: 'spool', journal: file === 'journal' }, relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: deadPort, backoff: ['1h'] }, limits: { maxConnectionsPerIp: 100 } },
      });
      dir = p.dir;
      const cfg = loadConfigFile(p.configFile);
      app = await build(cfg, { logger: createLogger({ level: cfg.log.level, pretty: false }), scanIntervalMs: 200 });
      await app.start();
    });
    after(async () => {
      injectStorageFaults(undefined);
      await app.stop();
      await dns.close();
      await fsp.rm(dir, { recursive: true, force: true });
    });

    async function send(n: number): Promise<string> {
      const c = await RawSmtp.connect(app.port('intercept'), { localAddress: '127.0.0.5' });
      try {
        await c.reply();
        await c.cmd('EHLO home.test');
        await c.cmd('MAIL FROM:<me@home.test>');
        await c.cmd('RCPT TO:<a@dest.test>');
        return (await c.data(message({ from: 'me@home.test', to: 'a@dest.test', body: `message ${n}\r\n` }))).text;
      } finally {
        c.close();
      }
    }
    const admin = (p: string) => fetch(`http://127.0.0.1:${app.admin.port}${p}`);
    const metric = async (re: RegExp) => Number(((await (await admin('/metrics')).text()).match(re) ?? [])[1] ?? NaN);
    /** Every queued message, read whole, once the first attempts have settled into deferred/. */
    async function queued(expected: number): Promise<number> {
      for (let i = 0; i < 200 && (await app.spool.list('deferred')).length < expected; i++) await new Promise((r) => setTimeout(r, 50));
      let n = 0;
      for (const id of await app.spool.list('deferred')) {
        const m = await app.spool.read(id, 'deferred');
        assert.ok(m.fileSize - m.dataOffset >= m.envelope.size, `${id} is whole`);
        n++;
      }
      return n;
    }

    let accepted = 0;
    for (const op of ['write', 'sync'] as StorageOp[]) {
      for (const code of ['EIO', 'ENOSPC']) {
        it(`${code} at ${op}: 4xx to new mail, queue kept, /readyz red, metric; recovers by itself`, async () => {
          assert.match(await send(accepted), /^250 /);
          accepted++;
          assert.equal(await queued(accepted), accepted);

          injectStorageFaults((f, o) => (f === file && o === op ? code : undefined));
          const reply = await send(1000);
          assert.match(reply, REPLY[code]!, `the refused message's reply: ${reply}`);
          const r = await admin('/readyz');
          assert.equal(r.status, 503);
          assert.match(await r.text(), new RegExp(code));
          const errors = new RegExp(`smarthost_spool_storage_errors_total\\{file="${file}",op="${op}",code="${code}"\\} (\\d+)`);
          assert.ok((await metric(errors)) >= 1, 'the error is counted by file, op and code');
          assert.equal(await metric(/^smarthost_spool_storage_degraded (\d+)/m), 1);
          assert.equal(await queued(accepted), accepted, 'what was queued stays queued, whole, and nothing more');
          // (Its readiness probe may be writing meanwhile.)
          assert.deepEqual((await fsp.readdir(path.join(app.spool.dir, 'tmp'))).filter((n) => !n.startsWith('.readyz-')), [], 'no partial file left');

          injectStorageFaults(undefined);
          // Its own probe notices (no /readyz asked): bounded wait, not a timing assertion.
          for (let i = 0; i < 100 && (await metric(/^smarthost_spool_storage_degraded (\d+)/m)) !== 0; i++) await new Promise((res) => setTimeout(res, 100));
          assert.equal(await metric(/^smarthost_spool_storage_degraded (\d+)/m), 0, 'recovered without help');
          assert.equal((await admin('/readyz')).status, 200);
          assert.match(await send(accepted), /^250 /);
          accepted++;
          assert.equal(await queued(accepted), accepted);
        });
      }
    }
  });
}
