/**
 * Sink process: a minimal SMTP server that accepts everything at once (no
 * greeting delay, no parsing beyond what SMTP needs), counts messages and
 * reads each message's X-Bench-T stamp to measure end-to-end latency.
 * Forked with IPC: sends {count} on request and {latencies} at the end.
 */
import net from 'node:net';

let count = 0;
const e2e: number[] = [];

const server = net.createServer((sock) => {
  sock.setNoDelay(true);
  let inData = false;
  let buf = '';
  let stamp = 0;
  sock.write('220 sink.bench.test ESMTP\r\n');
  sock.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    for (;;) {
      if (inData) {
        if (!stamp) {
          const m = /X-Bench-T: (\d+)/.exec(buf);
          if (m) stamp = Number(m[1]);
        }
        const end = buf.indexOf('\r\n.\r\n');
        if (end < 0) {
          // Keep only a tail long enough to find the terminator across chunks.
          if (stamp && buf.length > 8) buf = buf.slice(-8);
          return;
        }
        buf = buf.slice(end + 5);
        inData = false;
        count++;
        if (stamp) e2e.push(Date.now() - stamp);
        stamp = 0;
        sock.write('250 2.0.0 Ok\r\n');
        continue;
      }
      const nl = buf.indexOf('\r\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl).toUpperCase();
      buf = buf.slice(nl + 2);
      if (line.startsWith('EHLO')) sock.write('250-sink.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 100000000\r\n');
      else if (line.startsWith('HELO')) sock.write('250 sink.bench.test\r\n');
      else if (line.startsWith('DATA')) {
        inData = true;
        sock.write('354 go ahead\r\n');
      } else if (line.startsWith('QUIT')) {
        sock.end('221 2.0.0 Bye\r\n');
        return;
      } else sock.write('250 2.0.0 Ok\r\n');
    }
  });
  sock.on('error', () => undefined);
});

server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  const a = server.address() as net.AddressInfo;
  process.send?.({ port: a.port });
});

process.on('message', (m: { cmd: string }) => {
  if (m.cmd === 'count') process.send?.({ count });
  if (m.cmd === 'latencies') process.send?.({ count, e2e });
  if (m.cmd === 'reset') {
    count = 0;
    e2e.length = 0;
    process.send?.({ reset: true });
  }
  if (m.cmd === 'exit') process.exit(0);
});
