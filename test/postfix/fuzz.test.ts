/**
 * Scenario: seeded, bounded fuzzing of both Postfix sockets of a running
 * gateway (in this process: a crash fails the run). Sessions are generated
 * from a seed (FUZZ_SEED replays one): well-formed conversations with odd
 * values, the same with mutated bytes, and random bytes; written in random
 * slices; ended by a close or a reset.
 *
 * Oracles: no uncaught error; nothing logged at error level (a check that
 * throws on odd input is a bug); every well-formed policy conversation gets
 * exactly one answer per request, each a bounded `action=` line; every milter
 * reply is a well-formed packet; all sockets are closed afterwards; a clean
 * request and a clean milter session are still answered as before.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { build, type App } from '../../src/app';
import { loadConfigFile } from '../../src/config/load';
import { CMD, cstr, packet, PacketReader, REPLY } from '../../src/postfix/milter/protocol';
import { PolicyService } from '../../src/postfix/policy-service';
import { Rng } from '../fuzz/engine';
import { prepareGateway } from '../helpers/gateway';
import { DNSBL, NETBLOCKS, QUOTAS } from './fixtures';

const SESSIONS = Number(process.env.FUZZ_SESSIONS ?? 600);
const SEED = Number(process.env.FUZZ_SEED ?? 0x9057f1c5);

const STATES = ['CONNECT', 'EHLO', 'HELO', 'MAIL', 'RCPT', 'DATA', 'END-OF-MESSAGE', 'VRFY', 'ETRN', '', 'rcpt', 'BOGUS'];
const IPS = ['127.0.0.2', '127.0.0.3', '127.0.0.17', '10.0.0.1', '::1', 'IPv6:::1', 'unknown', '', '999.1.1.1', '127.0.0.1\u0000x'];
const ADDRS = ['a@dest.test', '', '<>', 'orders@bakery.test', 'x'.repeat(300), '"q@x"@y', 'ü@ü.test', '@a:b@c', 'a@', '@'];

function value(r: Rng, pool: readonly string[]): string {
  const roll = r.next();
  if (roll < 0.7) return r.pick(pool);
  if (roll < 0.85) return r.printable(r.int(0, 200));
  if (roll < 0.95) return r.bytes(r.int(0, 50)).toString('latin1').replace(/\n/g, '');
  return 'z'.repeat(r.int(3000, 6000));
}

/** One policy request: well-formed (always ends in an empty line) unless `mutate`. */
function policyRequest(r: Rng): string {
  const lines = ['request=smtpd_access_policy', `protocol_state=${value(r, STATES)}`, `client_address=${value(r, IPS)}`, `sender=${value(r, ADDRS)}`];
  if (r.chance(0.8)) lines.push(`recipient=${value(r, ADDRS)}`);
  if (r.chance(0.5)) lines.push(`sasl_username=${value(r, ['alice@isp.test', 'nobody', ''])}`);
  if (r.chance(0.7)) lines.push(`instance=${r.int(0, 20).toString(16)}.${r.int(0, 5)}`);
  if (r.chance(0.5)) lines.push(`size=${value(r, ['0', '1000', '-1', 'abc', '99999999999999999999'])}`);
  if (r.chance(0.05)) for (let i = r.int(90, 130); i > 0; i--) lines.push(`x${i}=y`);
  if (r.chance(0.05)) lines.push('no-equals-here');
  if (r.chance(0.1)) lines.reverse();
  return `${lines.join('\n')}\n\n`;
}

function mutate(r: Rng, b: Buffer): Buffer {
  const out = Buffer.from(b);
  for (let i = r.int(1, 8); i > 0 && out.length > 0; i--) out[r.int(0, out.length - 1)] = r.pick([0, 10, 13, 0xff, 61, r.int(0, 255)]);
  return r.chance(0.3) ? out.subarray(0, r.int(0, out.length)) : out;
}

function u32(...ns: number[]): Buffer {
  const b = Buffer.alloc(4 * ns.length);
  ns.forEach((n, i) => b.writeUInt32BE(n >>> 0, i * 4));
  return b;
}

/** A milter conversation as Postfix's smtpd would start it, with odd values. */
function milterSession(r: Rng): Buffer {
  const parts: Buffer[] = [packet(CMD.OPTNEG, u32(r.chance(0.9) ? 6 : r.int(0, 9), r.int(0, 0x1ff), r.chance(0.8) ? 0x1fffff : r.int(0, 0xffffff)))];
  const fam = r.pick(['4', '6', 'U', 'L', 'x']);
  const port = Buffer.alloc(2);
  parts.push(packet(CMD.MACRO, Buffer.concat([Buffer.from('C'), cstr('j', 'postfix.test', '{daemon_name}', 'smtpd')])));
  parts.push(packet(CMD.CONNECT, Buffer.concat([cstr(value(r, ['pc.home.test', 'unknown'])), Buffer.from(fam), port, cstr(value(r, IPS))])));
  if (r.chance(0.8)) parts.push(packet(CMD.HELO, cstr(value(r, ['pc', '']))));
  for (let m = r.int(0, 2); m > 0; m--) {
    if (r.chance(0.5)) parts.push(packet(CMD.MACRO, Buffer.concat([Buffer.from('M'), cstr('{auth_authen}', value(r, ['alice@isp.test', '', 'nobody']), 'i', 'ABC')])));
    if (r.chance(0.1)) for (let i = r.int(60, 80); i > 0; i--) parts.push(packet(CMD.MACRO, Buffer.concat([Buffer.from('M'), cstr(`m${i}`, 'v'.repeat(r.int(0, 2000)))])));
    parts.push(packet(CMD.MAIL, cstr(`<${value(r, ADDRS)}>`, 'SIZE=100')));
    for (let i = r.int(0, 3); i > 0; i--) parts.push(packet(CMD.RCPT, cstr(`<${value(r, ADDRS)}>`)));
    for (let i = r.int(0, 6); i > 0; i--) parts.push(packet(CMD.HEADER, cstr(value(r, ['From', 'To', 'Subject', 'Received', '']), value(r, ['<orders@bakery.test>', 'x\n\ty', '']))));
    if (r.chance(0.05)) for (let i = r.int(1000, 1100); i > 0; i--) parts.push(packet(CMD.HEADER, cstr('X-Many', 'v')));
    parts.push(packet(CMD.EOH));
    for (let i = r.int(0, 4); i > 0; i--) parts.push(packet(CMD.BODY, r.chance(0.5) ? Buffer.from(r.printable(r.int(0, 65_000))) : r.bytes(r.int(0, 3000))));
    parts.push(packet(r.chance(0.9) ? CMD.BODYEOB : CMD.ABORT));
  }
  if (r.chance(0.1)) parts.push(packet(r.pick(['Z', 'x', '\u0000'])));
  if (r.chance(0.05)) parts.push(u32(r.pick([0, 300_000, 0xffffffff])));
  parts.push(packet(r.chance(0.8) ? CMD.QUIT : CMD.QUIT_NC));
  return Buffer.concat(parts);
}

/**
 * Write in random slices; then (Postfix never half-closes) wait until `done`
 * says the replies are complete, and close or reset; collect what came back.
 */
async function exchange(port: number, r: Rng, data: Buffer, reset: boolean, done: (got: Buffer) => boolean = () => true, ms = 5000): Promise<Buffer> {
  const s = net.connect(port, '127.0.0.1');
  const got: Buffer[] = [];
  s.on('data', (d) => got.push(d));
  s.on('error', () => undefined);
  await new Promise<void>((res) => s.once('connect', () => res()));
  const closed = new Promise<void>((res) => s.once('close', () => res()));
  for (let off = 0; off < data.length && !s.destroyed; ) {
    const n = r.chance(0.5) ? r.int(1, 64) : r.int(64, 70_000);
    s.write(data.subarray(off, off + n));
    off += n;
    if (r.chance(0.1)) await new Promise((res) => setImmediate(res));
  }
  const deadline = Date.now() + ms;
  while (!s.destroyed && !done(Buffer.concat(got)) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
  if (reset) s.resetAndDestroy();
  else s.end();
  await Promise.race([closed, new Promise((res) => setTimeout(res, 1000))]);
  s.destroy();
  return Buffer.concat(got);
}

describe('fuzzing the Postfix sockets (bounded, seeded)', () => {
  let app: App;
  const errors: string[] = [];
  const crashes: unknown[] = [];
  const onCrash = (err: unknown) => crashes.push(err);

  before(async () => {
    const { configFile } = await prepareGateway({
      netblocks: [...NETBLOCKS, { cidr: '10.1.0.0/16', class: 'local' }],
      policyFiles: { 'dnsbl.yaml': DNSBL('127.0.0.1:9'), 'quotas.yaml': QUOTAS.replace('plans:\n', 'plans:\n  unlimited: {}\n').replace('business: business }', 'business: business, local: unlimited }') },
      config: { listeners: [], postfix: { policyService: { address: '127.0.0.1', port: 0 }, milter: { address: '127.0.0.1', port: 0 } } },
    });
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString().split('\n')) if (/"level":(50|60)/.test(line)) errors.push(line.slice(0, 400));
        cb();
      },
    });
    app = await build(loadConfigFile(configFile), { logger: pino({ level: 'warn' }, sink) });
    await app.start();
    process.on('uncaughtException', onCrash);
    process.on('unhandledRejection', onCrash);
  });
  after(async () => {
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
    await app?.stop();
  });

  it(`${SESSIONS} policy service sessions: one bounded answer per request, no crash, no error`, { timeout: 300_000 }, async () => {
    const r = new Rng(SEED);
    const port = app.postfix!.policyService!.port;
    let requests = 0;
    for (let i = 0; i < SESSIONS; i++) {
      const kind = r.pick(['grammar', 'grammar', 'mutated', 'random'] as const);
      const reqs = Array.from({ length: r.int(1, 4) }, () => policyRequest(r));
      let data: Buffer = Buffer.from(reqs.join(''), 'latin1');
      if (kind === 'mutated') data = mutate(r, data);
      if (kind === 'random') data = r.bytes(r.int(0, 9000));
      const want = kind === 'grammar' ? reqs.length : 0;
      const reply = (await exchange(port, r, data, kind !== 'grammar' && r.chance(0.3), (got) => got.toString('latin1').split('\n\n').length - 1 >= want)).toString('latin1');
      const answers = reply.split('\n\n').filter(Boolean);
      for (const a of answers) assert.match(a, /^action=(DUNNO|HOLD [^\n]{1,500}|[45]\d\d [45]\.\d{1,3}\.\d{1,3} [^\n]{1,500})$/, `seed ${SEED} session ${i}: ${a.slice(0, 200)}`);
      if (kind === 'grammar') {
        assert.equal(answers.length, reqs.length, `seed ${SEED} session ${i}: ${answers.length} answers to ${reqs.length} requests`);
        requests += reqs.length;
      }
    }
    assert.deepEqual(crashes, []);
    assert.deepEqual(errors, []);
    console.log(`# policy fuzz: seed ${SEED}, ${SESSIONS} sessions, ${requests} well-formed requests answered one for one`);
    const clean = await exchange(port, r, Buffer.from('request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=127.0.0.9\nsender=a@home.test\nrecipient=b@dest.test\n\n'), false, (g) => g.includes('\n\n'));
    assert.equal(clean.toString(), 'action=DUNNO\n\n');
  });

  it('remembers a bounded number of messages and recipients between requests', async () => {
    // Small bounds, the same code: Postfix closes few messages (no END-OF-MESSAGE request unless configured).
    const bounds = { messages: 100, recipients: 1000 };
    const svc = new PolicyService(
      { cfg: { role: 'intercept' }, hooks: () => app.policy.current(), accounts: app.accounts, classOf: (ip) => app.policy.current().policy.netblocks.match(ip)?.cls, hostname: 'gw', logger: pino({ level: 'silent' }) },
      bounds,
    );
    let peak = { messages: 0, recipients: 0 };
    for (let m = 0; m < 300; m++) {
      for (let k = 0; k < 10; k++) {
        const a = await svc.answer(new Map(Object.entries({ request: 'smtpd_access_policy', protocol_state: 'RCPT', client_address: `10.1.${m >> 8}.${m & 255}`, sender: 'a@home.test', recipient: `r${k}@dest.test`, instance: `b.${m}` })));
        assert.equal(a, 'DUNNO');
        const now = svc.remembering;
        peak = { messages: Math.max(peak.messages, now.messages), recipients: Math.max(peak.recipients, now.recipients) };
      }
    }
    assert.deepEqual(peak, bounds);
  });

  it(`${SESSIONS} milter sessions: well-formed replies, no crash, no error, every socket closed`, { timeout: 300_000 }, async () => {
    const seed = (SEED ^ 0x5a5a5a5a) >>> 0;
    const r = new Rng(seed);
    const port = app.postfix!.milter!.port;
    const codes = new Map<string, number>();
    for (let i = 0; i < SESSIONS; i++) {
      const kind = r.pick(['grammar', 'grammar', 'mutated', 'random'] as const);
      let data: Buffer = milterSession(r);
      if (kind === 'mutated') data = mutate(r, data);
      if (kind === 'random') data = r.bytes(r.int(0, 9000));
      // Until the server has closed (QUIT) or goes quiet.
      const reply = await exchange(port, r, data, kind !== 'grammar' && r.chance(0.3), () => false, 300);
      // Every reply must parse as packets with known reply codes.
      const packets = new PacketReader().push(reply);
      for (const p of packets) {
        assert.ok((Object.values(REPLY) as string[]).includes(p.cmd), `seed ${seed} session ${i}: reply command ${JSON.stringify(p.cmd)}`);
        codes.set(p.cmd, (codes.get(p.cmd) ?? 0) + 1);
      }
    }
    assert.deepEqual(crashes, []);
    assert.deepEqual(errors, []);
    console.log(`# milter fuzz: seed ${seed}, ${SESSIONS} sessions, replies ${JSON.stringify(Object.fromEntries(codes))}`);
    // All sockets closed by one side or the other.
    for (let i = 0; i < 50 && app.postfix!.milter!.openConnections + app.postfix!.policyService!.openConnections > 0; i++) await new Promise((res) => setTimeout(res, 100));
    assert.equal(app.postfix!.milter!.openConnections, 0);
    assert.equal(app.postfix!.policyService!.openConnections, 0);
    // A clean session still gets its negotiation and a continue at end of message.
    const clean = new PacketReader().push(
      await exchange(port, r, Buffer.concat([packet(CMD.OPTNEG, u32(6, 0x1ff, 0x1fffff)), packet(CMD.QUIT)]), false, () => false, 1000),
    );
    assert.deepEqual(clean.map((p) => p.cmd), [REPLY.OPTNEG]);
  });
});
