/**
 * Scenario: every deferral names its RFC 3463 status, as Postfix's dsn= on
 * a status=deferred line. A gateway with a captured log sends one message
 * to each of six broken destinations; each recipient's transient_failure
 * line and the admin API's message view (what `smarthost queue show`
 * prints) carry the status the failure calls for:
 *
 *   greylist.test  test MX answering RCPT with 451 4.7.1        4.7.1
 *   busy.test      greets with a bare 421 (no enhanced code)     4.0.0
 *   down.test      nothing listens: connection refused           4.4.1
 *   drop.test      takes the message, drops the connection       4.4.2
 *   servfail.test  the MX lookup gets SERVFAIL                   4.4.3
 *   notls.test     route with tlsLevel required, no STARTTLS     4.7.4
 *
 * and smarthost_delivery_deferrals_total counts them under those statuses.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { build, type App } from '../../src/app';
import { formatList } from '../../src/cli/queue';
import type { QueueEntry } from '../../src/spool/qmgr';
import { loadConfigFile } from '../../src/config/load';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { prepareGateway } from '../helpers/gateway';
import { message, RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';
import { waitUntil } from '../helpers/wait-until';
import { captureLogger, type Captured } from '../relay/fixtures';

const WAIT_MS = 20_000;

/**
 * A server that speaks just enough SMTP to fail in one way: a bare 421
 * greeting, or a whole transaction whose end of data is met by a closed
 * connection. It never offers STARTTLS and refuses it with 502.
 */
async function scriptedMx(host: string, port: number, how: 'greet-421' | 'drop-after-data' | 'no-starttls'): Promise<net.Server> {
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    if (how === 'greet-421') {
      socket.end('421 mx.busy.test busy, try again later\r\n');
      return;
    }
    socket.write('220 mx.test ESMTP\r\n');
    let buffered = '';
    let inData = false;
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      for (;;) {
        if (inData) {
          const end = buffered.indexOf('\r\n.\r\n');
          if (end < 0) return;
          buffered = buffered.slice(end + 5);
          inData = false;
          if (how === 'drop-after-data') {
            socket.destroy();
            return;
          }
          socket.write('250 2.0.0 queued\r\n');
          continue;
        }
        const nl = buffered.indexOf('\r\n');
        if (nl < 0) return;
        const line = buffered.slice(0, nl).toUpperCase();
        buffered = buffered.slice(nl + 2);
        if (line.startsWith('EHLO')) socket.write('250-mx.test\r\n250 8BITMIME\r\n');
        else if (line === 'STARTTLS') socket.write('502 5.5.1 STARTTLS not implemented\r\n');
        else if (line === 'DATA') {
          socket.write('354 go ahead\r\n');
          inData = true;
        } else if (line === 'QUIT') socket.end('221 bye\r\n');
        else socket.write('250 2.0.0 ok\r\n');
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}

async function send(port: number, to: string): Promise<string> {
  const c = await RawSmtp.connect(port, { localAddress: '127.0.0.3' });
  await c.reply();
  await c.cmd('EHLO sender.test');
  assert.match((await c.cmd('MAIL FROM:<someone@sender.test>')).text, /^250 /);
  assert.match((await c.cmd(`RCPT TO:<${to}>`)).text, /^250 /);
  const r = await c.data(message({ from: 'someone@sender.test', to }));
  assert.match(r.text, /^250 /);
  await c.quit();
  return /queued as (\S+)/.exec(r.text)![1]!;
}

describe('deferral status: the log line and the queue view name it', () => {
  let dns: TestDns;
  let greylist: TestMx;
  const scripted: net.Server[] = [];
  let app: App;
  let dir: string;
  let log: Captured;

  before(async () => {
    dns = await startDnsServer();
    greylist = await startTestMx({ host: '127.0.0.2', rcptReplies: new Map([['user@greylist.test', [451, '4.7.1 Greylisted, try again in 5 minutes']]]) });
    const port = greylist.port;
    scripted.push(await scriptedMx('127.0.0.4', port, 'greet-421'));
    scripted.push(await scriptedMx('127.0.0.5', port, 'drop-after-data'));
    scripted.push(await scriptedMx('127.0.0.6', port, 'no-starttls'));
    const mx = (domain: string, ip: string): void => {
      dns.set(domain, 'MX', [{ exchange: `mx.${domain}`, priority: 10 }]);
      dns.set(`mx.${domain}`, 'A', [ip]);
    };
    mx('greylist.test', '127.0.0.2');
    mx('busy.test', '127.0.0.4');
    mx('drop.test', '127.0.0.5');
    // Nothing listens on 127.0.0.7.
    mx('down.test', '127.0.0.7');
    dns.behave('servfail.test', 'servfail');
    const routes = { 'notls.test': { host: '127.0.0.6', port, tlsLevel: 'required' } };
    const prepared = await prepareGateway({
      config: { relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: port, routes, backoff: ['1h'], connectTimeout: '2s' }, dkim: { enabled: false } },
    });
    dir = prepared.dir;
    log = captureLogger();
    app = await build(loadConfigFile(prepared.configFile), { logger: log.logger, scanIntervalMs: 200 });
    await app.start();
  });
  after(async () => {
    await app?.stop();
    await Promise.all(scripted.map((s) => new Promise((resolve) => s.close(resolve))));
    await greylist?.close();
    await dns?.close();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  const cases: Array<[string, string, RegExp]> = [
    ['user@greylist.test', '4.7.1', /^451 4\.7\.1 Greylisted/],
    ['user@busy.test', '4.0.0', /421 mx\.busy\.test busy/],
    ['user@down.test', '4.4.1', /ECONNREFUSED/],
    ['user@drop.test', '4.4.2', /Connection closed unexpectedly/],
    ['user@servfail.test', '4.4.3', /SERVFAIL|ESERVFAIL/],
    ['user@notls.test', '4.7.4', /STARTTLS/],
  ];

  for (const [rcpt, status, response] of cases) {
    it(`${rcpt.split('@')[1]}: ${status}`, async () => {
      const id = await send(app.port('intercept'), rcpt);
      await waitUntil('a deferral', async () => (await app.qmgr.entry(id))?.state === 'deferred', WAIT_MS);
      const line = log.lines.find((l) => l.evt === 'transient_failure' && l.queueId === id && l.rcpt === rcpt);
      assert.ok(line, `a transient_failure line for ${rcpt}`);
      assert.equal(line.status, status, JSON.stringify(line));
      assert.match(String(line.response), response);

      const r = await fetch(`http://127.0.0.1:${app.admin.port}/api/queue/${id}`, { headers: { authorization: 'Bearer test-admin-token' } });
      assert.equal(r.status, 200);
      const view = (await r.json()) as { lastError?: string; lastStatus?: string; recipients: Array<{ address: string; status: string; lastError?: string; lastStatus?: string }> };
      const recipient = view.recipients.find((x) => x.address === rcpt);
      assert.equal(recipient?.status, 'pending');
      assert.equal(recipient?.lastStatus, status, JSON.stringify(view));
      assert.match(recipient?.lastError ?? '', response);
      assert.equal(view.lastStatus, status);

      // `smarthost queue list`: the same list the command reads, in its columns.
      const listed = (await (await fetch(`http://127.0.0.1:${app.admin.port}/api/queue`, { headers: { authorization: 'Bearer test-admin-token' } })).json()) as QueueEntry[];
      const row = formatList(listed).split('\n').find((l) => l.startsWith(`${id}\t`))?.split('\t');
      assert.deepEqual([row?.[6], row?.[7] && response.test(row[7])], [status, true], `queue list row: ${row?.join(' | ')}`);
    });
  }

  it('smarthost_delivery_deferrals_total counts them by status', async () => {
    const text = await (await fetch(`http://127.0.0.1:${app.admin.port}/metrics`)).text();
    for (const [, status] of cases) {
      const n = Number(new RegExp(`^smarthost_delivery_deferrals_total\\{status="${status.replaceAll('.', '\\.')}"\\} (\\d+)$`, 'm').exec(text)?.[1]);
      assert.ok(n >= 1, `${status}: ${n}`);
    }
  });

  it('a state file written before lastStatus existed still loads, and the next deferral records it', async () => {
    const id = await send(app.port('intercept'), 'old@down.test');
    await waitUntil('a deferral', async () => (await app.qmgr.entry(id))?.state === 'deferred', WAIT_MS);
    // What an earlier version wrote: the same state without the status fields.
    const file = app.spool.metaPath(id);
    const ds = JSON.parse(await fsp.readFile(file, 'utf8')) as { lastStatus?: string; attempts: number; recipients: Array<{ lastStatus?: string }> };
    delete ds.lastStatus;
    for (const r of ds.recipients) delete r.lastStatus;
    await fsp.writeFile(file, JSON.stringify(ds));
    const old = await app.qmgr.entry(id);
    assert.equal(old?.state, 'deferred');
    assert.match(old?.recipients[0]?.lastError ?? '', /ECONNREFUSED/);
    assert.equal(old?.recipients[0]?.lastStatus, undefined);
    assert.equal(app.qmgr.flush(id), 1);
    await waitUntil('the next attempt', async () => (await app.qmgr.entry(id))?.attempts === ds.attempts + 1, WAIT_MS);
    assert.equal((await app.qmgr.entry(id))?.recipients[0]?.lastStatus, '4.4.1');
  });
});
