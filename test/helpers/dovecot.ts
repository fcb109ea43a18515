/**
 * A real Dovecot (Debian's dovecot-pop3d, and dovecot-imapd for IMAP) for
 * tests: POP3 (and IMAP when asked) on a loopback port, a passwd-file in a temporary directory, logging to its own
 * log_path file. Dovecot is installed by `npm test`'s pretest
 * (scripts/test-setup.sh); as root it drops to its own users, otherwise it
 * runs every process as the test's user.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const DOVECOT = '/usr/sbin/dovecot';

const isRoot = process.getuid?.() === 0;

/** The name of our primary group (Dovecot's default_internal_group takes a name). */
function groupName(): string {
  return spawnSync('id', ['-gn'], { encoding: 'utf8', timeout: 10_000 }).stdout.trim();
}

export interface TestDovecot {
  popPort: number;
  /** With `imap: true`: the IMAP port (plain, loopback). */
  imapPort: number;
  /** Dovecot's own log (log_path). */
  logFile: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

/** Users as name → password. */
export async function startDovecot(users: Record<string, string>, opts: { imap?: boolean } = {}): Promise<TestDovecot> {
  if (!existsSync(DOVECOT)) throw new Error(`${DOVECOT} is missing: install the Debian package dovecot-pop3d (npm test's pretest does as root)`);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-dovecot-'));
  await fsp.chmod(dir, 0o755);
  await fsp.mkdir(path.join(dir, 'mail'), { mode: 0o777 });
  await fsp.chmod(path.join(dir, 'mail'), 0o777);
  // Mail is stored as nobody when Dovecot can switch users, as ourselves otherwise.
  const me = os.userInfo();
  const [uid, gid] = isRoot ? [65534, 65534] : [me.uid, me.gid];
  const passwd = Object.entries(users).map(([u, p]) => `${u}:{PLAIN}${p}:${uid}:${gid}::${dir}/mail/${u}\n`);
  await fsp.writeFile(path.join(dir, 'passwd'), passwd.join(''), { mode: 0o644 });
  const popPort = await freePort();
  const imapPort = opts.imap ? await freePort() : 0;
  const conf = path.join(dir, 'dovecot.conf');
  const logFile = path.join(dir, 'mail.log');
  await fsp.writeFile(
    conf,
    [
      `base_dir = ${dir}/run`,
      `state_dir = ${dir}/state`,
      `log_path = ${logFile}`,
      `info_log_path = ${logFile}`,
      `protocols = pop3${opts.imap ? ' imap' : ''}`,
      'listen = 127.0.0.1',
      'ssl = no',
      'disable_plaintext_auth = no',
      'auth_mechanisms = plain',
      `mail_location = maildir:${dir}/mail/%u`,
      `passdb {\n  driver = passwd-file\n  args = ${dir}/passwd\n}`,
      `userdb {\n  driver = passwd-file\n  args = ${dir}/passwd\n}`,
      `service pop3-login {\n  chroot =\n  inet_listener pop3 {\n    address = 127.0.0.1\n    port = ${popPort}\n  }\n}`,
      ...(opts.imap ? [`service imap-login {\n  chroot =\n  inet_listener imap {\n    address = 127.0.0.1\n    port = ${imapPort}\n  }\n  inet_listener imaps {\n    port = 0\n  }\n}`] : []),
      'service anvil {\n  chroot =\n}',
      ...(isRoot ? [] : [`default_internal_user = ${me.username}`, `default_login_user = ${me.username}`, `default_internal_group = ${groupName()}`]),
      '',
    ].join('\n'),
  );
  // The master daemonises: no pipes (spawnSync would wait for them to close), bounded anyway.
  const r = spawnSync(DOVECOT, ['-c', conf], { stdio: 'ignore', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`dovecot exited with ${r.status}`);
  const end = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port: popPort }, () => (s.destroy(), resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (up) break;
    if (Date.now() > end) throw new Error('dovecot never listened');
    await new Promise((res) => setTimeout(res, 50));
  }
  return {
    popPort,
    imapPort,
    logFile,
    async stop() {
      spawnSync(DOVECOT, ['-c', conf, 'stop'], { stdio: 'ignore', timeout: 10_000 });
      await new Promise((res) => setTimeout(res, 300));
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

/** USER, PASS, QUIT from `localAddress`; Dovecot's replies (greeting first). */
export async function popLogin(port: number, user: string, pass: string, localAddress: string): Promise<string[]> {
  const s = net.connect({ host: '127.0.0.1', port, localAddress });
  s.setEncoding('latin1');
  s.on('error', () => undefined);
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
