/**
 * Scenario: TLS and the admin API.
 * - TLS 1.2 is the minimum: a client that offers at most TLS 1.1 fails the
 *   handshake with a protocol-version alert from the server, on implicit
 *   TLS (465) and after STARTTLS (587); a TLS 1.2 client succeeds.
 * - The certificate is re-read on reload (SIGHUP / `smarthost reload` call
 *   app.reload()): new connections get the new certificate, without a
 *   restart; a broken pair on disk keeps the one in use.
 * - The admin API answers /api/* only with its bearer token (401 without or
 *   with a wrong one) and binds to loopback unless told otherwise.
 * (AUTH not offered before TLS on 587: test/e2e/submission.test.ts.)
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { generate } from 'selfsigned';
import { parseConfig } from '../../src/config/schema';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { RawSmtp } from '../helpers/smtp-client';

function handshake(port: number, opts: tls.ConnectionOptions): Promise<{ ok: true; cert: tls.PeerCertificate; version: string } | { ok: false; error: string }> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts }, () => {
      const cert = s.getPeerCertificate();
      const version = s.getProtocol() ?? '';
      s.destroy();
      resolve({ ok: true, cert, version });
    });
    s.once('error', (err) => resolve({ ok: false, error: err.message }));
  });
}

const fingerprint = (c: tls.PeerCertificate) => c.fingerprint256;

describe('TLS and admin', () => {
  let gw: TestGateway;

  before(async () => {
    gw = await startGateway();
  });
  after(async () => {
    await gw.stop();
  });

  it('refuses a TLS 1.1 client (implicit TLS and STARTTLS); TLS 1.2 works', async () => {
    const old: tls.ConnectionOptions = { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' };
    const r = await handshake(gw.port('submissions'), old);
    assert.equal(r.ok, false);
    // The server says no (an alert), not our client refusing to try.
    assert.match((r as { error: string }).error, /protocol version|unsupported protocol|wrong version/i);
    const ok = await handshake(gw.port('submissions'), { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
    assert.equal(ok.ok, true);
    assert.equal((ok as { version: string }).version, 'TLSv1.2');

    // STARTTLS on 587 with a TLS 1.1-only client.
    const c = await RawSmtp.connect(gw.port('submission'));
    await c.reply();
    await c.cmd('EHLO old.test');
    assert.equal((await c.cmd('STARTTLS')).code, 220);
    const sock = (c as unknown as { socket: import('node:net').Socket }).socket;
    sock.removeAllListeners('data');
    const err = await new Promise<string>((resolve) => {
      const s = tls.connect({ socket: sock, rejectUnauthorized: false, ...old }, () => resolve('handshake succeeded'));
      s.once('error', (e) => resolve(e.message));
    });
    assert.match(err, /protocol version|unsupported protocol|wrong version/i);
    c.close();
  });

  it('serves a new certificate after reload, without a restart', async () => {
    const before = await handshake(gw.port('submissions'), {});
    assert.ok(before.ok);
    const pems = await generate([{ name: 'commonName', value: 'renewed.gw.isp.test' }], { keySize: 2048, algorithm: 'sha256' });
    await fsp.writeFile(path.join(gw.dir, 'tls.key'), pems.private, { mode: 0o600 });
    await fsp.writeFile(path.join(gw.dir, 'tls.crt'), pems.cert);
    // The operator's path: `smarthost reload` / POST /api/reload (SIGHUP calls the same reload).
    const rr = await fetch(`http://127.0.0.1:${gw.app!.admin.port}/api/reload`, { method: 'POST', headers: { authorization: 'Bearer test-admin-token' } });
    assert.equal(rr.status, 200);
    const afterReload = await handshake(gw.port('submissions'), {});
    assert.ok(afterReload.ok);
    const cert = (afterReload as { cert: tls.PeerCertificate }).cert;
    assert.notEqual(fingerprint(cert), fingerprint((before as { cert: tls.PeerCertificate }).cert));
    assert.equal(cert.subject.CN, 'renewed.gw.isp.test');
    // STARTTLS sees it too.
    const c = await RawSmtp.connect(gw.port('submission'));
    await c.reply();
    await c.cmd('EHLO new.test');
    await c.starttls();
    const peer = ((c as unknown as { socket: tls.TLSSocket }).socket).getPeerCertificate();
    assert.equal(peer.subject.CN, 'renewed.gw.isp.test');
    c.close();

    // A broken pair (key of another certificate) is refused; the renewed one stays.
    const other = await generate([{ name: 'commonName', value: 'mismatch' }], { keySize: 2048, algorithm: 'sha256' });
    await fsp.writeFile(path.join(gw.dir, 'tls.key'), other.private, { mode: 0o600 });
    await gw.app!.reload();
    const still = await handshake(gw.port('submissions'), {});
    assert.ok(still.ok);
    assert.equal((still as { cert: tls.PeerCertificate }).cert.subject.CN, 'renewed.gw.isp.test');
  });

  it('admin API: 401 without its token or with a wrong one; binds to loopback by default', async () => {
    const port = gw.app!.admin.port;
    const base = `http://127.0.0.1:${port}`;
    for (const headers of [{} as Record<string, string>, { authorization: 'Bearer wrong' }, { authorization: 'Basic dGVzdDp0ZXN0' }, { authorization: 'Bearer ' }, { authorization: 'Bearer test-admin-token-and-more' }]) {
      for (const [method, p] of [['GET', '/api/queue'], ['POST', '/api/queue/flush'], ['POST', '/api/reload']] as const) {
        const r = await fetch(`${base}${p}`, { method, headers });
        assert.equal(r.status, 401, `${method} ${p} with ${JSON.stringify(headers)}`);
      }
    }
    const ok = await fetch(`${base}/api/queue`, { headers: { authorization: 'Bearer test-admin-token' } });
    assert.equal(ok.status, 200);
    // The default bind address.
    const cfg = parseConfig({ serverTls: { selfSigned: true } }, '(test)', '/tmp');
    assert.equal(cfg.admin.address, '127.0.0.1');
    assert.equal(cfg.serverTls.minVersion, 'TLSv1.2');
  });
});
