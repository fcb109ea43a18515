/**
 * The three meanings of `tls` got their own names in this release: the
 * top-level certificate section `tls` → `serverTls`, a listener's mode
 * `listeners[].tls` → `security`, a next hop's level (relayhost, routes)
 * `tls` → `tlsLevel`. Each old name is still read, to the same config, with
 * a warning naming the file, the key and the new name; old and new in one
 * place is a config error naming the file and the key. The CLI prints the
 * warnings when it loads the config.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { parseConfigText } from '../../src/config/load';
import type { Config } from '../../src/config/schema';
import { ConfigError } from '../../src/config/validate';
import { runCli } from '../helpers/cli';
import { prepareGateway } from '../helpers/gateway';

const FILE = '/etc/smarthost/smarthost.yaml';

/** A config in today's names; `old` swaps one of them back to the old `tls`. */
function config(old?: 'top' | 'listener' | 'relayhost' | 'route'): string {
  const k = (which: typeof old, now: string) => (old === which ? 'tls' : now);
  return [
    `${k('top', 'serverTls')}: { cert: c.pem, key: k.pem, minVersion: TLSv1.3 }`,
    'listeners:',
    `  - { name: submission, role: submission, port: 587, ${k('listener', 'security')}: implicit }`,
    `  - { name: intercept, role: intercept, port: 25, ${k('listener', 'security')}: none }`,
    'relay:',
    `  relayhost: { host: up.example, port: 587, ${k('relayhost', 'tlsLevel')}: required }`,
    '  routes:',
    `    corp.example: { host: smtp.corp.example, ${k('route', 'tlsLevel')}: none }`,
    '',
  ].join('\n');
}

/** Today's names, with the old `tls` added beside one of them. */
function both(old: 'top' | 'listener' | 'relayhost' | 'route'): string {
  if (old === 'top') return `${config()}tls: { selfSigned: true }\n`;
  const marker = { listener: 'name: submission', relayhost: 'host: up.example', route: 'host: smtp.corp.example' }[old];
  return config()
    .split('\n')
    .map((l) => (l.includes(marker) ? l.replace(/ }$/, ', tls: none }') : l))
    .join('\n');
}

const parse = (text: string): Config => parseConfigText(text, FILE, '/etc/smarthost');

describe('renamed tls keys', () => {
  const cases = [
    { old: 'top', key: 'tls', now: 'serverTls' },
    { old: 'listener', key: 'listeners[0].tls', now: 'security' },
    { old: 'relayhost', key: 'relay.relayhost.tls', now: 'tlsLevel' },
    { old: 'route', key: 'relay.routes.corp.example.tls', now: 'tlsLevel' },
  ] as const;

  it('today\'s names: no warning', () => {
    const cfg = parse(config());
    assert.deepEqual(cfg.warnings, []);
    assert.equal(cfg.serverTls.minVersion, 'TLSv1.3');
    assert.deepEqual(cfg.listeners.map((l) => l.security), ['implicit', 'none']);
    assert.equal(cfg.relay.relayhost?.tls, 'required');
    assert.equal(cfg.relay.routes.get('corp.example')?.tls, 'none');
  });

  for (const c of cases) {
    it(`${c.key} is read as ${c.now}, with a warning naming the file, the key and the new name`, () => {
      const today = parse(config());
      const old = parse(config(c.old));
      assert.deepEqual({ ...old, warnings: [] }, today, 'the same config');
      assert.equal(old.warnings.length, c.old === 'listener' ? 2 : 1);
      assert.deepEqual(old.warnings[0], { file: FILE, key: c.key, reason: `renamed to ${c.now}; the old name is read in this release only` });
    });

    it(`${c.key} beside ${c.now} is a config error naming the file and the key`, () => {
      assert.throws(
        () => parse(both(c.old)),
        (e: unknown) => e instanceof ConfigError && e.file === FILE && e.key === c.key && e.reason === `renamed to ${c.now}, which is given too: keep only ${c.now}`,
      );
    });
  }
});

describe('the CLI says so at load', () => {
  let dir: string;
  let configFile: string;
  before(async () => {
    ({ dir, configFile } = await prepareGateway());
  });
  after(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('check-config: one warning line per old name, and the config is accepted', async () => {
    const clean = await runCli(['check-config', '--config', configFile]);
    assert.equal(clean.code, 0, clean.stderr);
    assert.doesNotMatch(clean.stderr, /warning/);

    const cfg = YAML.parse(await fsp.readFile(configFile, 'utf8'));
    cfg.tls = cfg.serverTls;
    delete cfg.serverTls;
    cfg.listeners[1].tls = cfg.listeners[1].security;
    delete cfg.listeners[1].security;
    await fsp.writeFile(configFile, YAML.stringify(cfg));
    const old = await runCli(['check-config', '--config', configFile]);
    assert.equal(old.code, 0, old.stderr);
    assert.deepEqual(old.stderr.trim().split('\n'), [
      `smarthost: warning: ${configFile}: tls: renamed to serverTls; the old name is read in this release only`,
      `smarthost: warning: ${configFile}: listeners[1].tls: renamed to security; the old name is read in this release only`,
    ]);
  });
});
