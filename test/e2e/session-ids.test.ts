/**
 * A connection's session id (logs' `sid`, the key of the session's state)
 * comes from a per-process tag and a counter (src/smtp/server.ts), not from
 * a CSPRNG call per connection: 16 base-32 characters. A connection that
 * sends a PROXY header is numbered the same way.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { bareSmtpServers } from '../helpers/bare-smtp-server';
import { RawSmtp } from '../helpers/smtp-client';

const BALANCER = '127.0.0.7';

describe('session ids', () => {
  const seen: Array<{ id: string; ip: string }> = [];
  const listen = bareSmtpServers();
  let port: number;

  before(async () => {
    ({ port } = await listen({
      proxyTrusted: (address) => address === BALANCER,
      hooks: {
        connect: async (session) => {
          seen.push({ id: session.id, ip: session.remoteAddress });
          return undefined;
        },
      },
    }));
  });

  async function session(first?: string, localAddress?: string): Promise<void> {
    const c = await RawSmtp.connect(port, localAddress ? { localAddress } : {});
    if (first) c.write(first);
    assert.equal((await c.reply()).code, 220);
    assert.equal((await c.cmd('QUIT')).code, 221);
    c.close();
  }

  it('numbers the connections of one process under one tag', async () => {
    seen.length = 0;
    for (let i = 0; i < 3; i++) await session();
    const ids = seen.map((s) => s.id);
    assert.equal(ids.length, 3);
    for (const id of ids) assert.match(id, /^[0-9a-v]{16}$/);
    assert.equal(new Set(ids.map((id) => id.slice(0, 8))).size, 1, `one process tag: ${ids.join(' ')}`);
    const counters = ids.map((id) => parseInt(id.slice(8), 32));
    assert.deepEqual(counters, [counters[0], counters[0]! + 1, counters[0]! + 2], `consecutive: ${ids.join(' ')}`);
  });

  it('numbers a connection with a PROXY header the same way, with the declared peer', async () => {
    seen.length = 0;
    await session('PROXY TCP4 192.0.2.10 127.0.0.1 40000 25\r\n', BALANCER);
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.ip, '192.0.2.10');
    assert.match(seen[0]!.id, /^[0-9a-v]{16}$/);
  });
});
