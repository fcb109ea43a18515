/**
 * Scenario: slow clients (slowloris), against an in-process gateway with a
 * 1 s idle timeout and a 3 s DATA deadline.
 * - A client trickling a byte every 200 ms without ever completing a
 *   command gets 421 4.4.2 and is disconnected: a socket idle timeout,
 *   which every byte resets, would never fire, so the gateway gives each
 *   command line a deadline of its own (src/smtp/connection.ts `sweep`,
 *   run by src/smtp/listener.ts).
 * - A client trickling its message gets 421 4.4.2 at the DATA deadline and
 *   is disconnected (src/smtp/session.ts; before, it got a 451 and stayed
 *   connected in data mode for as long as it kept trickling).
 * - Controls: a client that is merely slow between complete commands, and
 *   a DATA transfer longer than the idle timeout but within its deadline,
 *   are served.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { RawSmtp } from '../helpers/smtp-client';
import { sleep } from './util';

describe('slow clients (slowloris)', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startGateway({ config: { limits: { idleTimeout: '1s', dataTimeout: '3s', maxConnectionsPerIp: 100 } } });
  });
  after(async () => {
    await gw.stop();
  });

  /** Connects, optionally sends `pre`, then writes one byte of `drip` every 200 ms until closed. */
  async function trickle(pre: string, drip: string, maxMs: number): Promise<{ closedAfterMs: number | undefined; got: string }> {
    const sock = net.connect({ port: gw.port('intercept'), host: '127.0.0.1', localAddress: '127.0.0.5' });
    sock.setEncoding('latin1');
    let got = '';
    let closedAt: number | undefined;
    sock.on('data', (d: string) => (got += d));
    sock.on('close', () => (closedAt = Date.now()));
    sock.on('error', () => undefined);
    await new Promise((r) => sock.once('connect', r));
    while (!got.includes('\r\n')) await sleep(10);
    if (pre) {
      sock.write(pre);
      while (!got.includes('354 ')) {
        if (closedAt) break;
        await sleep(10);
      }
    }
    const t0 = Date.now();
    let i = 0;
    const iv = setInterval(() => {
      if (!sock.destroyed) sock.write(drip[i++ % drip.length]!);
    }, 200);
    while (!closedAt && Date.now() - t0 < maxMs) await sleep(20);
    clearInterval(iv);
    sock.destroy();
    return { closedAfterMs: closedAt ? closedAt - t0 : undefined, got };
  }

  it('a client that never completes a command is cut after the idle timeout, however it trickles', async () => {
    const r = await trickle('', 'EHLO aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 6000);
    console.log(`# slowloris (command): cut after ${r.closedAfterMs} ms`);
    assert.ok(r.closedAfterMs !== undefined && r.closedAfterMs < 3000, `cut in time (${r.closedAfterMs} ms)`);
    assert.match(r.got, /421 4\.4\.2 /);
  });

  it('a client trickling its message is cut at the DATA deadline', async () => {
    const r = await trickle('EHLO slow.test\r\nMAIL FROM:<me@home.test>\r\nRCPT TO:<a@dest.test>\r\nDATA\r\n', 'Subject: slow\r\n', 8000);
    console.log(`# slowloris (DATA): cut after ${r.closedAfterMs} ms`);
    assert.ok(r.closedAfterMs !== undefined && r.closedAfterMs < 5000, `cut in time (${r.closedAfterMs} ms)`);
    assert.match(r.got, /421 4\.4\.2 /);
  });

  it('a slow but complete client and a long DATA within the deadline are served', async () => {
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.5' });
    await c.reply();
    for (const cmd of ['EHLO patient.test', 'MAIL FROM:<me@home.test>', 'RCPT TO:<a@dest.test>']) {
      await sleep(700); // each pause under the 1 s idle timeout; together well over it
      assert.equal((await c.cmd(cmd)).code, 250);
    }
    assert.equal((await c.cmd('DATA')).code, 354);
    const sock = (c as unknown as { socket: net.Socket }).socket;
    sock.write('From: <me@home.test>\r\nTo: <a@dest.test>\r\nSubject: slow but fine\r\n\r\n');
    for (let i = 0; i < 9; i++) {
      await sleep(200); // 1.8 s of DATA: longer than the idle timeout, within the DATA deadline
      sock.write(`line ${i}\r\n`);
    }
    sock.write('.\r\n');
    assert.match((await c.reply()).text, /^250 /);
    c.close();
  });
});
