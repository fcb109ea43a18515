/**
 * Scenario: with `process.workers: 2`, a worker moves a message it could
 * not deliver to deferred/ and dies before telling the primary (the IPC
 * 'deferred' message). The primary must find it when the worker dies, not
 * at its next restart.
 *
 * That moment cannot be hit by timing a kill, so the test builds it on
 * disk: a message a worker really deferred (queue file and delivery state)
 * is copied under a new id carrying the same worker's tag, as the worker
 * would have left it; then the workers are SIGKILLed. The next hop comes up
 * and the copy must arrive, with the primary never restarted.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { newQueueId } from '../../src/spool/queue-id';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { prepareGateway } from '../helpers/gateway';
import { childPids, freePort, killTree, spawnGateway, type GatewayProcess } from '../helpers/process';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';
import { OPEN_QUOTAS, sleep } from '../security/util';

describe('a worker dies between deferring a message and telling the primary', () => {
  let dns: TestDns;
  let mx: TestMx | undefined;
  let gw: GatewayProcess | undefined;
  let dir: string;

  before(async () => {
    dns = await startDnsServer();
    dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
    dns.set('mx.dest.test', 'A', ['127.0.0.2']);
  });
  after(async () => {
    if (gw) await killTree(gw);
    await mx?.close();
    await dns.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('the primary schedules what the dead worker left in deferred/, without a restart', async () => {
    const mxPort = await freePort('127.0.0.2');
    const smtpPort = await freePort();
    const adminPort = await freePort();
    const prepared = await prepareGateway({
      policyFiles: { 'quotas.yaml': OPEN_QUOTAS },
      config: {
        process: { workers: 2 },
        listeners: [{ name: 'intercept', role: 'intercept', address: '127.0.0.1', port: smtpPort, security: 'none', greetDelay: '0ms' }],
        admin: { address: '127.0.0.1', port: adminPort, token: 'worker-token' },
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort, backoff: ['1s'] },
      },
    });
    dir = prepared.dir;
    const spool = path.join(dir, 'spool');
    gw = await spawnGateway(prepared.configFile, adminPort);
    const primaryPid = gw.child.pid!;

    // Next hop down: the worker's first attempt defers the message.
    const c = await RawSmtp.connect(smtpPort, { localAddress: '127.0.0.4' });
    await c.reply();
    await c.cmd('EHLO load.test');
    await c.cmd('MAIL FROM:<load@sender.test>');
    await c.cmd('RCPT TO:<sink@dest.test>');
    const r = await c.data(message({ from: 'load@sender.test', to: 'sink@dest.test', headers: ['X-Copy: original'], body: 'hello\r\n' }));
    c.close();
    assert.equal(r.code, 250);
    const id = /([0-9A-Z]{11}[0-9A-F]{8})\s*$/.exec(r.text)![1]!;
    for (let i = 0; i < 200 && !(await fsp.readdir(path.join(spool, 'deferred'))).includes(id); i++) await sleep(50);
    assert.ok((await fsp.readdir(path.join(spool, 'deferred'))).includes(id), 'the worker deferred it');
    for (let i = 0; i < 100 && !(await fsp.readdir(path.join(spool, 'meta'))).includes(`${id}.json`); i++) await sleep(50);

    // What the worker would have left had it died after the rename, before its IPC message.
    const stray = `${newQueueId().slice(0, 11)}${id.slice(11)}`;
    const file = await fsp.readFile(path.join(spool, 'deferred', id), 'utf8');
    const nl = file.indexOf('\n');
    const env = JSON.parse(file.slice(0, nl)) as { id: string };
    env.id = stray;
    await fsp.writeFile(path.join(spool, 'tmp', stray), `${JSON.stringify(env)}\n${file.slice(nl + 1).replace('X-Copy: original', 'X-Copy: stray')}`);
    const state = JSON.parse(await fsp.readFile(path.join(spool, 'meta', `${id}.json`), 'utf8')) as { id: string };
    await fsp.writeFile(path.join(spool, 'meta', `${stray}.json`), JSON.stringify({ ...state, id: stray }));
    await fsp.rename(path.join(spool, 'tmp', stray), path.join(spool, 'deferred', stray));

    // The worker dies (both do: whichever one accepted the message).
    for (const pid of childPids(primaryPid)) process.kill(pid, 'SIGKILL');
    mx = await startTestMx({ host: '127.0.0.2', port: mxPort });
    const copies = () => mx!.messages.map((m) => /X-Copy: (\w+)/.exec(m.data.toString())?.[1]);
    for (let i = 0; i < 300 && !copies().includes('stray'); i++) await sleep(100);
    assert.ok(copies().includes('stray'), `the stray deferred message was delivered (got: ${copies().join(',') || 'nothing'})`);
    assert.ok(copies().includes('original'));
    assert.equal(gw.child.exitCode, null, 'the primary was never restarted');
  });
});
