/**
 * The floor: the least a Node process can do for the peers harness's relay
 * job and still keep its promises — accept SMTP, write the message and its
 * envelope to a journal and fdatasync it (one sync for every message that
 * came in meanwhile) before the 250, log a line per message, and pass the
 * message on to the smart host over persistent connections, pipelining
 * MAIL/RCPT/DATA. No policy, no metrics, no queue files, no retries, no DSNs,
 * no checks on what the client sends: not a gateway, a measuring stick
 * (bench/floor.ts). Everything it skips is what smarthost's own per-message
 * work consists of.
 *
 * `--mode relay` (the above) or `--mode answer` (SMTP replies only, the
 * message dropped: the cost of the sockets and the protocol alone).
 * `--tls-cert`/`--tls-key` add the harness's STARTTLS + AUTH PLAIN job: STARTTLS
 * offered in plaintext, AUTH PLAIN after it (one user, compared as a string:
 * no password hash, as smarthost's auth cache has none after the first login).
 * Run: node dist/bench/floor-relay.js --port P [--sink-port S] [--dir D] [--mode relay|answer]
 *        [--tls-cert C --tls-key K --auth user:password]
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { quickAck } from '../src/net/quick-ack';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    'sink-port': { type: 'string', default: '2526' },
    dir: { type: 'string', default: '/var/tmp/smarthost-floor' },
    mode: { type: 'string', default: 'relay' },
    conns: { type: 'string', default: '20' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    auth: { type: 'string', default: 'bench:bench-secret' },
  },
});
const relay = values.mode === 'relay';
const secureContext = values['tls-cert'] ? tls.createSecureContext({ cert: fs.readFileSync(values['tls-cert']), key: fs.readFileSync(values['tls-key']!) }) : undefined;
const colon = values.auth!.indexOf(':');
const [authUser, authPass] = [values.auth!.slice(0, colon), values.auth!.slice(colon + 1)];

interface Message {
  id: string;
  from: string;
  to: string;
  body: Buffer;
}

// --- the journal: append, then one fdatasync for all appended meanwhile ---
fs.mkdirSync(values.dir!, { recursive: true });
const journalPath = path.join(values.dir!, 'journal');
const jfd = fs.openSync(journalPath, 'w');
fs.fsyncSync(jfd);
const dfd = fs.openSync(values.dir!, 'r');
fs.fsyncSync(dfd); // the journal's directory entry, once
fs.closeSync(dfd);
let journalEnd = 0;
let syncing = false;
let written: Array<() => void> = [];

function commit(record: Buffer, done: () => void): void {
  const at = journalEnd;
  journalEnd += record.length;
  fs.write(jfd, record, 0, record.length, at, (err) => {
    if (err) throw err;
    written.push(done);
    sync();
  });
}
function sync(): void {
  if (syncing || written.length === 0) return;
  syncing = true;
  const batch = written;
  written = [];
  fs.fdatasync(jfd, (err) => {
    if (err) throw err;
    syncing = false;
    for (const done of batch) done();
    sync();
  });
}

const log = fs.createWriteStream(path.join(values.dir!, 'log'));

// --- out: persistent connections to the smart host, MAIL/RCPT/DATA pipelined ---
const idle: Array<(m: Message) => void> = [];
const queue: Message[] = [];
function pump(): void {
  while (idle.length > 0 && queue.length > 0) idle.pop()!(queue.shift()!);
}
function outbound(): void {
  const s = net.connect(Number(values['sink-port']), '127.0.0.1');
  s.setNoDelay(true);
  let buf = '';
  let stage: 'greeting' | 'ehlo' | 'envelope' | 'data' = 'greeting';
  let expect = 0;
  let current: Message | undefined;
  const send = (m: Message): void => {
    current = m;
    expect = 3;
    stage = 'envelope';
    s.write(`MAIL FROM:<${m.from}>\r\nRCPT TO:<${m.to}>\r\nDATA\r\n`);
  };
  s.on('data', (chunk: Buffer) => {
    buf += chunk.toString('latin1');
    for (let nl = buf.indexOf('\r\n'); nl >= 0; nl = buf.indexOf('\r\n')) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 2);
      if (line[3] === '-') continue;
      if (!/^[23]/.test(line)) throw new Error(`floor: the smart host said ${line}`);
      if (stage === 'greeting') {
        stage = 'ehlo';
        s.write('EHLO floor.bench.invalid\r\n');
      } else if (stage === 'ehlo' || stage === 'data') {
        if (current) log.write(`${JSON.stringify({ evt: 'delivery', id: current.id, rcpt: current.to, status: 'sent', reply: line, t: Date.now() })}\n`);
        current = undefined;
        idle.push(send);
        pump();
      } else if (--expect === 0) {
        stage = 'data';
        s.write(current!.body);
      }
    }
  });
  s.on('error', (err) => {
    throw err;
  });
}
if (relay) for (let i = 0; i < Number(values.conns); i++) outbound();

// --- in ---
let seq = 0;
const EHLO = '250-floor.bench.invalid\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n';
const EHLO_STARTTLS = '250-floor.bench.invalid\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-STARTTLS\r\n250 SIZE 10485760\r\n';
const EHLO_AUTH = '250-floor.bench.invalid\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-AUTH PLAIN\r\n250 SIZE 10485760\r\n';

/** One SMTP session on `sock`; after STARTTLS a new one on the TLS socket (RFC 3207: state reset). */
function serve(sock: net.Socket, ip: string, secure: boolean): void {
  let buf = '';
  let parts: Buffer[] = [];
  let inData = false;
  let from = '';
  let to = '';
  const accepted = (content: Buffer): void => {
    const id = `${process.pid.toString(36)}${(++seq).toString(36)}`;
    if (!relay) {
      sock.write(`250 2.0.0 Ok: ${id}\r\n`);
      return;
    }
    const body = Buffer.concat([Buffer.from(`Received: from [${ip}] by floor.bench.invalid id ${id}; ${new Date().toUTCString()}\r\n`), content]);
    commit(Buffer.concat([Buffer.from(`${id} ${from} ${to} ${body.length}\n`), body]), () => {
      sock.write(`250 2.0.0 Ok: queued as ${id}\r\n`);
      log.write(`${JSON.stringify({ evt: 'reception', id, ip, from, rcpts: 1, size: body.length, t: Date.now() })}\n`);
      queue.push({ id, from, to, body });
      pump();
    });
  };
  const onData = (chunk: Buffer): void => {
    if (inData) {
      parts.push(chunk);
      const all = parts.length === 1 ? chunk : Buffer.concat(parts);
      parts = [all];
      if (all.length < 5 || all.subarray(-5).toString('latin1') !== '\r\n.\r\n') return;
      inData = false;
      parts = [];
      accepted(all);
      return;
    }
    buf += chunk.toString('latin1');
    for (let nl = buf.indexOf('\r\n'); nl >= 0; nl = buf.indexOf('\r\n')) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 2);
      const verb = line.slice(0, 4).toUpperCase();
      if (verb === 'EHLO') sock.write(!secureContext ? EHLO : secure ? EHLO_AUTH : EHLO_STARTTLS);
      else if (verb === 'STAR' && secureContext && !secure) {
        sock.write('220 2.0.0 Ready to start TLS\r\n');
        sock.off('data', onData);
        const t = new tls.TLSSocket(sock, { isServer: true, secureContext });
        t.on('error', () => undefined);
        serve(t, ip, true);
        return;
      } else if (verb === 'AUTH') {
        const plain = Buffer.from(line.slice(11), 'base64').toString('utf8').split('\0');
        const ok = secure && plain[1] === authUser && plain[2] === authPass;
        sock.write(ok ? '235 2.7.0 Authentication successful\r\n' : '535 5.7.8 Authentication credentials invalid\r\n');
      } else if (verb === 'MAIL') {
        from = line.slice(10).replace(/[<>]/g, '');
        sock.write('250 2.1.0 Ok\r\n');
      } else if (verb === 'RCPT') {
        to = line.slice(8).replace(/[<>]/g, '');
        sock.write('250 2.1.5 Ok\r\n');
      } else if (verb === 'DATA') {
        sock.write('354 End data with <CR><LF>.<CR><LF>\r\n');
        // The AUTH job's load generator writes the final "." apart from the body: without a quick
        // ACK it waits for the delayed one (src/net/quick-ack.ts; smarthost does the same).
        if (secure) quickAck(sock);
        inData = true;
        if (buf) parts.push(Buffer.from(buf, 'latin1'));
        buf = '';
        return;
      } else if (verb === 'QUIT') {
        sock.end('221 2.0.0 Bye\r\n');
        return;
      } else sock.write('250 2.0.0 Ok\r\n');
    }
  };
  sock.on('data', onData);
}

net
  .createServer((sock) => {
    sock.setNoDelay(true);
    sock.on('error', () => undefined);
    sock.write('220 floor.bench.invalid ESMTP\r\n');
    serve(sock, sock.remoteAddress ?? '', false);
  })
  .listen(Number(values.port), '127.0.0.1', () => process.send?.('ready'));

process.on('SIGTERM', () => process.exit(0));
// A measuring stick stops at its first failure (a journal write, the smart host's refusal), saying which.
process.on('uncaughtException', (err) => {
  console.error(`floor-relay: ${err.message}`);
  process.exit(1);
});
