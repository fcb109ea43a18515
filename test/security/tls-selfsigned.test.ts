/**
 * Attack surface: a production gateway that forgot `serverTls.cert` silently
 * serving a self-signed certificate (subscribers' clients warn, or have been
 * taught to click through warnings, and a man in the middle goes unseen).
 * A TLS listener without a certificate must be a config error naming the
 * file and key, in `check-config` and `start` alike, unless the operator
 * writes `serverTls.selfSigned: true` (the embedded quick start does). The
 * top-level `serverTls: {cert, key}` (what every deployment and the
 * independent benchmark use) is what the listeners serve.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig, parseConfigText } from '../../src/config/load';
import { ConfigError } from '../../src/config/validate';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { RawSmtp } from '../helpers/smtp-client';

const MAIN = path.resolve(__dirname, '../../src/cli/main.js');

const PRODUCTION = `
hostname: gw.isp.example
spool: { dir: spool }
listeners:
  - { name: intercept, role: intercept, address: 127.0.0.1, port: 2525, security: none }
  - { name: submission, role: submission, address: 127.0.0.1, port: 2587, security: starttls }
`;

function refusal(text: string): ConfigError {
  try {
    parseConfigText(text, '/etc/smarthost/smarthost.yaml', '/etc/smarthost');
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  assert.fail('the config was accepted');
}

describe('a TLS listener needs a certificate', () => {
  let dir: string;
  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-tlscfg-'));
  });
  after(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('no serverTls.cert with a STARTTLS or implicit-TLS listener: config error naming file, key and listener', () => {
    const e = refusal(PRODUCTION);
    assert.equal(e.file, '/etc/smarthost/smarthost.yaml');
    assert.equal(e.key, 'serverTls.cert');
    assert.match(e.reason, /listener "submission" uses TLS \(security: starttls\).*serverTls\.selfSigned: true/);
    const implicit = refusal('listeners:\n  - { name: smtps, role: submission, port: 465, security: implicit }\n');
    assert.match(implicit.reason, /listener "smtps" uses TLS \(security: implicit\)/);
    // No listeners written: the defaults (587, 465, 25) all use TLS.
    assert.equal(refusal('hostname: gw.isp.example\n').key, 'serverTls.cert');
  });

  it('check-config and start refuse it with one line, no stack trace, without binding anything', async () => {
    const file = path.join(dir, 'smarthost.yaml');
    await fsp.writeFile(file, PRODUCTION);
    for (const cmd of ['check-config', 'start']) {
      const r = spawnSync(process.execPath, [MAIN, cmd, '--config', file], { encoding: 'utf8', timeout: 30_000 });
      assert.notEqual(r.status, 0, cmd);
      const out = r.stdout + r.stderr;
      assert.match(out, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: serverTls\\.cert: listener "submission" uses TLS`), cmd);
      assert.doesNotMatch(out, /^\s+at /m, `${cmd}: no stack trace`);
    }
  });

  it('accepted: serverTls.selfSigned: true, listeners without TLS only, and the embedded quick start', async () => {
    assert.equal(parseConfigText(`${PRODUCTION}serverTls: { selfSigned: true }\n`, 'f.yaml', '/tmp').serverTls.selfSigned, true);
    parseConfigText('listeners:\n  - { name: intercept, role: intercept, port: 25, security: none }\n', 'f.yaml', '/tmp');
    const empty = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-embedded-'));
    try {
      const cfg = loadConfig(undefined, empty);
      assert.equal(cfg.embedded, true);
      assert.equal(cfg.serverTls.selfSigned, true);
    } finally {
      await fsp.rm(empty, { recursive: true, force: true });
    }
    // Both at once is ambiguous.
    assert.equal(refusal(`${PRODUCTION}serverTls: { cert: c.pem, key: k.pem, selfSigned: true }\n`).key, 'serverTls.selfSigned');
  });
});

describe('what the listeners serve', { timeout: 60_000 }, () => {
  let legacy: TestGateway;
  let self: TestGateway;
  let plain: TestGateway;
  before(async () => {
    // The helper writes `serverTls: { cert: tls.crt, key: tls.key }`.
    legacy = await startGateway();
    self = await startGateway({ config: { serverTls: { cert: null, key: null, selfSigned: true } } });
    plain = await startGateway({
      config: {
        serverTls: { cert: null, key: null },
        listeners: [{ name: 'intercept', role: 'intercept', address: '127.0.0.1', port: 0, security: 'none', greetDelay: '0ms' }],
      },
    });
  });
  after(async () => {
    await legacy.stop();
    await self.stop();
    await plain.stop();
  });

  async function served(gw: TestGateway): Promise<X509Certificate> {
    const c = await RawSmtp.connect(gw.port('submission'));
    await c.reply();
    await c.cmd('EHLO client.test');
    assert.equal((await c.starttls()).code, 220);
    const raw = c.peerCertificate()!.raw;
    await c.quit();
    return new X509Certificate(raw);
  }

  it('serverTls: {cert, key}: the configured certificate', async () => {
    const configured = new X509Certificate(readFileSync(path.join(legacy.dir, 'tls.crt')));
    assert.equal((await served(legacy)).fingerprint256, configured.fingerprint256);
  });

  it('serverTls.selfSigned: true: a generated certificate for the hostname, kept under var/tls', async () => {
    const cert = await served(self);
    assert.match(cert.subject, /CN=gw\.isp\.test/);
    assert.equal(cert.issuer, cert.subject);
    assert.equal(cert.fingerprint256, new X509Certificate(readFileSync(path.join(self.dir, 'tls', 'selfsigned.crt'))).fingerprint256);
  });

  it('no listener with TLS: no certificate is made, STARTTLS is not offered, mail is taken', async () => {
    await assert.rejects(fsp.access(path.join(plain.dir, 'tls')), 'a tls/ directory was made for a gateway without TLS');
    const c = await RawSmtp.connect(plain.port('intercept'), { localAddress: '127.0.0.2' });
    assert.equal((await c.reply()).code, 220);
    const ehlo = await c.cmd('EHLO client.test');
    assert.doesNotMatch(ehlo.text, /STARTTLS/);
    assert.match((await c.cmd('MAIL FROM:<a@home.test>')).text, /^250 /);
    await c.quit();
  });
});
