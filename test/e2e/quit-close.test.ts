/**
 * After QUIT the server closes the connection as soon as the 221 has left,
 * like Postfix's smtpd, instead of ending its side and keeping the
 * descriptor open until the client closes. A client that lingers after its
 * 221 holds nothing; a client that resets the connection after reading the
 * 221 (smtp-source sets SO_LINGER 0) does not make Node build an ECONNRESET
 * error, with its stack, for every session. Plain and implicit TLS, with and
 * without work in the quit hook (the connection slot goes back before the
 * 221); the 221 always arrives whole. And once closed, a connection is
 * garbage: nothing (a timer, a listener) keeps its session alive.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { SmtpServer } from '../../src/smtp/server';
import { bareSmtpServers } from '../helpers/bare-smtp-server';
import { testCert } from '../helpers/tls';
import { waitUntil } from '../helpers/wait-until';

interface Case {
  name: string;
  secure: boolean;
  onQuit: boolean;
}

const CASES: Case[] = [
  { name: 'plain, no onQuit hook', secure: false, onQuit: false },
  { name: 'plain, with the onQuit hook', secure: false, onQuit: true },
  { name: 'implicit TLS, with the onQuit hook', secure: true, onQuit: true },
];

describe('QUIT closes the connection once the 221 is out', () => {
  const listen = bareSmtpServers();

  async function start(c: Case): Promise<{ server: SmtpServer; port: number; quits: string[] }> {
    const quits: string[] = [];
    const { server, port } = await listen({
      security: c.secure ? 'implicit' : 'none',
      tls: await testCert(),
      // Long enough that only the QUIT path can have closed the connection within the test.
      closeTimeoutMs: 60_000,
      ...(c.onQuit ? { hooks: { quit: async (session) => void quits.push(session.id) } } : {}),
    });
    return { server, port, quits };
  }

  /** A client that never closes its side by itself (allowHalfOpen), as a lingering client would. */
  async function lingeringClient(port: number, secure: boolean): Promise<{ sock: net.Socket; until(re: RegExp): Promise<string> }> {
    const opts = { host: '127.0.0.1', port, allowHalfOpen: true };
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = secure ? tls.connect({ ...opts, rejectUnauthorized: false }, () => resolve(s)) : net.connect(opts, () => resolve(s));
      s.once('error', reject);
    });
    sock.on('error', () => undefined);
    let text = '';
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => (text += d));
    const until = async (re: RegExp) => {
      await waitUntil(`a reply matching ${re}`, () => re.test(text), 5_000);
      return text;
    };
    return { sock, until };
  }

  const openConnections = (server: SmtpServer) =>
    new Promise<number>((resolve, reject) => server.netServer.getConnections((err, n) => (err ? reject(err) : resolve(n))));

  for (const c of CASES) {
    it(`${c.name}: the 221 arrives whole, then the server closes while the client keeps its socket open`, async () => {
      const { server, port, quits } = await start(c);
      const client = await lingeringClient(port, c.secure);
      await client.until(/^220 /m);
      client.sock.write('EHLO quit.test\r\n');
      await client.until(/^250 /m);
      assert.equal(await openConnections(server), 1);
      client.sock.write('QUIT\r\n');
      const text = await client.until(/^221 .*\r\n/m);
      assert.match(text, /\r\n221 [^\r\n]*Bye\r\n$/, 'the 221 arrived whole, and last');
      // The client neither closes nor ends its side: the server's must go by itself, well
      // before the 5 s a connection that will not drain is given.
      await waitUntil('the server closed the connection after its 221', async () => (await openConnections(server)) === 0, 2_000);
      client.sock.destroy();
      if (c.onQuit) assert.equal(quits.length, 1, 'the quit hook ran before the 221');
    });
  }

  it('a closed connection is garbage at once: nothing keeps its session alive', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const alive = new Set<string>();
    const gone = new FinalizationRegistry<string>((id) => alive.delete(id));
    const { server, port } = await listen({
      hooks: {
        connect: async (session) => {
          alive.add(session.id);
          gone.register(session, session.id);
          return undefined;
        },
      },
    });
    const SESSIONS = 30;
    for (let i = 0; i < SESSIONS; i++) {
      const client = await lingeringClient(port, false);
      await client.until(/^220 /m);
      client.sock.write('QUIT\r\n');
      await client.until(/^221 /m);
      client.sock.destroy();
    }
    await waitUntil('every connection closed', async () => (await openConnections(server)) === 0 && server.connections.size === 0, 5_000);
    assert.equal(alive.size, SESSIONS);
    // Well within the 5 s a connection that will not drain is given: only a leak can hold them now.
    await waitUntil(`the sessions collected (${alive.size} of ${SESSIONS} still alive)`, async () => {
      gc();
      await new Promise((r) => setImmediate(r));
      return alive.size === 0;
    }, 2_000);
  });
});
