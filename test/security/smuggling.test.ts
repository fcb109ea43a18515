/**
 * Scenario: SMTP smuggling. A client hides a second message after a
 * non-standard end of data (<LF>.<LF>, <CR>.<CR>, <LF>.<CR><LF>,
 * <CR><LF>.<LF>, <CR><LF>.<CR> ...). The gateway ends DATA only on
 * <CR><LF>.<CR><LF>, normalises bare CR and LF to CRLF (src/smtp/collect.ts)
 * and the relay client dot-stuffs, so the downstream server never sees a
 * second end of data. Proven against a deliberately LENIENT sink (a raw TCP
 * SMTP server here, like the vulnerable servers of the 2023 reports) that
 * ends DATA at any of "\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r\n": one message
 * in, exactly one transaction out, and the smuggled MAIL FROM never
 * appears as a transaction of its own. With `smtp.bareNewline: reject`
 * every payload carrying a bare CR or LF is refused (554 5.6.0) and
 * nothing of it reaches the sink.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { RawSmtp } from '../helpers/smtp-client';
import { sleep } from './util';

interface SinkTx {
  mailFrom: string;
  rcpts: string[];
  data: string;
}

/** A lenient SMTP server: any of the ends below closes DATA, and what follows is read as commands. */
async function startLenientSink(host: string): Promise<{ port: number; txs: SinkTx[]; commands: string[]; close(): Promise<void> }> {
  const txs: SinkTx[] = [];
  const commands: string[] = [];
  const ENDS = ['\r\n.\r\n', '\n.\n', '\n.\r\n', '\r.\r', '\r\n.\n', '\n.\r'];
  const server = net.createServer((sock) => {
    sock.setEncoding('latin1');
    let buf = '';
    let inData = false;
    let cur: SinkTx = { mailFrom: '', rcpts: [], data: '' };
    const reply = (s: string) => sock.write(`${s}\r\n`);
    reply('220 lenient.sink ESMTP');
    sock.on('data', (d: string) => {
      buf += d;
      for (;;) {
        if (inData) {
          // The earliest of any "end of data" this server believes in.
          let at = -1;
          let len = 0;
          for (const e of ENDS) {
            const i = buf.indexOf(e);
            if (i >= 0 && (at < 0 || i < at)) [at, len] = [i, e.length];
          }
          // "\r\n." at the very start of data counts as well (".\r\n" first line).
          if (buf.startsWith('.\r\n') || buf.startsWith('.\n')) [at, len] = [0, buf.startsWith('.\r\n') ? 3 : 2];
          if (at < 0) return;
          cur.data = buf.slice(0, at);
          buf = buf.slice(at + len);
          inData = false;
          txs.push(cur);
          cur = { mailFrom: '', rcpts: [], data: '' };
          reply('250 2.0.0 queued');
          continue;
        }
        const m = /\r?\n/.exec(buf);
        if (!m) return;
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        commands.push(line);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO' || verb === 'HELO') reply('250 lenient.sink');
        else if (verb === 'MAIL') {
          cur = { mailFrom: /<([^>]*)>/.exec(line)?.[1] ?? '', rcpts: [], data: '' };
          reply('250 2.1.0 ok');
        } else if (verb === 'RCPT') {
          cur.rcpts.push(/<([^>]*)>/.exec(line)?.[1] ?? '');
          reply('250 2.1.5 ok');
        } else if (verb === 'DATA') {
          inData = true;
          reply('354 go ahead');
        } else if (verb === 'QUIT') {
          reply('221 bye');
          sock.end();
        } else reply('250 ok');
      }
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  const a = server.address();
  return {
    port: typeof a === 'object' && a ? a.port : 0,
    txs,
    commands,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** Each payload is DATA content ending with the real CRLF.CRLF; the smuggled part sits before it. */
const SMUGGLED_FROM = 'smuggled@evil.test';
const hidden = (sep: string, after = '\r\n') =>
  `From: <me@home.test>\r\nTo: <a@dest.test>\r\nSubject: outer\r\n\r\nouter body${sep}MAIL FROM:<${SMUGGLED_FROM}>${after}RCPT TO:<victim@dest.test>${after}DATA${after}From: <ceo@bank.test>${after}Subject: smuggled${after}${after}pay now`;
const PAYLOADS: Array<[string, string]> = [
  ['<LF>.<LF>', hidden('\n.\n')],
  ['<LF>.<CR><LF>', hidden('\n.\r\n')],
  ['<CR><LF>.<LF>', hidden('\r\n.\n')],
  ['<CR>.<CR>', hidden('\r.\r', '\r')],
  ['<CR><LF>.<CR>', hidden('\r\n.\r', '\r')],
  ['<LF>.<CR>', hidden('\n.\r')],
  ['<CR>.<CR><LF>', hidden('\r.\r\n')],
  ['<CR>.<LF>', hidden('\r.\n', '\n')],
  ['bare LF lines', hidden('\n\n.\n', '\n')],
  ['NUL before dot', hidden('\r\n\x00.\r\n')],
];

describe('SMTP smuggling', () => {
  let dns: TestDns;
  let sink: Awaited<ReturnType<typeof startLenientSink>>;
  let gw: TestGateway;

  before(async () => {
    dns = await startDnsServer();
    sink = await startLenientSink('127.0.0.2');
    dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
    dns.set('mx.dest.test', 'A', ['127.0.0.2']);
    gw = await startGateway({
      config: { relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: sink.port, backoff: ['500ms'] }, limits: { maxConnectionsPerIp: 100 } },
    });
  });
  after(async () => {
    await gw.stop();
    await sink.close();
    await dns.close();
  });

  it('one message in, one transaction out, for every end-of-data variant', async () => {
    let accepted = 0;
    for (const [name, payload] of PAYLOADS) {
      const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.5' });
      await c.reply();
      await c.cmd('EHLO home.test');
      assert.equal((await c.cmd('MAIL FROM:<me@home.test>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<a@dest.test>')).code, 250);
      const r = await c.data(`${payload}\r\n.\r\n`);
      // Either refused outright or accepted as ONE message; never a second reply for a hidden one.
      assert.ok(r.code === 250 || r.code === 554, `${name}: ${r.text}`);
      if (r.code === 250) accepted++;
      const extra = await c.reply(300).catch(() => undefined);
      assert.equal(extra, undefined, `${name}: no second reply on the client side`);
      c.close();
    }
    const deadline = Date.now() + 20_000;
    while (sink.txs.length < accepted && Date.now() < deadline) await sleep(50);
    await sleep(500); // anything extra would have arrived by now
    console.log(`# smuggling: ${PAYLOADS.length} payloads, ${accepted} accepted, ${sink.txs.length} transactions downstream`);
    assert.equal(sink.txs.length, accepted, 'exactly one downstream transaction per accepted message');
    for (const tx of sink.txs) {
      assert.notEqual(tx.mailFrom, SMUGGLED_FROM);
      assert.deepEqual(tx.rcpts, ['a@dest.test']);
      // The hidden commands arrive as (dot-stuffed, CRLF) text of the one message.
      assert.match(tx.data, /MAIL FROM:<smuggled@evil\.test>/);
      assert.doesNotMatch(tx.data, /(^|[^\r])\n|\r(?!\n)/, 'no bare CR or LF reaches the next hop');
    }
    assert.ok(!sink.commands.some((l) => l.includes(SMUGGLED_FROM)), 'the smuggled MAIL FROM never reached the sink as a command');
  });

  it('control: the sink really is fooled when a payload reaches it unnormalised', async () => {
    const before = sink.txs.length;
    const c = await RawSmtp.connect(sink.port, { host: '127.0.0.2' });
    await c.reply();
    await c.cmd('EHLO direct.test');
    await c.cmd('MAIL FROM:<me@home.test>');
    await c.cmd('RCPT TO:<a@dest.test>');
    await c.data(`${PAYLOADS[0]![1]}\r\n.\r\n`);
    await sleep(200);
    c.close();
    assert.equal(sink.txs.length - before, 2, 'two transactions from one DATA: the vulnerability the gateway must not pass on');
    assert.equal(sink.txs[sink.txs.length - 1]!.mailFrom, SMUGGLED_FROM);
  });
});

describe('SMTP smuggling, smtp.bareNewline: reject', () => {
  let dns: TestDns;
  let sink: Awaited<ReturnType<typeof startLenientSink>>;
  let gw: TestGateway;

  before(async () => {
    dns = await startDnsServer();
    sink = await startLenientSink('127.0.0.3');
    dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
    dns.set('mx.dest.test', 'A', ['127.0.0.3']);
    gw = await startGateway({
      config: {
        smtp: { bareNewline: 'reject' },
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: sink.port, backoff: ['500ms'] },
        limits: { maxConnectionsPerIp: 100 },
      },
    });
  });
  after(async () => {
    await gw.stop();
    await sink.close();
    await dns.close();
  });

  it('refuses every payload with a bare CR or LF (554 5.6.0); the clean one is relayed alone', async () => {
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.5' });
    await c.reply();
    await c.cmd('EHLO home.test');
    let accepted = 0;
    for (const [name, payload] of PAYLOADS) {
      assert.equal((await c.cmd('MAIL FROM:<me@home.test>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<a@dest.test>')).code, 250);
      const r = await c.data(`${payload}\r\n.\r\n`);
      const bare = /(^|[^\r])\n|\r(?!\n)/.test(payload);
      if (bare) assert.match(r.text, /^554 5\.6\.0 /, `${name}: ${r.text}`);
      else {
        assert.equal(r.code, 250, `${name}: ${r.text}`);
        accepted++;
      }
      // The session goes on after a refusal: no hidden command ran in it.
      assert.equal((await c.cmd('RSET')).code, 250);
    }
    c.close();
    const deadline = Date.now() + 10_000;
    while (sink.txs.length < accepted && Date.now() < deadline) await sleep(50);
    await sleep(500);
    console.log(`# smuggling (reject): ${PAYLOADS.length} payloads, ${accepted} accepted, ${sink.txs.length} transactions downstream`);
    assert.equal(sink.txs.length, accepted);
    assert.ok(!sink.commands.some((l) => l.includes(SMUGGLED_FROM)));
  });
});
