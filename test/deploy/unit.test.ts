/**
 * deploy/smarthost.service, checked by systemd's own tools (Debian's
 * `systemd` package, installed by `npm test`'s pretest): `systemd-analyze
 * verify` accepts it without a single warning, `systemd-analyze security
 * --offline` rates its exposure at most 2.0, and its paths agree with
 * smarthost.example.yaml (what the service may write is where the example
 * config puts the spool, the accounts file and the admin token).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';

const ROOT = path.resolve(__dirname, '../../..');
const UNIT = path.join(ROOT, 'deploy', 'smarthost.service');
let dir: string;
let unitFile: string;

/** [Service] settings, each key's values in order (a key may repeat). */
function serviceSettings(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) section = s[1]!;
    else if (section === 'Service') {
      const i = line.indexOf('=');
      const k = line.slice(0, i);
      out.set(k, [...(out.get(k) ?? []), line.slice(i + 1)]);
    }
  }
  return out;
}

function analyze(args: string[]) {
  const r = spawnSync('systemd-analyze', args, { encoding: 'utf8', timeout: 60_000 });
  assert.ok(!r.error, `systemd-analyze: ${r.error?.message} (install the Debian package systemd; npm test's pretest does as root)`);
  return r;
}

describe('the systemd unit', () => {
  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-unit-'));
    // verify checks that each Exec*= program exists: the unit names /usr/bin/node
    // (Debian's and NodeSource's); where node lives elsewhere, that path is checked.
    const text = readFileSync(UNIT, 'utf8');
    unitFile = path.join(dir, 'smarthost.service');
    await fsp.writeFile(unitFile, process.execPath === '/usr/bin/node' ? text : text.replaceAll('/usr/bin/node ', `${process.execPath} `));
  });
  after(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('systemd-analyze verify: no error, no warning', () => {
    const r = analyze(['verify', unitFile]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(`${r.stdout}${r.stderr}`, '', 'verify printed something');
  });

  it('systemd-analyze security --offline: exposure at most 2.0', () => {
    const r = analyze(['security', '--offline=true', '--no-pager', '--threshold=20', unitFile]);
    const level = /Overall exposure level for smarthost\.service: ([\d.]+)/.exec(r.stdout)?.[1];
    assert.equal(r.status, 0, `exposure ${level} is above 2.0:\n${r.stdout.split('\n').filter((l) => l.startsWith('✗')).join('\n')}`);
  });

  it('binds low ports with CAP_NET_BIND_SERVICE only, logs to journald, reloads with smarthost reload', () => {
    const s = serviceSettings(readFileSync(UNIT, 'utf8'));
    const one = (k: string) => {
      assert.equal(s.get(k)?.length, 1, `${k} set once`);
      return s.get(k)![0]!;
    };
    assert.equal(one('AmbientCapabilities'), 'CAP_NET_BIND_SERVICE');
    assert.equal(one('CapabilityBoundingSet'), 'CAP_NET_BIND_SERVICE');
    assert.equal(one('NoNewPrivileges'), 'yes');
    assert.equal(one('ProtectSystem'), 'strict');
    assert.equal(one('ProtectHome'), 'yes');
    assert.equal(one('PrivateTmp'), 'yes');
    assert.notEqual(one('User'), 'root');
    assert.equal(one('StandardOutput'), 'journal');
    assert.match(one('ExecStart'), / start --config \/etc\/smarthost\/smarthost\.yaml$/);
    assert.match(one('ExecReload'), / reload --config \/etc\/smarthost\/smarthost\.yaml$/);
    assert.ok(!s.has('MemoryDenyWriteExecute'), "V8's JIT needs writable executable memory");
  });

  it('may write exactly where smarthost.example.yaml keeps its spool, accounts and admin token', () => {
    const s = serviceSettings(readFileSync(UNIT, 'utf8'));
    const writable = [...(s.get('ReadWritePaths') ?? []).flatMap((v) => v.split(/\s+/)), ...(s.get('StateDirectory') ?? []).map((d) => `/var/lib/${d}`)];
    const cfg = YAML.parse(readFileSync(path.join(ROOT, 'smarthost.example.yaml'), 'utf8'));
    const under = (file: string) => writable.some((w) => file === w || file.startsWith(`${w}/`));
    for (const [key, file] of [['spool.dir', cfg.spool.dir], ['accounts.file', cfg.accounts.file], ['admin.tokenFile', cfg.admin.tokenFile]] as const) {
      assert.ok(under(file), `${key} ${file} is not writable by the service (writable: ${writable.join(' ')})`);
    }
    // And nothing it only reads is writable.
    for (const [key, file] of [['policy.dir', cfg.policy.dir], ['dkim.keysDir', cfg.dkim.keysDir], ['serverTls.key', cfg.serverTls.key]] as const) {
      assert.ok(!under(file), `${key} ${file} should be read-only for the service`);
    }
  });
});
