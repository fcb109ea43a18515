/**
 * The milter's guarantees at the protocol level (no Postfix in the loop).
 *
 * The body is streamed. A 192 MiB body sent as 64 KiB
 * BODY packets as fast as the socket takes them never grows this process's
 * Buffer memory by more than a third of it (the body is hashed and counted,
 * not held: measured ~32 MiB of uncollected garbage; held, 215 MiB), and
 * the message is still judged and signed at end of message. The gateway runs in this process, so its buffers are what is measured;
 * the sender writes one reused packet, so it adds nothing.
 *
 * A hold never becomes a delivery: quarantined when the MTA granted the
 * quarantine action, else 451 4.3.0.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { build, type App } from '../../src/app';
import { loadConfigFile } from '../../src/config/load';
import { dkimKeygen } from '../../src/dkim/cli';
import { CMD, cstr, packet, PacketReader, REPLY } from '../../src/postfix/milter/protocol';
import { prepareGateway } from '../helpers/gateway';

const BODY_MIB = 192;

function u32(...ns: number[]): Buffer {
  const b = Buffer.alloc(4 * ns.length);
  ns.forEach((v, i) => b.writeUInt32BE(v >>> 0, i * 4));
  return b;
}

/** One message from `ip` to `rcpts` with the actions granted; the reply commands and the end-of-message reply text. */
async function session(port: number, actions: number, ip: string, rcpts: string[]): Promise<{ cmds: string[]; text: string }> {
  const s = net.connect(port, '127.0.0.1');
  await new Promise((r) => s.once('connect', r));
  const reader = new PacketReader();
  const got: Array<{ cmd: string; data: Buffer }> = [];
  s.on('data', (d: Buffer) => got.push(...reader.push(d)));
  const port2 = Buffer.alloc(2);
  s.write(
    Buffer.concat([
      packet(CMD.OPTNEG, u32(6, actions, 0x1fffff)),
      packet(CMD.CONNECT, Buffer.concat([cstr('pc'), Buffer.from('4'), port2, cstr(ip)])),
      packet(CMD.MAIL, cstr('<me@example.com>')),
      ...rcpts.map((r) => packet(CMD.RCPT, cstr(`<${r}>`))),
      packet(CMD.HEADER, cstr('From', 'me@example.com')),
      packet(CMD.EOH),
      packet(CMD.BODY, Buffer.from('hello\r\n')),
      packet(CMD.BODYEOB),
    ]),
  );
  // optneg, connect, mail, each rcpt, then end of message ends with a continue or a reply code.
  const until = 3 + rcpts.length;
  for (let i = 0; i < 200 && !(got.length > until && [REPLY.CONTINUE, REPLY.REPLYCODE].includes(got.at(-1)!.cmd as never)); i++) await new Promise((r) => setTimeout(r, 25));
  s.destroy();
  const last = got.at(-1);
  return { cmds: got.slice(until).map((p) => p.cmd), text: last?.cmd === REPLY.REPLYCODE ? last.data.toString().replace(/\0$/, '') : '' };
}

describe('milter protocol guarantees', () => {
  let app: App;
  let dir: string;

  before(async () => {
    const g = await prepareGateway({
      netblocks: [{ cidr: '127.0.0.0/28', class: 'residential-dynamic' }],
      policyFiles: {
        'quotas.yaml': 'plans:\n  residential: { recipientsPerHour: 1, onExceed: hold }\ndefaultPlan: residential\nclassPlans: { residential-dynamic: residential }\n',
        'identity.yaml': 'intercept:\n  classes: {}\n  netblocks:\n    - cidr: 127.0.0.0/28\n      domains: [example.com]\n',
      },
      config: { listeners: [], dkim: { keysDir: 'dkim' }, limits: { maxMessageSize: '1GB' }, postfix: { milter: { address: '127.0.0.1', port: 0 } } },
    });
    dir = g.dir;
    await dkimKeygen({ keysDir: path.join(dir, 'dkim'), domain: 'example.com', selector: 's1', algo: 'rsa', activeFrom: new Date(Date.now() - 3_600_000) });
    app = await build(loadConfigFile(g.configFile), { logger: pino({ level: 'silent' }) });
    await app.start();
  });
  after(async () => {
    await app?.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('a hold is quarantined when the MTA granted quarantine, else deferred (451 4.3.0), never delivered', async () => {
    const port = app.postfix!.milter!.port;
    // The second recipient is over the plan's one an hour: hold.
    const granted = await session(port, 0x1ff, '127.0.0.3', ['a@dest.test', 'b@dest.test']);
    assert.ok(granted.cmds.includes(REPLY.QUARANTINE), JSON.stringify(granted));
    assert.equal(granted.cmds.at(-1), REPLY.CONTINUE);
    const refused = await session(port, 0x01, '127.0.0.4', ['a@dest.test', 'b@dest.test']);
    assert.ok(!refused.cmds.includes(REPLY.QUARANTINE) && !refused.cmds.includes(REPLY.INSHEADER), JSON.stringify(refused));
    assert.match(refused.text, /^451 4\.3\.0 /);
  });

  it(`a ${BODY_MIB} MiB body: memory stays flat, the message is signed`, { timeout: 120_000 }, async () => {
    const s = net.connect(app.postfix!.milter!.port, '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    const reader = new PacketReader();
    const replies: string[] = [];
    s.on('data', (d: Buffer) => replies.push(...reader.push(d).map((p) => p.cmd)));
    const port = Buffer.alloc(2);
    const opt = Buffer.alloc(12);
    opt.writeUInt32BE(6, 0);
    opt.writeUInt32BE(0x1ff, 4);
    opt.writeUInt32BE(0x1fffff, 8);
    s.write(
      Buffer.concat([
        packet(CMD.OPTNEG, opt),
        packet(CMD.CONNECT, Buffer.concat([cstr('pc'), Buffer.from('4'), port, cstr('127.0.0.2')])),
        packet(CMD.HELO, cstr('pc')),
        packet(CMD.MAIL, cstr('<me@example.com>')),
        packet(CMD.RCPT, cstr('<you@dest.test>')),
        packet(CMD.HEADER, cstr('From', 'me@example.com')),
        packet(CMD.HEADER, cstr('Subject', 'big')),
        packet(CMD.EOH),
      ]),
    );
    global.gc?.();
    const base = process.memoryUsage();
    let peak = 0;
    let peakRss = 0;
    const chunk = packet(CMD.BODY, Buffer.alloc(65_535, 'a\r\nbc  d\t\r\n'));
    const n = Math.ceil((BODY_MIB * 1024 * 1024) / 65_535);
    for (let i = 0; i < n; i++) {
      if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
      if (i % 64 === 0) {
        const m = process.memoryUsage();
        peak = Math.max(peak, m.arrayBuffers - base.arrayBuffers);
        peakRss = Math.max(peakRss, m.rss - base.rss);
      }
    }
    s.write(packet(CMD.BODYEOB));
    for (let i = 0; i < 600 && !replies.includes(REPLY.INSHEADER); i++) await new Promise((r) => setTimeout(r, 50));
    s.destroy();
    const mib = peak / 1024 / 1024;
    console.log(`# ${BODY_MIB} MiB body: peak growth of Buffer memory ${mib.toFixed(1)} MiB, of RSS ${(peakRss / 1024 / 1024).toFixed(1)} MiB`);
    assert.ok(replies.includes(REPLY.INSHEADER), `signed: replies ${replies.join(',')}`);
    // Garbage awaiting collection (socket reads, packet reassembly) stays around 32 MiB; held, it is the whole body.
    assert.ok(mib < BODY_MIB / 3, `Buffer memory grew ${mib.toFixed(1)} MiB for a ${BODY_MIB} MiB body`);
  });
});
