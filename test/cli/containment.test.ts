/**
 * The abuse desk's side as an operator runs it: `smarthost containment
 * show|release|legitimate` against a running gateway whose containment held
 * an account (real SMTP: 30 strangers in one message); containment.yaml,
 * content.yaml and feedback.yaml checked by `check-config` (file: key:
 * reason) and reloaded with the policy (an invalid file is refused and the
 * one in force kept).
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { prepareGateway, startGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, message, RawSmtp } from '../helpers/smtp-client';
import { runCli } from '../helpers/cli';

const run = runCli;

describe('smarthost containment (CLI)', () => {
  let gw: TestGateway;
  let cfgArgs: string[];

  before(async () => {
    gw = await startGateway({
      policyFiles: { 'containment.yaml': 'enabled: true\n' },
      config: { relay: { dns: { servers: ['127.0.0.1:9'], timeout: '300ms', tries: 1 }, backoff: ['1h'] } },
    });
    const cfg = YAML.parse(await fsp.readFile(gw.configFile, 'utf8'));
    cfg.admin.port = gw.app!.admin.port;
    await fsp.writeFile(gw.configFile, YAML.stringify(cfg));
    cfgArgs = ['--config', gw.configFile];
    // Alice writes to 30 strangers on 30 domains at once: new recipients and new domains fire → hold.
    const c = await RawSmtp.connect(gw.port('submissions'), { localAddress: '127.0.0.5', implicitTls: true });
    await c.reply();
    await c.cmd('EHLO laptop.test');
    assert.equal((await c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`)).code, 235);
    assert.equal((await c.cmd('MAIL FROM:<alice@isp.test>')).code, 250);
    for (let i = 0; i < 30; i++) assert.equal((await c.cmd(`RCPT TO:<u${i}@d${i}.test>`)).code, 250);
    assert.equal((await c.data(message({ from: 'alice@isp.test', to: 'u0@d0.test' }))).code, 250);
    await c.quit();
  });
  after(async () => gw?.stop());

  it('show lists the contained subjects, and one subject with its signals', async () => {
    const list = await run(['containment', 'show', ...cfgArgs]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^SUBJECT\tNOW\tSCORE\tRESPONDED\tAT\tFIRED$/m);
    assert.match(list.stdout, /^account:alice@isp\.test\thold\t[\d.]+\thold \([\d.]+\)\t\S+\t.*newRecipientsPerHour/m);
    const one = await run(['containment', 'show', '--account', 'alice@isp.test', ...cfgArgs]);
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stdout, /response +hold/);
    assert.match(one.stdout, /newRecipientsPerDay +30/);
    const json = JSON.parse((await run(['containment', 'show', '--json', ...cfgArgs])).stdout) as { subjects: Array<{ subject: string }> };
    assert.equal(json.subjects[0]!.subject, 'account:alice@isp.test');
  });

  it('legitimate and release lift the hold', async () => {
    const l = await run(['containment', 'legitimate', '--account', 'alice@isp.test', '--for', '7d', ...cfgArgs]);
    assert.equal(l.code, 0, l.stderr);
    assert.match(l.stdout, /account:alice@isp\.test: marked legitimate for 7d; response now none/);
    const one = await run(['containment', 'show', '--account', 'alice@isp.test', ...cfgArgs]);
    assert.match(one.stdout, /response +none \(marked legitimate\)/);
    const r = await run(['containment', 'release', '--ip', '127.0.0.5', ...cfgArgs]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /ip:127\.0\.0\.5: released; response now none/);
  });

  it('usage errors exit 2 with the usage text', async () => {
    for (const args of [[], ['frobnicate'], ['release'], ['release', '--account', 'a@x.test', '--ip', '192.0.2.1'], ['show', '--for', '1d'], ['show', '--bogus']]) {
      const r = await run(['containment', ...args, ...cfgArgs]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /usage: smarthost containment show/);
    }
    const h = await run(['containment', '--help']);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /containment legitimate --account NAME \| --ip ADDR \[--for DURATION\]/);
  });

  it('containment.yaml is reloaded with the policy; an invalid one is refused and the old one kept', async () => {
    const file = path.join(gw.dir, 'policies', 'containment.yaml');
    await fsp.writeFile(file, 'enabled: true\nweights: { volume: lots }\n');
    const bad = await gw.app!.reload();
    assert.equal(bad.ok, false);
    assert.match(bad.policy.error ?? '', /containment\.yaml: weights\.volume: expected a number/);
    assert.match((await run(['containment', 'show', ...cfgArgs])).stdout, /^SUBJECT/m, 'still on');
    await fsp.writeFile(file, 'enabled: false\n');
    assert.equal((await gw.app!.reload()).ok, true);
    assert.match((await run(['containment', 'show', ...cfgArgs])).stdout, /containment is off/);
  });
});

describe('check-config reads containment.yaml, content.yaml and feedback.yaml', () => {
  it('names file, key and reason', async () => {
    const { dir, configFile } = await prepareGateway();
    try {
      assert.equal((await run(['check-config', '--config', configFile])).code, 0);
      const cases: Array<[string, string, RegExp]> = [
        ['containment.yaml', 'plans:\n  residential: { newRecipientsPerHour: -1 }\n', /containment\.yaml: plans\.residential\.newRecipientsPerHour: expected a number ≥ 0/],
        ['content.yaml', 'actions:\n  reject: { nowhere: reject }\n', /content\.yaml: actions\.reject\.nowhere: not a listener name or role/],
        ['content.yaml', 'rspamd: { url: "ftp://x" }\n', /content\.yaml: rspamd\.url: expected http:\/\/host:port/],
        ['feedback.yaml', 'providers:\n  - name: yahoo\n    domains: []\n', /feedback\.yaml: providers\[0\]\.domains: at least one reporting domain/],
        ['feedback.yaml', 'address: "a%b@gw.isp.test"\n', /feedback\.yaml: address: not a plain mailbox address/],
      ];
      for (const [name, text, expected] of cases) {
        await fsp.writeFile(path.join(dir, 'policies', name), text);
        const r = await run(['check-config', '--config', configFile]);
        assert.equal(r.code, 1, `${name}: ${r.stdout}`);
        assert.match(r.stderr, expected);
        await fsp.rm(path.join(dir, 'policies', name));
      }
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
