/**
 * The `smarthost` command as an operator runs it: check-config naming the
 * file, key and reason; account management; queue commands against a
 * running gateway; a clear error when a port cannot be bound.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { startGateway, prepareGateway, type TestGateway } from '../helpers/gateway';
import { message, RawSmtp } from '../helpers/smtp-client';
import { runCli } from '../helpers/cli';

const run = runCli;

describe('smarthost CLI', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  });

  it('check-config accepts a valid config and names file, key and reason for an invalid one', async () => {
    const { dir, configFile } = await prepareGateway();
    dirs.push(dir);
    const ok = await run(['check-config', '--config', configFile]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /ok/);

    const cfg = YAML.parse(await fsp.readFile(configFile, 'utf8'));
    const cases: Array<[(c: Record<string, any>) => void, RegExp]> = [
      [(c) => (c.limits = { maxMessageSize: 'huge' }), /limits\.maxMessageSize: not a size: "huge"/],
      [(c) => (c.listeners[0].security = 'sometimes'), /listeners\[0\]\.security: must be one of none, starttls, implicit/],
      [(c) => (c.relay = { backoff: ['5 fortnights'] }), /relay\.backoff\[0\]: not a duration/],
      [(c) => (c.listeners[2].auth = 'required'), /listeners\[2\]\.auth: AUTH is only for submission listeners/],
      [(c) => (c.spooll = {}), /spooll: unknown key/],
    ];
    for (const [mutate, expected] of cases) {
      const c = structuredClone(cfg);
      mutate(c);
      const bad = path.join(dir, 'bad.yaml');
      await fsp.writeFile(bad, YAML.stringify(c));
      const r = await run(['check-config', '--config', bad]);
      assert.equal(r.code, 1, `exit 1 for ${expected}`);
      assert.ok(r.stderr.includes(bad), `names the file: ${r.stderr}`);
      assert.match(r.stderr, expected);
    }
    // A broken policy file is named too.
    await fsp.writeFile(path.join(dir, 'policies', 'netblocks.yaml'), 'netblocks:\n  - cidr: 10.0.0.0/33\n');
    const r = await run(['check-config', '--config', configFile]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /netblocks\.yaml: netblocks\[0\]\.cidr: not a CIDR/);
  });

  it('manages accounts: add, list, passwd, suspend', async () => {
    const { dir, configFile } = await prepareGateway({ accounts: [] });
    dirs.push(dir);
    const add = await run(['account', 'add', 'zoe@isp.test', '--sender', 'zoe@isp.test', '--plan', 'business', '--password-stdin', '--config', configFile], 'zoe-password-1\n');
    assert.equal(add.code, 0, add.stderr);
    const text = await fsp.readFile(path.join(dir, 'accounts.yaml'), 'utf8');
    assert.match(text, /password: scrypt\$/);
    assert.doesNotMatch(text, /zoe-password-1/, 'never a plain password on disk');
    const st = await fsp.stat(path.join(dir, 'accounts.yaml'));
    assert.equal(st.mode & 0o077, 0, 'accounts file not readable by others');
    const list = await run(['account', 'list', '--config', configFile]);
    assert.match(list.stdout, /zoe@isp\.test\tbusiness\tactive\tzoe@isp\.test/);
    assert.equal((await run(['account', 'suspend', 'zoe@isp.test', '--config', configFile])).code, 0);
    assert.match((await run(['account', 'list', '--config', configFile])).stdout, /zoe@isp\.test\tbusiness\tsuspended/);
    const pw = await run(['account', 'passwd', 'zoe@isp.test', '--config', configFile]);
    assert.match(pw.stdout, /password of zoe@isp\.test changed to \S{12,}/);
    const dup = await run(['account', 'add', 'zoe@isp.test', '--config', configFile]);
    assert.equal(dup.code, 1);
  });

  describe('queue commands on a running gateway', () => {
    let gw: TestGateway;
    before(async () => {
      // No DNS server answers: deliveries defer and stay in the queue.
      gw = await startGateway({ config: { relay: { dns: { servers: ['127.0.0.1:9'], timeout: '300ms', tries: 1 }, backoff: ['1h'] } } });
    });
    after(async () => gw.stop());

    it('lists, shows, holds, releases, flushes and deletes', async () => {
      const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.3' });
      await c.reply();
      await c.cmd('EHLO a.test');
      await c.cmd('MAIL FROM:<x@sender.test>');
      await c.cmd('RCPT TO:<y@nowhere.test>');
      const r = await c.data(message({ from: 'x@sender.test', to: 'y@nowhere.test' }));
      await c.quit();
      const id = /queued as (\S+)/.exec(r.text)![1]!;
      const cfgArgs = ['--config', gw.configFile];
      // Wait for the first attempt to defer it.
      for (let i = 0; i < 100; i++) {
        if ((await gw.app!.qmgr.entry(id))?.state === 'deferred') break;
        await new Promise((res) => setTimeout(res, 50));
      }
      // The admin port is 0 in the config file; point the CLI at the bound port.
      const cfg = YAML.parse(await fsp.readFile(gw.configFile, 'utf8'));
      cfg.admin.port = gw.app!.admin.port;
      await fsp.writeFile(gw.configFile, YAML.stringify(cfg));

      const list = await run(['queue', 'list', ...cfgArgs]);
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, new RegExp(`${id}\\tdeferred\\t\\d+\\t\\d+s\\tx@sender\\.test\\ty@nowhere\\.test\\t.+`));
      const show = await run(['queue', 'show', id, ...cfgArgs]);
      assert.equal(JSON.parse(show.stdout).id, id);
      assert.equal((await run(['queue', 'hold', id, ...cfgArgs])).code, 0);
      assert.match((await run(['queue', 'list', ...cfgArgs])).stdout, new RegExp(`${id}\\thold`));
      assert.equal((await run(['queue', 'release', id, ...cfgArgs])).code, 0);
      assert.equal((await run(['queue', 'flush', ...cfgArgs])).code, 0);
      let del = { code: 1, stdout: '', stderr: '' };
      for (let i = 0; i < 100 && del.code !== 0; i++) {
        del = await run(['queue', 'delete', id, ...cfgArgs]);
        if (del.code !== 0) await new Promise((res) => setTimeout(res, 50));
      }
      assert.equal(del.code, 0, del.stderr);
      for (let i = 0; i < 100 && (await gw.app!.qmgr.entry(id)); i++) await new Promise((res) => setTimeout(res, 50));
      assert.match((await run(['queue', 'list', ...cfgArgs])).stdout, /Mail queue is empty/);
      const missing = await run(['queue', 'show', 'NOTANID', ...cfgArgs]);
      assert.equal(missing.code, 1);
    });
  });

  it('start with an invalid policy file: the same "file: key: reason" line as check-config, exit 1, no stack trace', async () => {
    const { dir, configFile } = await prepareGateway({ policyFiles: { 'netblocks.yaml': 'netblocks:\n  - cidr: 10.0.0.0/33\n    class: local\n' } });
    dirs.push(dir);
    const check = await run(['check-config', '--config', configFile]);
    const start = await run(['start', '--config', configFile]);
    assert.equal(start.code, 1);
    const line = `smarthost: invalid config: ${path.join(dir, 'policies', 'netblocks.yaml')}: netblocks[0].cidr: not a CIDR`;
    assert.ok(start.stderr.startsWith(line), start.stderr);
    assert.equal(start.stderr.trimEnd().split('\n').length, 1, `one line, no stack trace: ${start.stderr}`);
    assert.equal(start.stderr, check.stderr);
  });

  it('start with a spool directory that cannot be made: one line naming the path and the reason', async () => {
    const { dir, configFile } = await prepareGateway();
    dirs.push(dir);
    await fsp.writeFile(path.join(dir, 'a-file'), '');
    const cfg = YAML.parse(await fsp.readFile(configFile, 'utf8'));
    cfg.spool.dir = 'a-file/spool';
    await fsp.writeFile(configFile, YAML.stringify(cfg));
    const r = await run(['start', '--config', configFile]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `smarthost: cannot mkdir ${path.join(dir, 'a-file', 'spool')}: not a directory (ENOTDIR)\n`);
  });

  it('check-config counts in English: 1 listener, 3 listeners', async () => {
    const one = await prepareGateway({ config: { listeners: [{ name: 'intercept', role: 'intercept', address: '127.0.0.1', port: 0, security: 'none' }] } });
    const three = await prepareGateway();
    dirs.push(one.dir, three.dir);
    assert.match((await run(['check-config', '--config', one.configFile])).stdout, /: ok \(1 listener, policy /);
    assert.match((await run(['check-config', '--config', three.configFile])).stdout, /: ok \(3 listeners, policy /);
  });

  it('dkim keygen --keys-dir writes there and says where; without it, says the keys directory and where it came from', async () => {
    const { dir, configFile } = await prepareGateway({ config: { dkim: { keysDir: 'configured-keys' } } });
    dirs.push(dir);
    const chosen = path.join(dir, 'chosen');
    const r = await run(['dkim', 'keygen', '--domain', 'example.com', '--selector', 's1', '--algo', 'ed25519', '--keys-dir', chosen, '--config', configFile]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.startsWith(`keys directory: ${chosen} (--keys-dir)\nprivate key: ${path.join(chosen, 'example.com', 's1.ed25519.pem')}`), r.stdout);
    await fsp.access(path.join(chosen, 'example.com', 's1.ed25519.pem'));
    const c = await run(['dkim', 'keygen', '--domain', 'example.com', '--selector', 's1', '--algo', 'ed25519', '--config', configFile]);
    assert.equal(c.code, 0, c.stderr);
    assert.ok(c.stdout.startsWith(`keys directory: ${path.join(dir, 'configured-keys')} (dkim.keysDir of ${configFile})\n`), c.stdout);
    const check = await run(['dkim', 'check', '--domain', 'nokeys.example', '--keys-dir', chosen, '--dns', '127.0.0.1:9', '--config', configFile]);
    assert.match(check.stdout, new RegExp(`no keys for nokeys\\.example under ${chosen} \\(--keys-dir\\)`));
  });

  it('says which listener cannot bind and why', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as net.AddressInfo).port;
    const { dir, configFile } = await prepareGateway({
      config: { listeners: [{ name: 'intercept', role: 'intercept', address: '127.0.0.1', port, security: 'none' }] },
    });
    dirs.push(dir);
    const r = await run(['start', '--config', configFile]);
    blocker.close();
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`listener "intercept": cannot bind 127\\.0\\.0\\.1:${port}: address already in use`));
  });
});
