/**
 * Scenario: an intercept listener behind a TCP load balancer (127.0.0.30,
 * outside the subscriber netblocks) that sends the PROXY protocol header.
 * From the balancer, v1 and v2 headers make the policies see the
 * subscriber: a declared 127.0.0.5 passes the netblock gate and relays, a
 * declared outside address is refused; v2 LOCAL (the balancer's health
 * check) is the balancer itself; no header at all is refused. From any
 * other address a PROXY line is not believed: the gateway has already
 * greeted the real peer and answers the line as an unknown command.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { buildProxyV2, parseProxyV2 } from '../../src/fleet/proxy-protocol';
import type { TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startDestination, type TestMx } from '../helpers/test-mx';

const LB = '127.0.0.30';

/** Connect from `from`, send `first` before anything else, return the client. */
async function connectWith(port: number, from: string, first?: Buffer | string): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port, { localAddress: from });
  if (first !== undefined) c.write(first);
  return c;
}

/** Everything the server sends until it closes (or ms pass). */
function rawExchange(port: number, from: string, send: string, ms = 3000): Promise<{ data: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: from });
    let data = '';
    const t = setTimeout(() => (s.destroy(), resolve({ data, closed: false })), ms);
    s.on('connect', () => s.write(send));
    s.on('data', (d) => (data += d.toString()));
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(t);
      resolve({ data, closed: true });
    });
  });
}

async function relayOne(c: RawSmtp, seq: string): Promise<string> {
  await c.cmd('EHLO home-server.test');
  assert.match((await c.cmd('MAIL FROM:<anything@home.test>')).text, /^250 /);
  assert.match((await c.cmd('RCPT TO:<erin@dest.test>')).text, /^250 /);
  const r = await c.data(message({ from: 'anything@home.test', to: 'erin@dest.test', headers: [`X-Seq: ${seq}`] }));
  await c.quit();
  return r.text;
}

describe('PROXY protocol on a listener behind a load balancer', { timeout: 30_000 }, () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: TestGateway;
  let port: number;

  before(async () => {
    ({ dns, mx } = await startDestination());
    gw = await startGateway({
      config: {
        listeners: [{ name: 'intercept', role: 'intercept', address: '127.0.0.1', port: 0, security: 'none', greetDelay: '0ms', proxyFrom: [LB] }],
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port },
      },
    });
    port = gw.port('intercept');
  });
  after(async () => {
    await gw.stop();
    await mx.close();
    await dns.close();
  });

  const receivedFor = async (seq: string) => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const m = mx.messages.find((x) => x.data.toString().includes(`X-Seq: ${seq}`));
      if (m) return m.data.toString();
      if (Date.now() > deadline) throw new Error(`message ${seq} never arrived`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  it('v1 from the balancer: policies see the declared subscriber (netblock gate passes, relays)', async () => {
    const c = await connectWith(port, LB, 'PROXY TCP4 127.0.0.5 127.0.0.1 40001 25\r\n');
    assert.match((await c.reply()).text, /^220 /);
    assert.match(await relayOne(c, 'v1-in'), /^250 2\.0\.0 /);
    assert.match(await receivedFor('v1-in'), /from home-server\.test \(\[127\.0\.0\.5\]\)/);
  });

  it('v1 from the balancer declaring an address outside the netblocks: refused 554 5.7.1', async () => {
    const c = await connectWith(port, LB, 'PROXY TCP4 127.0.0.20 127.0.0.1 40002 25\r\n');
    assert.match((await c.reply()).text, /^554 5\.7\.1 Relay access denied/);
    c.close();
  });

  it('v2 from the balancer: the same, from the binary header', async () => {
    const c = await connectWith(port, LB, buildProxyV2({ source: '127.0.0.5', dest: '127.0.0.1', sourcePort: 40003, destPort: 25 }));
    assert.match((await c.reply()).text, /^220 /);
    assert.match(await relayOne(c, 'v2-in'), /^250 2\.0\.0 /);
    assert.match(await receivedFor('v2-in'), /\(\[127\.0\.0\.5\]\)/);
    const out = await connectWith(port, LB, buildProxyV2({ source: '127.0.0.20' }));
    assert.match((await out.reply()).text, /^554 5\.7\.1 /);
    out.close();
  });

  it('bytes after the v2 header reach the SMTP session (an early talker stays one behind a balancer)', async () => {
    const c = await connectWith(port, LB, Buffer.concat([buildProxyV2({ source: '127.0.0.5' }), Buffer.from('EHLO early.test\r\n')]));
    assert.match((await c.reply()).text, /^421 4\.7\.0 Talking before the greeting/);
    c.close();
  });

  it('v2 LOCAL (a balancer health check) is the balancer itself', async () => {
    const c = await connectWith(port, LB, buildProxyV2({ command: 'local' }));
    // The balancer's own address is outside the subscriber netblocks.
    assert.match((await c.reply()).text, /^554 5\.7\.1 /);
    c.close();
  });

  it('the balancer without a header, or with a malformed one, is refused before any SMTP', async () => {
    const plain = await rawExchange(port, LB, 'EHLO no-header.test\r\n');
    assert.equal(plain.closed, true);
    assert.match(plain.data, /^\* BAD Invalid PROXY header/);
    const bad = await rawExchange(port, LB, 'PROXY TCP4 not-an-ip 127.0.0.1 1 25\r\n');
    assert.match(bad.data, /^\* BAD/);
    const badV2 = Buffer.from(buildProxyV2({ source: '127.0.0.5' }));
    badV2[12] = 0x31; // version 3
    const v2 = await rawExchange(port, LB, badV2.toString('latin1'));
    assert.equal(v2.closed, true);
    assert.match(v2.data, /^\* BAD/);
  });

  it('from an address that is not a balancer, a PROXY line is not honoured', async () => {
    // Inside the netblocks: greeted as itself, the line is an unknown command, mail is its own.
    const c = await RawSmtp.connect(port, { localAddress: '127.0.0.6' });
    assert.match((await c.reply()).text, /^220 /);
    const r = await c.cmd('PROXY TCP4 127.0.0.9 127.0.0.1 40004 25');
    assert.match(r.text, /^500 5\.5\.2 Command not recognized/);
    assert.match(await relayOne(c, 'spoof'), /^250 /);
    const got = await receivedFor('spoof');
    assert.match(got, /\(\[127\.0\.0\.6\]\)/);
    assert.doesNotMatch(got, /127\.0\.0\.9/);
    // Outside the netblocks, claiming to be a subscriber: refused as what it is.
    const spoofer = await connectWith(port, '127.0.0.21', 'PROXY TCP4 127.0.0.5 127.0.0.1 40005 25\r\n');
    assert.match((await spoofer.reply()).text, /^554 5\.7\.1 Relay access denied/);
    spoofer.close();
  });

  it('parses v2 IPv4, IPv6 and IPv4-mapped addresses', () => {
    assert.deepEqual(parseProxyV2(buildProxyV2({ source: '192.0.2.7', dest: '198.51.100.1', sourcePort: 5555, destPort: 25 })), {
      command: 'proxy',
      remoteAddress: '192.0.2.7',
      localAddress: '198.51.100.1',
      remotePort: 5555,
      localPort: 25,
    });
    assert.equal((parseProxyV2(buildProxyV2({ source: '2001:db8::5', dest: '2001:db8::1' })) as { remoteAddress: string }).remoteAddress, '2001:db8::5');
    assert.equal((parseProxyV2(buildProxyV2({ source: '::ffff:192.0.2.9', dest: '::1' })) as { remoteAddress: string }).remoteAddress, '192.0.2.9');
    assert.deepEqual(parseProxyV2(buildProxyV2({ command: 'local' })), { command: 'local' });
    assert.throws(() => parseProxyV2(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n')), /not a PROXY v2/);
  });
});
