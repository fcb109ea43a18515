/**
 * Scenario: POP-before-SMTP with a real Dovecot (Debian's dovecot-pop3d),
 * started by the test with a passwd-file in a temporary directory: a POP3
 * login from 127.0.0.11 makes that address relay as alice. Dovecot is
 * installed by `npm test`'s pretest (scripts/test-setup.sh); as root it drops
 * to its own users, otherwise it runs every process as the test's user.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RawSmtp } from '../helpers/smtp-client';
import { BASE_LISTENERS, freePort, startRoleGateway, waitUntil, type RoleGateway } from './helpers';

const DOVECOT = '/usr/sbin/dovecot';
const isRoot = process.getuid?.() === 0;

/** The name of our primary group (Dovecot's default_internal_group takes a name). */
function groupName(): string {
  return spawnSync('id', ['-gn'], { encoding: 'utf8', timeout: 10_000 }).stdout.trim();
}

async function popLogin(port: number, user: string, pass: string, localAddress: string): Promise<string[]> {
  const s = net.connect({ host: '127.0.0.1', port, localAddress });
  s.setEncoding('latin1');
  const lines: string[] = [];
  let buf = '';
  let wake: (() => void) | undefined;
  s.on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\r\n')) >= 0) {
      lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 2);
      wake?.();
    }
  });
  const next = async (n: number) => {
    const end = Date.now() + 5000;
    while (lines.length < n && Date.now() < end) await new Promise<void>((r) => ((wake = r), setTimeout(r, 100)));
    return lines[n - 1] ?? '';
  };
  await next(1);
  s.write(`USER ${user}\r\n`);
  await next(2);
  s.write(`PASS ${pass}\r\n`);
  await next(3);
  s.write('QUIT\r\n');
  await next(4);
  s.destroy();
  return lines;
}

describe('POP-before-SMTP with a real Dovecot', { timeout: 30_000 }, () => {
  let dir: string;
  let conf: string;
  let popPort: number;
  let gw: RoleGateway;

  before(async () => {
    assert.ok(existsSync(DOVECOT), `${DOVECOT} is missing: install the Debian package dovecot-pop3d (npm test's pretest does as root)`);
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-dovecot-'));
    await fsp.chmod(dir, 0o755);
    await fsp.mkdir(path.join(dir, 'mail'), { mode: 0o777 });
    await fsp.chmod(path.join(dir, 'mail'), 0o777);
    // Mail is stored as nobody when Dovecot can switch users, as ourselves otherwise.
    const me = os.userInfo();
    const [uid, gid] = isRoot ? [65534, 65534] : [me.uid, me.gid];
    await fsp.writeFile(path.join(dir, 'passwd'), `alice:{PLAIN}pop-secret:${uid}:${gid}::${dir}/mail/alice\n`, { mode: 0o644 });
    popPort = await freePort();
    conf = path.join(dir, 'dovecot.conf');
    await fsp.writeFile(
      conf,
      [
        `base_dir = ${dir}/run`,
        `state_dir = ${dir}/state`,
        `log_path = ${dir}/mail.log`,
        `info_log_path = ${dir}/mail.log`,
        'protocols = pop3',
        'listen = 127.0.0.1',
        'ssl = no',
        'disable_plaintext_auth = no',
        'auth_mechanisms = plain',
        `mail_location = maildir:${dir}/mail/%u`,
        `passdb {\n  driver = passwd-file\n  args = ${dir}/passwd\n}`,
        `userdb {\n  driver = passwd-file\n  args = ${dir}/passwd\n}`,
        `service pop3-login {\n  chroot =\n  inet_listener pop3 {\n    address = 127.0.0.1\n    port = ${popPort}\n  }\n}`,
        'service anvil {\n  chroot =\n}',
        ...(isRoot ? [] : [`default_internal_user = ${me.username}`, `default_login_user = ${me.username}`, `default_internal_group = ${groupName()}`]),
        '',
      ].join('\n'),
    );
    // The master daemonises: no pipes (spawnSync would wait for them to close), bounded anyway.
    const r = spawnSync(DOVECOT, ['-c', conf], { stdio: 'ignore', timeout: 10_000 });
    assert.equal(r.status, 0, `dovecot exited with ${r.status}`);
    await waitUntil('dovecot listening', async () => {
      const ok = await new Promise<boolean>((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: popPort }, () => (s.destroy(), resolve(true)));
        s.on('error', () => resolve(false));
      });
      return ok;
    });
    gw = await startRoleGateway({
      config: {
        dkim: { enabled: false },
        listeners: BASE_LISTENERS,
        roles: { popBeforeSmtp: { enabled: true, ttl: '10m', logFile: path.join(dir, 'mail.log'), poll: '50ms', userDomain: 'isp.test' } },
      },
    });
  });
  after(async () => {
    await gw?.stop();
    spawnSync(DOVECOT, ['-c', conf, 'stop'], { stdio: 'ignore', timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 300));
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('a POP3 login grants relay as the account to the address it came from', async () => {
    const mailFrom = async (ip: string, from: string) => {
      const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: ip });
      await c.reply();
      await c.cmd('EHLO legacy');
      const t = (await c.cmd(`MAIL FROM:<${from}>`)).text;
      await c.quit();
      return t;
    };
    assert.match(await mailFrom('127.0.0.11', 'bob@isp.test'), /^250 /);
    const pop = await popLogin(popPort, 'alice', 'pop-secret', '127.0.0.11');
    assert.match(pop[2]!, /^\+OK Logged in/);
    await waitUntil('the grant', async () => /^553 /.test(await mailFrom('127.0.0.11', 'bob@isp.test')), 5000);
    assert.match(await mailFrom('127.0.0.11', 'alice@isp.test'), /^250 /);
    assert.match(await mailFrom('127.0.0.12', 'bob@isp.test'), /^250 /);
    const log = await fsp.readFile(path.join(dir, 'mail.log'), 'utf8');
    assert.match(log, /pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=127\.0\.0\.11/);
  });
});
