/**
 * Scenario: least privilege. Started as root with `process: { user:
 * nobody }`, the gateway binds a privileged port (< 1024) and then runs as
 * nobody (real, effective and saved ids, no supplementary groups); it
 * still accepts and spools mail, as nobody; the spool, keys, accounts file
 * and admin token are not readable by others (no group/other bits). Also
 * with `process.workers: 2`: the primary and both workers run as nobody.
 * Skipped, saying why, when the test does not run as root.
 */
import assert from 'node:assert/strict';
import { promises as fsp, statSync, readdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { prepareGateway } from '../helpers/gateway';
import { freePort, spawnGateway, type GatewayProcess } from '../helpers/process';
import { childPids, procStatus, sendOne, sleep } from './util';

async function privilegedPort(): Promise<number> {
  for (let p = 700 + Math.floor(Math.random() * 200); p < 1000; p++) {
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

const isRoot = process.getuid?.() === 0;

describe('least privilege', { skip: isRoot ? false : 'needs root to change user' }, () => {
  const dirs: string[] = [];
  let gw: GatewayProcess | undefined;
  after(async () => {
    await gw?.kill('SIGKILL');
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  });

  for (const workers of [1, 2]) {
    it(`binds a privileged port, then runs as nobody (workers: ${workers})`, async () => {
      const port = await privilegedPort();
      const adminPort = await freePort();
      const p = await prepareGateway({
        config: {
          process: { workers, user: 'nobody' },
          listeners: [{ name: 'intercept', role: 'intercept', address: '127.0.0.1', port, tls: 'none', greetDelay: '0ms' }],
          admin: { address: '127.0.0.1', port: adminPort, tokenFile: 'var/admin.token' },
          dkim: { enabled: true, keysDir: 'var/dkim', signingDomain: 'home.test' },
          relay: { backoff: ['1h'] },
        },
      });
      dirs.push(p.dir);
      // The config and policies must be readable by nobody (as in /etc/smarthost); the test dir is 0700.
      await fsp.chmod(p.dir, 0o755);
      await fsp.chmod(path.join(p.dir, 'smarthost.yaml'), 0o644);
      // A DKIM key made as root by the operator (`smarthost dkim keygen`).
      const { dkimKeygen } = await import('../../src/dkim/cli');
      await dkimKeygen({ keysDir: path.join(p.dir, 'var/dkim'), domain: 'home.test', selector: 's1', algo: 'ed25519' });
      gw = await spawnGateway(p.configFile, adminPort);
      const pids = [gw.child.pid!, ...childPids(gw.child.pid!)];
      assert.equal(pids.length, workers === 1 ? 1 : 3);
      let uids = '';
      for (let i = 0; i < 50; i++) {
        uids = pids.map((pid) => procStatus(pid, 'Uid')).join(' | ');
        if (pids.every((pid) => procStatus(pid, 'Uid') === '65534\t65534\t65534\t65534')) break;
        await sleep(100);
      }
      for (const pid of pids) {
        assert.equal(procStatus(pid, 'Uid'), '65534\t65534\t65534\t65534', `uids of ${pid}: ${uids}`);
        assert.equal(procStatus(pid, 'Gid'), '65534\t65534\t65534\t65534');
        assert.equal(procStatus(pid, 'Groups'), '65534');
      }
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
      gw = undefined;
    });
  }
});
