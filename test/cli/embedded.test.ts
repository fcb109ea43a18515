/**
 * The quick start: `npm start` with no config file runs on the embedded
 * defaults. The first start makes what a fresh machine lacks (a self-signed
 * certificate for the hostname, demo DKIM keys, a demo account whose
 * password is only written to var/demo-account.txt); a restart reuses them.
 * Run in a scratch directory with the shipped policies/, ports set to 0.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { existsSync, promises as fsp, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { build, type App } from '../../src/app';
import { loadConfig } from '../../src/config/load';
import { createLogger } from '../../src/log';
import { authPlain, RawSmtp } from '../helpers/smtp-client';

const ROOT = path.resolve(__dirname, '../../..');

describe('embedded defaults (quick start)', () => {
  let cwd: string;
  before(async () => {
    cwd = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-embedded-'));
    await fsp.cp(path.join(ROOT, 'policies'), path.join(cwd, 'policies'), { recursive: true });
  });
  after(async () => {
    await fsp.rm(cwd, { recursive: true, force: true });
  });

  async function start(): Promise<App> {
    const cfg = loadConfig(undefined, cwd);
    assert.equal(cfg.embedded, true);
    // The embedded ports (2587, 2465, 2525, 8025) may be taken on a test machine.
    cfg.listeners = cfg.listeners.map((l) => ({ ...l, port: 0 }));
    cfg.admin = { ...cfg.admin, port: 0 };
    const app = await build(cfg, { logger: createLogger({ level: 'silent', pretty: false }) });
    await app.start();
    return app;
  }

  it('first start: self-signed certificate, demo DKIM keys and account; STARTTLS and AUTH work', async () => {
    const app = await start();
    try {
      const certFile = path.join(cwd, 'var/tls/selfsigned.crt');
      assert.ok(existsSync(certFile));
      assert.equal(statSync(path.join(cwd, 'var/tls/selfsigned.key')).mode & 0o777, 0o600);
      assert.ok(existsSync(path.join(cwd, 'var/dkim')));
      const note = readFileSync(path.join(cwd, 'var/demo-account.txt'), 'utf8');
      const pass = /password: (\S+)/.exec(note)![1]!;

      const c = await RawSmtp.connect(app.port('submission'));
      assert.equal((await c.reply()).code, 220);
      await c.cmd('EHLO client.test');
      assert.equal((await c.starttls()).code, 220);
      const cert = c.peerCertificate();
      assert.equal(cert?.subject.CN, app.cfg.hostname);
      assert.match(cert?.subjectaltname ?? '', /DNS:localhost/);
      await c.cmd('EHLO client.test');
      assert.match((await c.cmd(`AUTH PLAIN ${authPlain('demo@example.net', pass)}`)).text, /^235 2\.7\.0 /);
      await c.quit();
    } finally {
      await app.stop();
    }
  });

  it('a restart reuses the certificate and the account', async () => {
    const cert = readFileSync(path.join(cwd, 'var/tls/selfsigned.crt'), 'utf8');
    const note = readFileSync(path.join(cwd, 'var/demo-account.txt'), 'utf8');
    const app = await start();
    try {
      assert.equal(readFileSync(path.join(cwd, 'var/tls/selfsigned.crt'), 'utf8'), cert);
      assert.equal(readFileSync(path.join(cwd, 'var/demo-account.txt'), 'utf8'), note);
      const c = await RawSmtp.connect(app.port('submissions'), { implicitTls: true });
      assert.equal((await c.reply()).code, 220);
      assert.equal(c.peerCertificate()?.raw.toString('base64'), new X509Certificate(cert).raw.toString('base64'));
      await c.quit();
    } finally {
      await app.stop();
    }
  });
});
