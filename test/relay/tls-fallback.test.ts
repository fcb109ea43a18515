/**
 * Opportunistic TLS: a server that offers STARTTLS but whose handshake
 * fails gets the message in plaintext on a second session (Postfix `may`);
 * with `tls: required` the same server defers. The server is a raw TCP
 * script because a real SMTP server's TLS cannot easily be made to fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createDeliveryAgent } from '../../src/relay/deliver';
import type { NextHop, RelayConfig } from '../../src/relay/config';
import { captureLogger, job, relayConfig } from './fixtures';

interface Broken {
  port: number;
  delivered: string[];
  sessions: number;
  close(): Promise<void>;
}

/** Offers STARTTLS, answers 220 to it, then sends garbage instead of a TLS handshake. */
async function startBrokenTlsServer(): Promise<Broken> {
  const state = { delivered: [] as string[], sessions: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    state.sessions++;
    let buf = '';
    let inData = false;
    let data = '';
    let rcpt = '';
    sock.write('220 broken.test ESMTP\r\n');
    let tls = false;
    sock.on('data', (chunk) => {
      if (tls) {
        // The ClientHello: answer with something that is not TLS.
        sock.write('THIS IS NOT TLS AT ALL\r\n');
        return;
      }
      buf += chunk.toString('latin1');
      let i: number;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (inData) {
          if (line === '.') {
            inData = false;
            state.delivered.push(rcpt);
            sock.write('250 2.0.0 queued\r\n');
          } else data += line + '\r\n';
          continue;
        }
        const cmd = line.toUpperCase();
        if (cmd.startsWith('EHLO')) sock.write('250-broken.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n');
        else if (cmd === 'STARTTLS') {
          tls = true;
          sock.write('220 2.0.0 go ahead\r\n');
        }
        else if (cmd.startsWith('MAIL')) sock.write('250 2.1.0 ok\r\n');
        else if (cmd.startsWith('RCPT')) {
          rcpt = /<([^>]*)>/.exec(line)?.[1] ?? '';
          sock.write('250 2.1.5 ok\r\n');
        } else if (cmd === 'DATA') {
          inData = true;
          sock.write('354 go\r\n');
        } else if (cmd === 'RSET') sock.write('250 ok\r\n');
        else if (cmd === 'QUIT') sock.end('221 bye\r\n');
        else sock.write('502 5.5.2 what\r\n');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    get delivered() {
      return state.delivered;
    },
    get sessions() {
      return state.sessions;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

function cfg(hop: NextHop): RelayConfig {
  return relayConfig(undefined, 25, { relayhost: hop, concurrencyPerDestination: 2, maxConnections: 10, activeWindow: 10, maxLifetimeMs: 60_000, socketTimeoutMs: 5000, poolIdleMs: 1000, maxMessagesPerConnection: 10 });
}

test('opportunistic: a failed TLS handshake falls back to plaintext on a new session', { timeout: 20_000 }, async () => {
  const srv = await startBrokenTlsServer();
  const log = captureLogger();
  const agent = createDeliveryAgent(cfg({ host: '127.0.0.1', port: srv.port, tls: 'opportunistic' }), { hostname: 'gw.test', logger: log.logger });
  try {
    const [o] = await agent.deliver(job(['a@far.test']));
    assert.equal(o.kind, 'delivered', JSON.stringify(o));
    assert.deepEqual(srv.delivered, ['a@far.test']);
    assert.equal(srv.sessions, 2);
    assert.equal(log.lines.find((l) => l.evt === 'delivery')?.tls, false);
  } finally {
    await agent.close();
    await srv.close();
  }
});

test('required: the same server defers, nothing is sent in plaintext', { timeout: 20_000 }, async () => {
  const srv = await startBrokenTlsServer();
  const log = captureLogger();
  const agent = createDeliveryAgent(cfg({ host: '127.0.0.1', port: srv.port, tls: 'required' }), { hostname: 'gw.test', logger: log.logger });
  try {
    const [o] = await agent.deliver(job(['a@far.test']));
    assert.equal(o.kind, 'deferred');
    assert.match(o.kind === 'deferred' ? o.error : '', /TLS handshake failed: wrong version number/);
    assert.equal(o.kind === 'deferred' && o.statusCode, '4.7.5', "Postfix's \"Cannot start TLS: handshake failure\"");
    assert.deepEqual(srv.delivered, []);
  } finally {
    await agent.close();
    await srv.close();
  }
});
