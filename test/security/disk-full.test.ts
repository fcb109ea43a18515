/**
 * Scenario: the spool's file system fills up. A real full disk: a 256 KiB
 * tmpfs is mounted on the test gateway's spool directory (the test runs as
 * root; it is skipped, saying why, where mount is not permitted). The next
 * hop is down, so accepted mail stays in the spool. When the disk is full:
 * 452 4.3.1 at end of DATA, for a small message (spool commit) and for a
 * large one (the spill file), no crash, no partial file in tmp/, every
 * queued file whole, no message stuck in active/ (an attempt that cannot
 * record its outcome parks the message in deferred/); when space returns,
 * mail is accepted again and the queued mail's retries are recorded.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { build, type App } from '../../src/app';
import { loadConfigFile } from '../../src/config/load';
import { createLogger } from '../../src/log';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { prepareGateway } from '../helpers/gateway';
import { freePort } from '../helpers/process';
import { message, RawSmtp } from '../helpers/smtp-client';

function tryMount(dir: string): string | undefined {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', dir], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    return (err as Error).message.split('\n')[0];
  }
}

describe('disk trouble', () => {
  let dns: TestDns;
  let app: App | undefined;
  let dir: string;
  let spoolDir: string;
  let mounted = false;
  let skip: string | undefined;
  let configFile: string;

  before(async () => {
    dns = await startDnsServer();
    dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
    dns.set('mx.dest.test', 'A', ['127.0.0.2']);
    const deadPort = await freePort('127.0.0.2'); // nothing listens: deliveries defer, mail stays queued
    const p = await prepareGateway({
      // The queue-file path first (journal off); the journal's own full-disk test follows.
      config: { spool: { dir: 'spool', journal: false }, relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: deadPort, backoff: ['30s'] }, limits: { maxConnectionsPerIp: 100 } },
    });
    configFile = p.configFile;
    dir = p.dir;
    spoolDir = path.join(dir, 'spool');
    await fsp.mkdir(spoolDir, { recursive: true });
    skip = tryMount(spoolDir);
    mounted = skip === undefined;
    if (skip) return;
    const cfg = loadConfigFile(p.configFile);
    app = await build(cfg, { logger: createLogger({ level: cfg.log.level, pretty: false }), scanIntervalMs: 200 });
    await app.start();
  });
  after(async () => {
    await app?.stop();
    if (mounted) execFileSync('umount', ['-l', spoolDir]);
    await dns.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  async function send(body: string): Promise<string> {
    const c = await RawSmtp.connect(app!.port('intercept'), { localAddress: '127.0.0.5' });
    try {
      await c.reply();
      await c.cmd('EHLO home.test');
      await c.cmd('MAIL FROM:<me@home.test>');
      await c.cmd('RCPT TO:<a@dest.test>');
      const r = await c.data(message({ from: 'me@home.test', to: 'a@dest.test', body }));
      // The session is still usable after the failure.
      assert.equal((await c.cmd('NOOP')).code, 250);
      return r.text;
    } finally {
      c.close();
    }
  }

  async function checkSpoolWhole(): Promise<number> {
    // A file in tmp/ may be a write in progress (a deferral being recorded): only one that stays is partial.
    const tmpDir = path.join(spoolDir, 'tmp');
    for (let i = 0; i < 40 && (await fsp.readdir(tmpDir)).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(await fsp.readdir(tmpDir), [], 'no partial file in tmp/');
    // Ids, not listings: a message may move between states while they are read.
    const ids = new Set<string>();
    for (const s of ['incoming', 'active', 'deferred'] as const) for (const id of await app!.spool.list(s)) ids.add(id);
    let n = 0;
    for (const id of ids) {
      const s = await app!.spool.locate(id);
      if (!s) continue;
      const m = await app!.spool.read(id, s).catch(async () => app!.spool.read(id, (await app!.spool.locate(id))!));
      // Whole: the data after the envelope line is at least the size the client sent.
      assert.ok(m.fileSize - m.dataOffset >= m.envelope.size, `${s}/${id} is whole (${m.fileSize} - ${m.dataOffset} vs ${m.envelope.size})`);
      n++;
    }
    return n;
  }

  it('full disk: 452 4.3.1, no crash, no partial file; accepts again when space returns', async (t) => {
    if (skip) return t.skip(`cannot mount a tmpfs here (${skip})`);
    const filler = path.join(spoolDir, 'filler');
    // Leave roughly 100 KiB free.
    await fsp.writeFile(filler, Buffer.alloc(140 * 1024, 1));
    const body = 'y'.repeat(76) + '\r\n';
    const msg30k = body.repeat(400);
    const replies: string[] = [];
    for (let i = 0; i < 12; i++) replies.push(await send(msg30k));
    const ok = replies.filter((r) => r.startsWith('250 ')).length;
    const full = replies.filter((r) => r.startsWith('452 4.3.1 ')).length;
    console.log(`# disk full: ${ok} accepted, ${full} refused 452 4.3.1 of ${replies.length}`);
    assert.ok(ok >= 1, 'some mail fits');
    assert.ok(full >= 1, `a full disk gives 452 4.3.1 (${replies.join(' | ')})`);
    assert.equal(ok + full, replies.length, 'nothing else');
    // A large message takes the spill-file path: the same answer.
    const big = await send(body.repeat(16_000)); // ~1.2 MB, more than the whole file system
    assert.match(big, /^452 4\.3\.1 /);
    assert.equal(await checkSpoolWhole(), ok, 'exactly the acknowledged messages are queued, whole');
    // Let the queue manager try (and fail) to record deferrals on the full disk: still alive,
    // and nothing left in active/ until a restart (parked in deferred/ for a retry).
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await checkSpoolWhole(), ok);
    assert.deepEqual(await app!.spool.list('active'), []);

    // Space returns.
    await fsp.rm(filler);
    assert.match(await send('after the disk was cleaned\r\n'), /^250 2\.0\.0 /);
    assert.equal(await checkSpoolWhole(), ok + 1);
    // The queued mail is retried (the next hop is still down) and its deferral recorded this time.
    // (First let the new message's first attempt settle: everything in deferred/.)
    const settledBy = Date.now() + 10_000;
    while ((await app!.spool.list('deferred')).length < ok + 1 && Date.now() < settledBy) await new Promise((r) => setTimeout(r, 50));
    const queuedIds = await app!.spool.list('deferred');
    assert.equal(queuedIds.length, ok + 1);
    const attemptsBefore = new Map<string, number>();
    for (const id of queuedIds) attemptsBefore.set(id, (await app!.spool.readState(id))?.attempts ?? 0);
    app!.qmgr.flush();
    const retried = async () => {
      if ((await app!.spool.list('deferred')).length !== ok + 1) return false;
      for (const id of queuedIds) if (((await app!.spool.readState(id))?.attempts ?? 0) <= attemptsBefore.get(id)!) return false;
      return true;
    };
    const by = Date.now() + 10_000;
    while (!(await retried()) && Date.now() < by) await new Promise((r) => setTimeout(r, 100));
    assert.ok(await retried(), `every queued message was retried with its state recorded (attempts before: ${JSON.stringify([...attemptsBefore.values()])})`);
    assert.equal(await checkSpoolWhole(), ok + 1);
  });

  it('full disk with the acceptance journal: 452 4.3.1; what was acknowledged becomes queue files when space returns', async (t) => {
    if (skip) return t.skip(`cannot mount a tmpfs here (${skip})`);
    await app!.stop();
    const cfg = loadConfigFile(configFile);
    cfg.spool.journal = true;
    app = await build(cfg, { logger: createLogger({ level: cfg.log.level, pretty: false }), scanIntervalMs: 200 });
    await app.start();
    const before = new Set<string>();
    for (const s of ['incoming', 'active', 'deferred'] as const) for (const id of await app.spool.list(s)) before.add(id);
    const filler = path.join(spoolDir, 'filler');
    const free = Number(execFileSync('df', ['--output=avail', '-B1', spoolDir]).toString().split('\n')[1]);
    await fsp.writeFile(filler, Buffer.alloc(Math.max(0, free - 100 * 1024), 1));
    const body = 'z'.repeat(76) + '\r\n';
    const replies: string[] = [];
    for (let i = 0; i < 12; i++) replies.push(await send(body.repeat(400)));
    const ok = replies.filter((r) => r.startsWith('250 ')).length;
    const full = replies.filter((r) => r.startsWith('452 4.3.1 ')).length;
    console.log(`# disk full, journal on: ${ok} accepted, ${full} refused 452 4.3.1 of ${replies.length}`);
    assert.ok(ok >= 1, 'some mail fits');
    assert.ok(full >= 1, `a full disk gives 452 4.3.1 (${replies.join(' | ')})`);
    assert.equal(ok + full, replies.length, 'nothing else');
    // The first attempts defer (dead next hop) but the queue files cannot be written: the
    // messages stay in the journal, and the gateway keeps running.
    await new Promise((r) => setTimeout(r, 1500));
    await fsp.rm(filler);
    // Space returns: every acknowledged message becomes a whole queue file in deferred/.
    const want = ok + before.size;
    const by = Date.now() + 15_000;
    while ((await app.spool.list('deferred')).length < want && Date.now() < by) await new Promise((r) => setTimeout(r, 100));
    assert.equal((await app.spool.list('deferred')).length, want, 'the acknowledged messages reached the queue');
    assert.equal(await checkSpoolWhole(), want);
  });
});
