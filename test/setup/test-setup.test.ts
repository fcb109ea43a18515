/**
 * scripts/test-setup.sh, `npm test`'s pretest: with everything present it is
 * a dpkg check and a Redis ping (apt-get never runs); where a package is
 * missing and it cannot install (not root) it fails with one line naming the
 * packages. A missing package is played by a `dpkg` earlier on PATH that
 * reports it absent; every other command is the machine's own.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

const SCRIPT = path.resolve(__dirname, '../../../scripts/test-setup.sh');
let dir: string;

before(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-test-setup-'));
  await fsp.chmod(dir, 0o755);
  await fsp.copyFile(SCRIPT, path.join(dir, 'test-setup.sh'));
  await fsp.chmod(path.join(dir, 'test-setup.sh'), 0o755);
  // apt-get that only leaves a mark: the script must not reach it when nothing is missing.
  await fsp.mkdir(path.join(dir, 'bin'));
  await fsp.writeFile(path.join(dir, 'bin', 'apt-get'), `#!/bin/sh\necho "$@" >> ${dir}/apt-get.called\nexit 1\n`, { mode: 0o755 });
  // dpkg that reports rspamd and systemd as not installed and defers to the real one otherwise.
  await fsp.mkdir(path.join(dir, 'nodpkg'));
  await fsp.writeFile(
    path.join(dir, 'nodpkg', 'dpkg'),
    '#!/bin/sh\ncase "$2" in rspamd|systemd) exit 1;; esac\nexec /usr/bin/dpkg "$@"\n',
    { mode: 0o755 },
  );
});
after(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

function run(pathPrefix: string[], asNobody: boolean) {
  const env = { ...process.env, PATH: [...pathPrefix, process.env.PATH].join(':') };
  const isRoot = process.getuid?.() === 0;
  const [cmd, args] = asNobody && isRoot
    ? ['setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'sh', path.join(dir, 'test-setup.sh')]]
    : ['sh', [path.join(dir, 'test-setup.sh')]];
  return spawnSync(cmd, args as string[], { env, encoding: 'utf8', timeout: 60_000 });
}

test('everything installed: exits 0 without running apt-get, Redis answers on 6379', async () => {
  const r = run([path.join(dir, 'bin')], false);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '');
  await assert.rejects(fsp.access(path.join(dir, 'apt-get.called')), 'apt-get was run although nothing is missing');
  const ping = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', '6379', 'ping'], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(ping.stdout.trim(), 'PONG');
});

test('a package missing and no root: one line naming the packages, exit 1, no apt-get', async () => {
  const r = run([path.join(dir, 'nodpkg'), path.join(dir, 'bin')], true);
  assert.equal(r.status, 1);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.equal(lines[0], 'test setup: missing Debian packages: rspamd systemd (as root: apt-get install --no-install-recommends rspamd systemd)');
  await assert.rejects(fsp.access(path.join(dir, 'apt-get.called')));
});
