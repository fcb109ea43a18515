/**
 * TCP quick ACK (src/net/quick-ack.ts, src/smtp/connection.ts): after the 354 the kernel
 * acknowledges the message content as soon as the gateway reads it.
 *
 * The attacker here is an ordinary client: Nagle's algorithm on (Node's
 * default), the message in one write and the final "." in a second one, as
 * the harness's STARTTLS + AUTH load generator does. Nagle holds the "."
 * until the content is acknowledged, and Linux, in its interactive mode
 * after the command exchange, delays that ACK by at least 40 ms
 * (TCP_DELACK_MIN) while the server has nothing to send. So without the
 * quick ACK no transaction below can get its 250 within 40 ms of writing
 * its content, however fast the machine; with it, they take a few ms. The
 * server answers the "." at once (no spool), so the time measured is the
 * ACK's. Plain, STARTTLS and implicit TLS (the descriptor is reached
 * through the TLS wrapper in the last two).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { describe, it } from 'node:test';
import { quickAck, quickAckUnavailable } from '../../src/net/quick-ack';
import { bareSmtpServers } from '../helpers/bare-smtp-server';
import { testCert } from '../helpers/tls';

type Mode = 'plain' | 'starttls' | 'implicit';
const TRANSACTIONS = 7;
/** Below the kernel's minimum delayed-ACK timeout: only an immediate ACK gets a 250 this fast. */
const FAST_MS = 30;

describe('DATA content is acknowledged at once', () => {
  const listen = bareSmtpServers();

  it('the native helper is built and loads (npm ci builds it; without it this suite must fail, not skip)', () => {
    assert.equal(quickAckUnavailable(), undefined);
  });

  it('quickAck on a socket without a descriptor says no instead of throwing', () => {
    const s = new net.Socket();
    assert.equal(quickAck(s), false);
    assert.equal(quickAck({ _handle: { fd: -1 } }), false);
  });

  async function start(mode: Mode): Promise<number> {
    const { port } = await listen({ security: mode === 'plain' ? 'none' : mode, tls: await testCert() });
    return port;
  }

  /** A line-reading SMTP client over a socket that can be swapped for its TLS upgrade. */
  function reader(first: net.Socket) {
    let sock = first;
    let buf = '';
    let waiting: ((line: string) => void) | undefined;
    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      const m = /^(\d{3}) [^\r\n]*\r\n/m.exec(buf);
      if (m && waiting) {
        const w = waiting;
        waiting = undefined;
        buf = buf.slice((m.index ?? 0) + m[0].length);
        w(m[1]);
      }
    };
    sock.on('data', onData);
    const reply = () => new Promise<string>((resolve) => {
      waiting = resolve;
      onData(Buffer.alloc(0));
    });
    return {
      get sock() {
        return sock;
      },
      swap(next: net.Socket) {
        sock.removeListener('data', onData);
        sock = next;
        buf = '';
        sock.on('data', onData);
      },
      async cmd(line: string, want: string) {
        sock.write(`${line}\r\n`);
        assert.equal(await reply(), want, `reply to ${line}`);
      },
      reply,
    };
  }

  for (const mode of ['plain', 'starttls', 'implicit'] as const) {
    it(`${mode}: the "." written after the content gets its 250 without waiting for a delayed ACK`, async () => {
      const port = await start(mode);
      const opts = { host: '127.0.0.1', port, noDelay: false };
      const raw = await new Promise<net.Socket>((resolve, reject) => {
        const s = mode === 'implicit' ? tls.connect({ ...opts, rejectUnauthorized: false }, () => resolve(s)) : net.connect(opts, () => resolve(s));
        s.once('error', reject);
      });
      const c = reader(raw);
      assert.equal(await c.reply(), '220');
      await c.cmd('EHLO quick.test', '250');
      if (mode === 'starttls') {
        await c.cmd('STARTTLS', '220');
        const secured = await new Promise<tls.TLSSocket>((resolve, reject) => {
          const t = tls.connect({ socket: raw, rejectUnauthorized: false }, () => resolve(t));
          t.once('error', reject);
        });
        c.swap(secured);
        await c.cmd('EHLO quick.test', '250');
      }
      const body = `Subject: quick ack\r\n\r\n${'x'.repeat(76)}\r\n`.repeat(50);
      const took: number[] = [];
      for (let i = 0; i < TRANSACTIONS; i++) {
        await c.cmd('MAIL FROM:<a@example.com>', '250');
        await c.cmd('RCPT TO:<b@example.net>', '250');
        await c.cmd('DATA', '354');
        const t0 = performance.now();
        c.sock.write(body);
        c.sock.write('.\r\n');
        assert.equal(await c.reply(), '250');
        took.push(performance.now() - t0);
      }
      c.sock.destroy();
      const fast = took.filter((ms) => ms < FAST_MS).length;
      // Without the quick ACK every one takes >= 40 ms; allow a loaded machine a few slow ones.
      assert.ok(fast >= Math.ceil(TRANSACTIONS / 2), `250 within ${FAST_MS} ms in ${fast} of ${TRANSACTIONS} transactions: ${took.map((ms) => ms.toFixed(1)).join(', ')} ms`);
    });
  }
});
