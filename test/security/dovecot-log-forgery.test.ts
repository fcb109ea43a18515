/**
 * Attack: get relay permission (a POP-before-SMTP grant) by writing a line
 * that looks like a Dovecot login into the log the gateway follows.
 *
 * 1. Through syslog, as any local user can: util-linux `logger -u` writes
 *    to a private unix socket (no system syslog daemon is touched); the
 *    test plays rsyslog, writing each message in its traditional file
 *    format ("Dec  5 12:49:25 <host> <tag>: <msg>") to the followed file.
 *    (logger tries a datagram socket first and falls back to a stream
 *    socket, which Node can serve.) Forged: wrong program tag, the tag in
 *    the message text, a failed-login line whose user name imitates a login
 *    line, a login line whose user name carries fields of its own. Genuine
 *    lines (tag `dovecot`, `dovecot[pid]`) are the control: they grant, so
 *    the pipeline works and the refusals are the parser's.
 * 2. Through a real Dovecot (its own log_path file): failed POP3 logins
 *    whose user names imitate login lines. Dovecot 2.3.19 writes `<`, `>`,
 *    `,`, `=` in user names verbatim (control characters become `?`, long
 *    names are cut with "...").
 * Every forged line targets accounts alice/bob for addresses that must end
 * up without a grant; a genuine line written last is the sentinel that the
 * follower has read everything before it.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseLoginLine } from '../../src/roles/dovecot-log';
import { popLogin, startDovecot, type TestDovecot } from '../helpers/dovecot';
import { startPopGateway, waitUntil, type RoleGateway } from '../roles/helpers';

async function granted(gw: RoleGateway, ip: string, user: string): Promise<boolean> {
  const res = await fetch(`http://127.0.0.1:${gw.app.admin.port}/api/pop-grants?ip=${ip}&user=${encodeURIComponent(user)}`, {
    headers: { authorization: 'Bearer test-admin-token' },
  });
  return ((await res.json()) as { granted?: boolean }).granted === true;
}

/** A stand-in for rsyslog: a unix stream socket whose messages are appended to `file` in the traditional format. */
async function miniSyslog(sock: string, file: string): Promise<net.Server> {
  const host = os.hostname().split('.')[0] || 'localhost';
  const server = net.createServer((c) => {
    let buf = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const raw = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        // RFC 3164 as logger sends it locally: "<PRI>Mmm dd hh:mm:ss TAG: MSG".
        const m = /^<\d+>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (.*)$/s.exec(raw);
        if (m) appendFileSync(file, `${m[1]} ${host} ${m[2]}\n`);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  return server;
}

describe('Dovecot log forgery through syslog (logger)', { timeout: 30_000 }, () => {
  let gw: RoleGateway;
  let sysd: net.Server;
  let sock: string;
  let logFile: string;
  const log = (tag: string, msg: string, pid = false) => execFileSync('logger', ['-u', sock, ...(pid ? ['-i'] : []), '-t', tag, msg], { timeout: 5000 });

  before(async () => {
    gw = await startPopGateway(
      'mail.log',
      'syslog',
      {
        accounts: [
          { name: 'alice@isp.test', password: 'alice-secret-1' },
          { name: 'bob@isp.test', password: 'bob-secret-22' },
        ],
      },
      { 'mail.log': '' },
    );
    logFile = path.join(gw.dir, 'mail.log');
    sock = path.join(gw.dir, 'syslog.sock');
    sysd = await miniSyslog(sock, logFile);
  });
  after(async () => {
    await new Promise((r) => sysd.close(r));
    await gw.stop();
  });

  it('a genuine Dovecot login line through syslog grants (control)', async () => {
    log('dovecot', 'pop3-login: Login: user=<alice>, method=PLAIN, rip=127.0.0.3, lip=127.0.0.1, mpid=4242, secured, session=<kW3d1Z4M4tR/AAAB>', true);
    log('dovecot', 'imap-login: Login: user=<bob>, method=PLAIN, rip=2001:db8::7, lip=2001:db8::1, mpid=4243, TLS, session=<x>');
    await waitUntil('grants from genuine lines', async () => (await granted(gw, '127.0.0.3', 'alice')) && (await granted(gw, '2001:db8::7', 'bob')), 5000);
    const text = await fsp.readFile(logFile, 'utf8');
    assert.match(text, / dovecot\[\d+\]: pop3-login: Login: user=<alice>/);
  });

  it('forged lines grant nothing', async () => {
    const forged: Array<[string, string]> = [
      // The reproduction: any program tag.
      ['x', 'pop3-login: Login: user=<alice>, rip=127.0.0.8'],
      ['x', 'pop3-login: Login: user=<alice>, method=PLAIN, rip=127.0.0.8, lip=127.0.0.1, mpid=1, session=<a>'],
      ['pop3-login', 'Login: user=<alice>, method=PLAIN, rip=127.0.0.8, lip=127.0.0.1, mpid=1, session=<a>'],
      ['dovecotx', 'pop3-login: Login: user=<alice>, method=PLAIN, rip=127.0.0.8, lip=127.0.0.1'],
      ['x', 'dovecot: pop3-login: Login: user=<alice>, method=PLAIN, rip=127.0.0.8, lip=127.0.0.1'],
      // A failed login whose user name imitates a login line (what Dovecot writes for it).
      ['dovecot', 'pop3-login: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 2 secs): user=<x>, method=PLAIN, rip=127.0.0.8, lip=127.0.0.1, mpid=1, session=<a> Login: user=<alice>, method=PLAIN, rip=127.0.0.8, lip=127.0.0.1>, method=PLAIN, rip=127.0.0.9, lip=127.0.0.1, session=<q>'],
      ['dovecot', 'pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<Login: user=<alice>, method=PLAIN, rip=127.0.0.8, lip=127.0.0.1>, method=PLAIN, rip=127.0.0.9, lip=127.0.0.1'],
      ['dovecot', 'pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<pop3-login: Login: user=<alice>, method=PLAIN, rip=127.0.0.8, lip=127.0.0.1'],
      // A login whose user name carries fields of its own, then the real ones.
      ['dovecot', 'pop3-login: Login: user=<bob>, method=PLAIN, rip=127.0.0.8, lip=127.0.0.1, x>, method=PLAIN, rip=127.0.0.9, lip=127.0.0.1, mpid=1, session=<a>'],
      ['dovecot', 'pop3-login: Login: user=<bob>, method=PLAIN, rip=127.0.0.8, lip=127.0.0.1, mpid=1, session=<a>, method=PLAIN, rip=127.0.0.9, lip=127.0.0.1, session=<b>'],
      ['dovecot', 'pop3-login: Login: user=<alice,bob>, method=PLAIN, rip=127.0.0.8, lip=127.0.0.1'],
    ];
    for (const [tag, msg] of forged) log(tag, msg);
    await waitUntil('the syslog stand-in wrote every forged line', async () => (await fsp.readFile(logFile, 'utf8')).split('\n').filter((l) => l.includes('127.0.0.8')).length === forged.length, 5000);
    // The sentinel: read after every forged line.
    log('dovecot', 'pop3-login: Login: user=<alice>, method=PLAIN, rip=127.0.0.14, lip=127.0.0.1, mpid=4244, session=<s>', true);
    await waitUntil('the sentinel grant', () => granted(gw, '127.0.0.14', 'alice'), 5000);
    for (const ip of ['127.0.0.8', '127.0.0.9']) {
      for (const user of ['alice', 'bob', 'x']) assert.equal(await granted(gw, ip, user), false, `${user} granted at ${ip}`);
    }
  });

  it('user names with <, >, comma, = or control characters never grant; failed logins never do', () => {
    const line = (user: string) => `Dec  5 12:49:25 mail dovecot: pop3-login: Login: user=<${user}>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=1, session=<a>`;
    assert.deepEqual(parseLoginLine(line('alice@isp.test'), 'syslog'), { user: 'alice@isp.test', ip: '192.0.2.7' });
    for (const user of ['a<b', 'a,b', 'a=b', 'a\u0001b', 'a\tb', 'a\u007fb', 'a\u0085b', '']) assert.equal(parseLoginLine(line(user), 'syslog'), undefined, JSON.stringify(user));
    assert.equal(parseLoginLine(line('alice').replace('rip=192.0.2.7', 'rip=999.1.1.1'), 'syslog'), undefined);
    assert.equal(parseLoginLine(line('alice').replace('Login:', 'Disconnected (auth failed, 1 attempts in 2 secs):'), 'syslog'), undefined);
    // Each format reads only its own lines.
    assert.equal(parseLoginLine(line('alice'), 'dovecot'), undefined);
    assert.equal(parseLoginLine('Dec 05 12:52:01 pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=127.0.0.11, lip=127.0.0.1, mpid=20144, session=<J6F6deJhOZV/AAAL>', 'syslog'), undefined);
  });
});

describe('Dovecot log forgery through a real Dovecot (failed logins)', { timeout: 60_000 }, () => {
  let dovecot: TestDovecot;
  let gw: RoleGateway;

  before(async () => {
    dovecot = await startDovecot({ alice: 'pop-secret' });
    gw = await startPopGateway(dovecot.logFile, 'dovecot');
  });
  after(async () => {
    await gw?.stop();
    await dovecot?.stop();
  });

  it('failed logins with user names imitating a login line grant nothing; a real login does', async () => {
    const crafted = [
      'pop3-login: Login: user=<alice',
      'x>, method=PLAIN, rip=127.0.0.9, lip=127.0.0.1, mpid=1, session=<a> Login: user=<alice',
      'alice>, method=PLAIN, rip=127.0.0.9, lip=127.0.0.1, mpid=1, session=<a',
      'alice\u0001Login: user=<alice>, method=PLAIN, rip=127.0.0.9, lip=127.0.0.1',
    ];
    // One source address each: Dovecot's failure delay grows per address (2 s, 4 s, ...).
    const from = ['127.0.0.9', '127.0.0.10', '127.0.0.12', '127.0.0.13'];
    await Promise.all(crafted.map(async (user, i) => assert.match((await popLogin(dovecot.popPort, user, 'wrong', from[i]!))[2]!, /^-ERR \[AUTH\]/)));
    assert.match((await popLogin(dovecot.popPort, 'alice', 'pop-secret', '127.0.0.11'))[2]!, /^\+OK Logged in/);
    await waitUntil('the real login grant', () => granted(gw, '127.0.0.11', 'alice'), 10_000);
    const text = await fsp.readFile(dovecot.logFile, 'utf8');
    // Dovecot wrote the crafted names (so the follower saw them) before the real login.
    assert.match(text, /auth failed.*: user=<pop3-login: Login: user=<alice>, method=PLAIN, rip=127\.0\.0\.9, /);
    assert.match(text, /auth failed.*user=<alice>, method=PLAIN, rip=127\.0\.0\.9, lip=127\.0\.0\.1, mpid=1, session=<a>, method=PLAIN, rip=127\.0\.0\.12/);
    for (const ip of from) assert.equal(await granted(gw, ip, 'alice'), false, ip);
  });
});
