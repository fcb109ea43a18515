/**
 * Scenario: least privilege. Started as root with `process: { user:
 * nobody }`, the gateway binds two privileged ports (< 1024, one implicit
 * TLS with a key only root can read) and then runs as nobody (real,
 * effective and saved ids, no supplementary groups); it still accepts and
 * spools mail, as nobody; the spool, keys, accounts file and admin token
 * are not readable by others (no group/other bits). Also with
 * `process.workers: 2`: the primary and both workers run as nobody.
 *
 * Nothing is served as root, shown two ways:
 * - by the kernel: a client knocks on each SMTP port and the admin port
 *   from the moment the gateway is spawned and keeps the first connection
 *   that gets through; /proc/net/tcp records, for the server's side of a
 *   connection, the uid of the process that accept()ed it: 65534 for all;
 * - by the gateway: its 'starting' line (before recovery, delivery, the
 *   admin API and the mailbox log) and every 'listening' line carry the
 *   process's uid, 65534, and come after 'dropped root privileges'.
 * Ownership fixes follow nothing planted in the spool: a symlink, a
 * symlinked directory and a hard link to root's files leave those root's.
 * Skipped, saying why, when the test does not run as root.
 */
import assert from 'node:assert/strict';
import { promises as fsp, readFileSync, statSync, readdirSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { prepareGateway } from '../helpers/gateway';
import { freePort, spawnGateway, type GatewayProcess } from '../helpers/process';
import { childPids, procStatus, sendOne, sleep } from './util';

async function privilegedPort(after = 0): Promise<number> {
  for (let p = Math.max(after + 1, 700 + Math.floor(Math.random() * 200)); p < 1000; p++) {
    const free = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(p, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) return p;
  }
  throw new Error('no free privileged port');
}

function modesUnder(dir: string, out: Array<[string, number]> = []): Array<[string, number]> {
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    const st = statSync(p);
    out.push([p, st.mode & 0o777]);
    if (st.isDirectory()) modesUnder(p, out);
  }
  return out;
}

/**
 * Connects to `port` every 10 ms (a bounded loop: until stopped) and keeps
 * the first connection that gets through: the earliest one the gateway
 * could possibly accept.
 */
function knock(port: number): { first: Promise<net.Socket>; stop(): void } {
  let stopped = false;
  const first = new Promise<net.Socket>((resolve, reject) => {
    const attempt = () => {
      // Once the gateway says it is ready (stop), one more try must get through: a retry that
      // was waiting when it became ready still connects instead of giving up unasked.
      const last = stopped;
      const s = net.connect({ port, host: '127.0.0.1' });
      s.once('connect', () => resolve(s));
      s.once('error', () => (last ? reject(new Error(`no connection to ${port} got through`)) : setTimeout(attempt, 10)));
    };
    attempt();
  });
  first.catch(() => undefined);
  return { first, stop: () => (stopped = true) };
}

/** The uid that accepted the connection whose client end is `client` (the server side's uid in /proc/net/tcp). */
function acceptedBy(client: net.Socket): number | undefined {
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(4, '0');
  const local = `:${hex(client.remotePort!)}`;
  const remote = `:${hex(client.localPort!)}`;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1]?.endsWith(local) && f[2]?.endsWith(remote)) return Number(f[7]);
  }
  return undefined;
}

/** Resolves with the first `n` bytes the server sends (proof that it accepted and serves this connection). */
function firstBytes(s: net.Socket, n: number, send?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.length >= n) resolve(got.slice(0, n));
    });
    s.once('error', reject);
    if (send) s.write(send);
  });
}

const isRoot = process.getuid?.() === 0;

describe('the service user, through the system (getent)', () => {
  it('resolves names and numbers; a missing user or group is an error naming the key', async () => {
    const { resolveIds } = await import('../../src/cli/privileges');
    assert.deepEqual(resolveIds('nobody'), { uid: 65534, gid: 65534 });
    assert.deepEqual(resolveIds('65534'), { uid: 65534, gid: 65534 });
    assert.deepEqual(resolveIds('nobody', 'root'), { uid: 65534, gid: 0 });
    assert.throws(() => resolveIds('no-such-user-i14'), /process\.user: no such user "no-such-user-i14"/);
    assert.throws(() => resolveIds('nobody', 'no-such-group-i14'), /process\.group: no such group "no-such-group-i14"/);
  });
});

describe('least privilege', { skip: isRoot ? false : 'needs root to change user' }, () => {
  const dirs: string[] = [];
  // Every gateway started, so that one left running by a failed case is still killed (a
  // single variable, overwritten by the next case, left it running and the suite hanging).
  const started: GatewayProcess[] = [];
  after(async () => {
    await Promise.all(started.map((g) => g.kill('SIGKILL')));
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  });

  for (const workers of [1, 2]) {
    it(`binds a privileged port, then runs as nobody (workers: ${workers})`, async () => {
      const port = await privilegedPort();
      const tlsPort = await privilegedPort(port);
      const adminPort = await freePort();
      const p = await prepareGateway({
        config: {
          log: { level: 'info' },
          process: { workers, user: 'nobody' },
          listeners: [
            { name: 'intercept', role: 'intercept', address: '127.0.0.1', port, security: 'none', greetDelay: '0ms' },
            { name: 'submissions', role: 'submission', address: '127.0.0.1', port: tlsPort, security: 'implicit' },
          ],
          admin: { address: '127.0.0.1', port: adminPort, tokenFile: 'var/admin.token' },
          dkim: { enabled: true, keysDir: 'var/dkim', signingDomain: 'home.test' },
          relay: { backoff: ['1h'] },
        },
      });
      dirs.push(p.dir);
      // The config and policies must be readable by nobody (as in /etc/smarthost); the test dir is 0700.
      await fsp.chmod(p.dir, 0o755);
      await fsp.chmod(path.join(p.dir, 'smarthost.yaml'), 0o644);
      // A DKIM key made as root by the operator (`smarthost dkim keygen`), in a directory nobody may traverse (as /etc/smarthost).
      const { dkimKeygen } = await import('../../src/dkim/cli');
      await dkimKeygen({ keysDir: path.join(p.dir, 'var/dkim'), domain: 'home.test', selector: 's1', algo: 'ed25519' });
      await fsp.chmod(path.join(p.dir, 'var'), 0o711);
      // The TLS key stays root's (0600): the gateway reads it before the drop, workers get it from the primary.
      assert.equal(statSync(path.join(p.dir, 'tls.key')).mode & 0o777, 0o600);
      // Planted in the spool by a service user gone bad, aiming at root's files.
      const outside = path.join(p.dir, 'outside');
      await fsp.mkdir(outside);
      for (const f of ['linked', 'hardlinked', 'indir']) await fsp.writeFile(path.join(outside, f), 'root only\n', { mode: 0o600 });
      await fsp.mkdir(path.join(p.dir, 'spool'), { mode: 0o700 });
      await fsp.symlink(path.join(outside, 'linked'), path.join(p.dir, 'spool', 'evil-symlink'));
      await fsp.link(path.join(outside, 'hardlinked'), path.join(p.dir, 'spool', 'evil-hardlink'));
      await fsp.symlink(outside, path.join(p.dir, 'spool', 'evil-dir'));

      const knocks = [knock(port), knock(tlsPort), knock(adminPort)];
      let gw: GatewayProcess;
      try {
        gw = await spawnGateway(p.configFile, adminPort);
        started.push(gw);
      } finally {
        for (const k of knocks) k.stop();
      }
      const [smtpConn, tlsConn, adminConn] = await Promise.all(knocks.map((k) => k.first));
      // Served: the banner, the banner over implicit TLS (the certificate read as root), an HTTP answer.
      assert.equal(await firstBytes(smtpConn!, 3), '220');
      assert.equal(await firstBytes(tls.connect({ socket: tlsConn!, rejectUnauthorized: false }), 3), '220');
      assert.equal(await firstBytes(adminConn!, 12, 'GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n'), 'HTTP/1.1 200');
      const acceptors = [smtpConn!, tlsConn!, adminConn!].map(acceptedBy);
      for (const c of [smtpConn!, tlsConn!, adminConn!]) c.destroy();
      assert.deepEqual(acceptors, [65534, 65534, 65534], 'the uids that accepted the first connection to each port');

      const lines = gw.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { evt?: string; uid?: number; listener?: string; role?: string });
      const dropped = lines.findIndex((l) => l.evt === 'privileges');
      assert.ok(dropped >= 0, 'the drop is logged');
      const served = lines.map((l, i) => ({ ...l, i })).filter((l) => l.evt === 'starting' || (l.evt === 'listening' && l.listener));
      // single: starting + 2 listeners + admin; workers: the primary's starting + admin, each worker's starting + 2 listeners.
      assert.equal(served.length, workers === 1 ? 4 : 2 + 3 * workers);
      for (const l of served) {
        assert.equal(l.uid, 65534, `${l.evt} ${l.listener ?? l.role} ran as uid ${l.uid}`);
        assert.ok(l.i > dropped, `${l.evt} ${l.listener ?? l.role} logged before the drop`);
      }

      const pids = [gw.child.pid!, ...childPids(gw.child.pid!)];
      assert.equal(pids.length, workers === 1 ? 1 : 3);
      for (const pid of pids) {
        assert.equal(procStatus(pid, 'Uid'), '65534\t65534\t65534\t65534', `uids of ${pid}`);
        assert.equal(procStatus(pid, 'Gid'), '65534\t65534\t65534\t65534');
        assert.equal(procStatus(pid, 'Groups'), '65534');
      }
      for (const f of ['linked', 'hardlinked', 'indir']) assert.equal(statSync(path.join(outside, f)).uid, 0, `${f}: root's file was handed to the service user`);
      // Still works as nobody: accept, sign, spool.
      const code = await sendOne(port, { ip: '127.0.0.5', from: 'me@home.test', to: 'a@dest.test' });
      assert.equal(code, 250);
      // SIGHUP reload as nobody (policies, DKIM keys, TLS) keeps it running.
      process.kill(gw.child.pid!, 'SIGHUP');
      await sleep(300);
      assert.equal(gw.child.exitCode, null);
      assert.equal(await sendOne(port, { ip: '127.0.0.5', from: 'me@home.test', to: 'b@dest.test' }), 250);

      const spool = path.join(p.dir, 'spool');
      const queued = [...readdirSync(path.join(spool, 'incoming')), ...readdirSync(path.join(spool, 'deferred')), ...readdirSync(path.join(spool, 'active'))];
      // A message on its first attempt is durable in the acceptance journal, not yet a queue file.
      const journal = readdirSync(path.join(spool, 'journal')).filter((f) => f.endsWith('.seg'));
      assert.ok(queued.length + journal.length >= 1, 'a queue file or journal segment was written');
      for (const f of journal) assert.equal(statSync(path.join(spool, 'journal', f)).uid, 65534, 'journal segments are written by nobody');
      for (const planted of ['evil-symlink', 'evil-hardlink', 'evil-dir']) await fsp.rm(path.join(spool, planted));
      const sensitive = [...modesUnder(spool), ...modesUnder(path.join(p.dir, 'var')), [path.join(p.dir, 'accounts.yaml'), statSync(path.join(p.dir, 'accounts.yaml')).mode & 0o777] as [string, number], [path.join(p.dir, 'tls.key'), statSync(path.join(p.dir, 'tls.key')).mode & 0o777] as [string, number]];
      for (const [file, mode] of sensitive) {
        // A DKIM key's metadata (selector dates, public) is 0644 inside its 0700 directory.
        if (file.includes(`${path.sep}dkim${path.sep}`) && file.endsWith('.yaml')) continue;
        assert.equal(mode & 0o077, 0, `${file} is mode ${mode.toString(8)}: readable by others`);
      }
      for (const f of queued.slice(0, 3)) {
        const st = statSync(path.join(spool, readdirSync(path.join(spool, 'incoming')).includes(f) ? 'incoming' : readdirSync(path.join(spool, 'deferred')).includes(f) ? 'deferred' : 'active', f));
        assert.equal(st.uid, 65534, 'queue files are written by nobody');
      }
      await gw.kill('SIGTERM');
    });
  }
});
