/**
 * The Postfix services' throughput, measured with small protocol load
 * generators (no Postfix in the loop, so the numbers are smarthost's side
 * alone): a gateway with `listeners: []` and both services, the shipped
 * residential plan's quotas, a subscriber netblock 100.64.0.0/10 whose identity.yaml domain is
 * example.com, an RSA-2048 DKIM key for example.com, no DNSBL zones,
 * logging at info to /dev/null.
 *
 *   policy service   RCPT requests (connect + mail once per message by
 *                    `instance`, then rcpt; 2 recipients a message) from
 *                    10,000 subscriber addresses in rotation, over
 *                    POSTFIX_BENCH_CONNECTIONS persistent connections, one
 *                    request at a time on each (as Postfix's smtpd does)
 *   milter           whole messages (negotiation once per connection;
 *                    connect, helo, mail, rcpt, 6 headers, body of
 *                    POSTFIX_BENCH_BODY bytes in 64 KiB chunks, end of
 *                    message; then QUIT_NC and the next) over the same
 *                    number of connections; a message counts as signed
 *                    when its end-of-message answer carried a DKIM-Signature
 *
 * Bounded: POSTFIX_BENCH_SECONDS per case (default 5).
 *
 *   npm run build && node dist/bench/postfix.js
 */
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import { build } from '../src/app';
import { loadConfigFile } from '../src/config/load';
import { dkimKeygen } from '../src/dkim/cli';
import { CMD, cstr, packet, PacketReader, REPLY, type Packet } from '../src/postfix/milter/protocol';
import { prepareGateway } from '../test/helpers/gateway';

const SECONDS = Number(process.env.POSTFIX_BENCH_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.POSTFIX_BENCH_CONNECTIONS ?? 16);
const BODY = Number(process.env.POSTFIX_BENCH_BODY ?? 4096);

const subscriber = (i: number) => `100.64.${(i >> 8) & 255}.${i & 255}`;

/** One persistent connection reading whole replies in order. */
class Conn {
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private constructor(readonly s: net.Socket) {
    s.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      for (const w of this.waiters.splice(0)) w();
    });
  }
  static async open(port: number): Promise<Conn> {
    const s = net.connect(port, '127.0.0.1');
    s.setNoDelay(true);
    await new Promise((r) => s.once('connect', r));
    return new Conn(s);
  }
  /** Wait until `take` finds a complete reply at the front of the buffer; returns it. */
  async next<T>(take: (b: Buffer) => [T, number] | undefined): Promise<T> {
    for (;;) {
      const got = take(this.buf);
      if (got) {
        this.buf = this.buf.subarray(got[1]);
        return got[0];
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
}

async function policyCase(port: number): Promise<{ requests: number; perSec: number; actions: Record<string, number> }> {
  const conns = await Promise.all(Array.from({ length: CONNECTIONS }, () => Conn.open(port)));
  const actions: Record<string, number> = {};
  let n = 0;
  const until = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(
    conns.map(async (c, ci) => {
      for (let i = 0; performance.now() < until; i++) {
        const msg = Math.floor(i / 2);
        const ip = subscriber((ci * 7919 + msg) % 10_000);
        c.s.write(
          `request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=${ip}\nclient_name=unknown\nhelo_name=pc\nsender=user@example.com\nrecipient=r${i}@dest.example\ninstance=${ci}.${msg}\nrecipient_count=0\nsize=0\n\n`,
        );
        const a = await c.next((b) => {
          const end = b.indexOf('\n\n');
          return end < 0 ? undefined : [b.subarray(0, end).toString(), end + 2];
        });
        const kind = a.replace(/^action=/, '').split(' ')[0]!;
        actions[kind] = (actions[kind] ?? 0) + 1;
        n++;
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  for (const c of conns) c.s.destroy();
  return { requests: n, perSec: n / secs, actions };
}

function u32(...ns: number[]): Buffer {
  const b = Buffer.alloc(4 * ns.length);
  ns.forEach((v, i) => b.writeUInt32BE(v >>> 0, i * 4));
  return b;
}

const takePacket = (b: Buffer): [Packet, number] | undefined => {
  if (b.length < 4) return undefined;
  const len = b.readUInt32BE(0);
  if (b.length < 4 + len) return undefined;
  return [new PacketReader().push(Buffer.from(b.subarray(0, 4 + len)))[0]!, 4 + len];
};

async function milterCase(port: number): Promise<{ messages: number; signed: number; perSec: number }> {
  const body = Buffer.from(`${'The quick brown fox jumps over the lazy dog. '.repeat(Math.ceil(BODY / 46)).slice(0, BODY - 2)}\r\n`);
  const chunks: Buffer[] = [];
  for (let off = 0; off < body.length; off += 65_535) chunks.push(packet(CMD.BODY, body.subarray(off, off + 65_535)));
  const conns = await Promise.all(Array.from({ length: CONNECTIONS }, () => Conn.open(port)));
  let messages = 0;
  let signed = 0;
  const until = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(
    conns.map(async (c, ci) => {
      c.s.write(packet(CMD.OPTNEG, u32(6, 0x1ff, 0x1fffff)));
      await c.next(takePacket);
      for (let i = 0; performance.now() < until; i++) {
        const ip = subscriber((ci * 7919 + i) % 10_000);
        const port2 = Buffer.alloc(2);
        // Replies expected: connect, helo, mail, rcpt (headers, EOH, body: none asked for), then end of message.
        c.s.write(
          Buffer.concat([
            packet(CMD.CONNECT, Buffer.concat([cstr('unknown'), Buffer.from('4'), port2, cstr(ip)])),
            packet(CMD.HELO, cstr('pc')),
            packet(CMD.MAIL, cstr('<bench@example.com>')),
            packet(CMD.RCPT, cstr(`<r${i}@dest.example>`)),
            packet(CMD.HEADER, cstr('From', 'Bench <bench@example.com>')),
            packet(CMD.HEADER, cstr('To', `r${i}@dest.example`)),
            packet(CMD.HEADER, cstr('Subject', `message ${i}`)),
            packet(CMD.HEADER, cstr('Date', new Date().toUTCString())),
            packet(CMD.HEADER, cstr('Message-ID', `<${ci}.${i}@example.com>`)),
            packet(CMD.HEADER, cstr('MIME-Version', '1.0')),
            packet(CMD.EOH),
            ...chunks,
            packet(CMD.BODYEOB),
          ]),
        );
        for (let k = 0; k < 4; k++) await c.next(takePacket);
        let sig = false;
        for (;;) {
          const p = await c.next(takePacket);
          if (p.cmd === REPLY.INSHEADER) sig = true;
          else break;
        }
        messages++;
        if (sig) signed++;
        c.s.write(packet(CMD.QUIT_NC));
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  for (const c of conns) c.s.destroy();
  return { messages, signed, perSec: signed / secs };
}

async function main(): Promise<void> {
  const { dir, configFile } = await prepareGateway({
    netblocks: [{ cidr: '100.64.0.0/10', class: 'residential-dynamic' }],
    policyFiles: {
      // The shipped residential plan.
      'quotas.yaml': 'plans:\n  residential: { messagesPerHour: 100, recipientsPerHour: 200, recipientsPerDay: 1000, recipientsPerMessage: 50, concurrentConnections: 5 }\ndefaultPlan: residential\nclassPlans: { residential-dynamic: residential }\n',
      'identity.yaml': 'intercept:\n  classes:\n    residential-dynamic:\n      domains: [example.com]\n      envelopeSender: any\n      headerFrom: any\n',
    },
    config: {
      listeners: [],
      dkim: { keysDir: 'dkim' },
      postfix: { policyService: { address: '127.0.0.1', port: 0 }, milter: { address: '127.0.0.1', port: 0 } },
    },
  });
  await dkimKeygen({ keysDir: path.join(dir, 'dkim'), domain: 'example.com', selector: 'bench', algo: 'rsa', activeFrom: new Date(Date.now() - 3_600_000) });
  const app = await build(loadConfigFile(configFile), { logger: pino({ level: 'info' }, pino.destination({ dest: '/dev/null', sync: true })) });
  await app.start();
  try {
    const p = await policyCase(app.postfix!.policyService!.port);
    console.log(`policy service: ${p.perSec.toFixed(0)} requests/s (${p.requests} RCPT requests in ${SECONDS} s over ${CONNECTIONS} connections; answers ${JSON.stringify(p.actions)})`);
    const m = await milterCase(app.postfix!.milter!.port);
    console.log(`milter: ${m.perSec.toFixed(0)} signed messages/s (${m.signed} of ${m.messages} messages signed d=example.com, RSA-2048, ${BODY}-byte body, ${SECONDS} s over ${CONNECTIONS} connections)`);
  } finally {
    await app.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

void main().catch((err) => {
  console.error(err);
  process.exit(1);
});
