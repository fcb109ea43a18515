/** Units of the roles: map files, alias expansion, canonical rewriting, config, per-route retry schedules. */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parseConfig } from '../../src/config/schema';
import { ConfigError } from '../../src/config/validate';
import { createLogger } from '../../src/log';
import { Rewriter } from '../../src/roles/rewrite';

const logger = createLogger({ level: 'silent', pretty: false });

async function tmp(files: Record<string, string>): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-roles-'));
  for (const [f, t] of Object.entries(files)) await fsp.writeFile(path.join(dir, f), t);
  return dir;
}

test('aliases expand recursively, drop duplicates, stop at cycles; an alias may keep a copy', async () => {
  const dir = await tmp({ aliases: 'a@x.test b@x.test, c@x.test\nb@x.test d@x.test, c@x.test\nloop@x.test loop2@x.test\nloop2@x.test loop@x.test\nkeep@x.test keep@x.test, other@x.test\n' });
  try {
    const rw = new Rewriter({ recipientAliasesFile: path.join(dir, 'aliases'), headers: ['from'] }, logger);
    assert.deepEqual(rw.recipients(['a@x.test']), ['d@x.test', 'c@x.test']);
    assert.deepEqual(rw.recipients(['A@X.test', 'c@x.test']), ['d@x.test', 'c@x.test']);
    assert.deepEqual(rw.recipients(['keep@x.test']), ['keep@x.test', 'other@x.test']);
    assert.equal(rw.recipients(['loop@x.test']).length, 1);
    assert.deepEqual(rw.recipients(['none@x.test']), ['none@x.test']);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('canonical sender: exact entries before host entries; the null sender is left alone', async () => {
  const dir = await tmp({ canon: 'root@h.corp.test ops@corp.test\n@h.corp.test @corp.test\n' });
  try {
    const rw = new Rewriter({ senderCanonicalFile: path.join(dir, 'canon'), headers: ['from'] }, logger);
    assert.equal(rw.sender('root@h.corp.test'), 'ops@corp.test');
    assert.equal(rw.sender('cron@h.corp.test'), 'cron@corp.test');
    assert.equal(rw.sender('x@other.test'), 'x@other.test');
    assert.equal(rw.sender(''), '');
    const out = rw.apply('root@h.corp.test', ['r@y.test'], [Buffer.from('From: Root <root@h.corp.test>\r\nTo: r@y.test\r\n'), Buffer.from('\r\nbody\r\n')]);
    assert.equal(Buffer.concat(out.chunks).toString(), 'From: Root <ops@corp.test>\r\nTo: r@y.test\r\n\r\nbody\r\n');
    assert.equal(out.sizeDelta, 'ops@corp.test'.length - 'root@h.corp.test'.length);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('config: roles and per-route schedules are validated', () => {
  const cfg = parseConfig(
    {
      serverTls: { selfSigned: true },
      relay: { routes: { 'b.test': { host: '192.0.2.1', port: 25, backoff: ['1m'], maxLifetime: '7d' } } },
      roles: { backupMx: { domains: ['B.test'], verify: ['list', 'callout'], recipients: 'maps/r' }, popBeforeSmtp: { ttl: '10m' } },
    },
    'test.yaml',
    '/etc/smarthost',
  );
  assert.deepEqual(cfg.relay.routes.get('b.test')?.backoffMs, [60_000]);
  assert.equal(cfg.relay.routes.get('b.test')?.maxLifetimeMs, 7 * 86_400_000);
  assert.deepEqual(cfg.roles.backupMx?.domains, ['b.test']);
  assert.equal(cfg.roles.backupMx?.recipientsFile, '/etc/smarthost/maps/r');
  assert.equal(cfg.roles.popBeforeSmtp.enabled, false, 'off by default');
  assert.throws(() => parseConfig({ serverTls: { selfSigned: true }, roles: { backupMx: { domains: ['b.test'], verify: ['list'] } } }, 't.yaml', '/'), ConfigError);
  assert.throws(() => parseConfig({ serverTls: { selfSigned: true }, roles: { popBeforeSmtp: { logPattern: 'user=(\\S+)' } } }, 't.yaml', '/'), /roles\.popBeforeSmtp\.logPattern: no longer supported/);
  assert.throws(() => parseConfig({ serverTls: { selfSigned: true }, roles: { popBeforeSmtp: { logFormat: 'journald' } } }, 't.yaml', '/'), /logFormat: must be one of syslog, dovecot/);
  assert.throws(() => parseConfig({ serverTls: { selfSigned: true }, relay: { relayhost: { host: 'h', backoff: ['1m'] } } }, 't.yaml', '/'), /unknown key/);
});

test('a map file is re-read when it changes, without a reload call', async () => {
  const { MapFile } = await import('../../src/roles/maps');
  const dir = await tmp({ list: 'a@x.test\n' });
  try {
    const m = new MapFile(path.join(dir, 'list'), logger, true, 50);
    assert.ok(m.lookup('a@x.test'));
    assert.equal(m.lookup('b@x.test'), undefined);
    await fsp.writeFile(path.join(dir, 'list'), 'a@x.test\nb@x.test\n');
    await new Promise((r) => setTimeout(r, 80));
    assert.ok(m.lookup('b@x.test'));
    assert.ok(m.coversDomain('X.test'));
    // A file that disappears keeps the last good table.
    await fsp.rm(path.join(dir, 'list'));
    await new Promise((r) => setTimeout(r, 80));
    assert.ok(m.lookup('b@x.test'));
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
