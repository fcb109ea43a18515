/**
 * The outbound client against Postfix's own SMTP code: smtp-sink (installed
 * by scripts/test-setup.sh) with and without PIPELINING, dumping each
 * transaction (-d) as Postfix parsed it: the envelope arguments and the body
 * after Postfix removed the dot-stuffing. A body with leading dots, a bare LF
 * and a bare CR must come out as lines, never as an early end of data.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { closeSession, openSession, resetSession, sendOnSession } from '../../src/relay/client';
import { freePort } from '../helpers/process';

const SINK = '/usr/sbin/smtp-sink';
const BODY = 'Subject: interop\r\n\r\n.leading dot\nbare lf\rbare cr\r\n..two dots\r\n.\r\nlast\r\n';

async function withSink(flags: string[], fn: (port: number, dumps: () => Promise<string[]>) => Promise<void>): Promise<void> {
  assert.equal(spawnSync('test', ['-x', SINK]).status, 0, `${SINK} is missing: run sh scripts/test-setup.sh`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sink-'));
  await chmod(dir, 0o777);
  const port = await freePort();
  const asRoot = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
  const sink = spawn(SINK, [...asRoot, ...flags, '-d', `${dir}/%H%M%S.`, `127.0.0.1:${port}`, '10'], { stdio: 'ignore' });
  try {
    for (let i = 0; ; i++) {
      const up = await new Promise<boolean>((r) => {
        const s = net.connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
        s.on('error', () => r(false));
      });
      if (up) break;
      assert.ok(i < 100, 'smtp-sink did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
    const dumps = async (): Promise<string[]> => Promise.all((await readdir(dir)).sort().map((f) => readFile(path.join(dir, f), 'latin1')));
    await fn(port, dumps);
  } finally {
    sink.kill();
    await rm(dir, { recursive: true, force: true });
  }
}

// -p: EHLO without PIPELINING (lock-step); -P: a "PIX" greeting and no ESMTP at all (HELO).
for (const [label, flags, mailArgs] of [
  ['with PIPELINING', [], ' BODY=8BITMIME'],
  ['without PIPELINING (-p)', ['-p'], ' BODY=8BITMIME'],
  ['without ESMTP (-P, HELO)', ['-P'], ''],
] as const) {
  test(`Postfix smtp-sink ${label}: envelope and body arrive as sent, twice on one session`, { timeout: 20_000 }, async () => {
    await withSink([...flags], async (port, dumps) => {
      const r = await openSession({ host: 'sink.test', ip: '127.0.0.1', port, tls: 'none' }, { name: 'client.test', connectTimeoutMs: 2000, greetingTimeoutMs: 2000, socketTimeoutMs: 5000, dataTimeoutMs: 5000, minDataRate: 64 * 1024, dataDoneTimeoutMs: 5000 });
      assert.ok(r.ok, r.ok ? '' : r.err.message);
      assert.equal(r.session.conn.extensions.has('PIPELINING'), flags.length === 0);
      for (const to of [['b@x.test', 'c@x.test'], ['d@x.test']]) {
        if (r.session.messages > 0) assert.equal(await resetSession(r.session), true);
        const body = Buffer.from(BODY);
        const res = await sendOnSession(r.session, { from: 'a@client.test', to, size: body.length, smtpUtf8: false }, () => Readable.from([body]));
        assert.deepEqual([...res.accepted.keys()], to);
      }
      closeSession(r.session);
      let got: string[] = [];
      for (let i = 0; i < 50 && got.length < 2; i++) {
        await new Promise((res) => setTimeout(res, 50));
        got = await dumps();
      }
      assert.equal(got.length, 2);
      // Dump file names are the second plus a random number: order them by content.
      got.sort((a, b) => Number(a.includes('<d@x.test>')) - Number(b.includes('<d@x.test>')));
      for (const dump of got) assert.ok(dump.includes(`\nX-Mail-Args: <a@client.test>${mailArgs}\n`), dump.slice(0, 200));
      assert.deepEqual(got[0].match(/^X-Rcpt-Args: .*$/gm), ['X-Rcpt-Args: <b@x.test>', 'X-Rcpt-Args: <c@x.test>']);
      assert.deepEqual(got[1].match(/^X-Rcpt-Args: .*$/gm), ['X-Rcpt-Args: <d@x.test>']);
      for (const dump of got) {
        // smtp-sink writes lines with LF: what Postfix read, line by line, after un-stuffing.
        const body = dump.slice(dump.indexOf('Subject: interop'));
        assert.equal(body, 'Subject: interop\n\n.leading dot\nbare lf\nbare cr\n..two dots\n.\nlast\n\n');
      }
    });
  });
}
