/**
 * Commands that open no listener read a config for its paths only: a file
 * holding just `dkim.keysDir` (how the independent benchmark in
 * ../shared/peers makes its keys) or just `accounts.file` is enough for
 * `dkim keygen` and `account add`, while `check-config` and `start` still
 * refuse the same file, whose default listeners use TLS without a certificate.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../helpers/cli';

describe('config read by commands that serve no mail', () => {
  let dir: string;
  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-nonserving-'));
  });
  after(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('dkim keygen with a config of only dkim.keysDir writes the key', async () => {
    const cfg = path.join(dir, 'keygen.yaml');
    await fsp.writeFile(cfg, 'dkim:\n  keysDir: keys\n');
    const r = await runCli(['dkim', 'keygen', '--config', cfg, '--domain', 'example.com', '--selector', 'ed', '--algo', 'ed25519', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).dnsName, 'ed._domainkey.example.com');
    await fsp.access(path.join(dir, 'keys', 'example.com', 'ed.ed25519.pem'));
  });

  it('account add with a config of only accounts.file adds the account', async () => {
    const cfg = path.join(dir, 'accounts-only.yaml');
    await fsp.writeFile(cfg, 'accounts:\n  file: accounts.yaml\n');
    const r = await runCli(['account', 'add', 'bench', '--sender', 'bench@example.com', '--password-stdin', '--config', cfg], 'bench-secret\n');
    assert.equal(r.code, 0, r.stderr);
    assert.match(await fsp.readFile(path.join(dir, 'accounts.yaml'), 'utf8'), /bench/);
  });

  it('check-config and start still refuse that file: its TLS listeners have no certificate', async () => {
    const cfg = path.join(dir, 'keygen.yaml');
    for (const cmd of ['check-config', 'start']) {
      const r = await runCli([cmd, '--config', cfg]);
      assert.notEqual(r.code, 0, `${cmd} accepted a TLS listener without a certificate`);
      assert.match(r.stderr, /serverTls\.cert: listener "submission" uses TLS/);
    }
  });
});
