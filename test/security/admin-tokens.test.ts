/**
 * Scenario: the admin API (suspend, delete, relay grants) as an attacker on
 * the management network, or a NOC with a read-only token, would meet it.
 * - Off loopback it is TLS or nothing: a non-loopback `admin.address`
 *   without a certificate is a config error naming the file and the key,
 *   unless `admin.insecure: true`; with the gateway's `tls.cert` it uses
 *   that; on loopback (the independent benchmark's config) plain HTTP.
 * - Served over TLS (here on loopback with `admin.tls`): plain HTTP gets no
 *   answer; `smarthost` CLI calls pin the configured certificate and send
 *   no token to a server presenting another one.
 * - Two tokens: the read-only token (`admin.readTokenFile`) sees the views
 *   and gets 403 on every route that changes anything, which then has no
 *   effect (an account stays unsuspended, a queued message stays); the
 *   operator token does everything; no token or a wrong one: 401.
 */
import assert from 'node:assert/strict';
import { promises as fsp, readFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { generate } from 'selfsigned';
import { build, type App } from '../../src/app';
import { adminCall } from '../../src/cli/common';
import { loadConfigFile } from '../../src/config/load';
import { parseConfig, type Config } from '../../src/config/schema';
import { ConfigError } from '../../src/config/validate';
import { createLogger } from '../../src/log';
import { prepareGateway } from '../helpers/gateway';
import { testCert } from '../helpers/tls';

const OPERATOR = 'operator-token-0123456789';

function request(port: number, method: string, p: string, token: string | undefined, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, method, path: p, ca, servername: 'localhost', headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('error', reject);
    req.end(method === 'POST' ? '{}' : undefined);
  });
}

describe('admin API: TLS off loopback', () => {
  const parse = (admin: Record<string, unknown>, tls?: Record<string, unknown>) => parseConfig({ admin, ...(tls ? { tls } : {}) }, '/etc/smarthost/smarthost.yaml', '/etc/smarthost');

  it('a non-loopback address without TLS is a config error naming the file and the key', () => {
    for (const address of ['0.0.0.0', '10.0.1.11', '::', '2001:db8::1', 'mgmt.isp.example']) {
      assert.throws(
        () => parse({ address, port: 8025 }),
        (e: unknown) => e instanceof ConfigError && e.file === '/etc/smarthost/smarthost.yaml' && e.key === 'admin.address' && /needs TLS/.test(e.reason),
        address,
      );
    }
  });

  it('uses its own certificate, else the gateway’s; insecure only when written', () => {
    const own = parse({ address: '10.0.1.11', tls: { cert: 'admin.crt', key: 'admin.key' } }, { cert: 'gw.crt', key: 'gw.key' });
    assert.deepEqual(own.admin.tls, { cert: '/etc/smarthost/admin.crt', key: '/etc/smarthost/admin.key' });
    const gw = parse({ address: '10.0.1.11' }, { cert: 'gw.crt', key: 'gw.key' });
    assert.deepEqual(gw.admin.tls, { cert: '/etc/smarthost/gw.crt', key: '/etc/smarthost/gw.key' });
    const insecure = parse({ address: '10.0.1.11', insecure: true }, { selfSigned: true });
    assert.equal(insecure.admin.tls, undefined);
    assert.throws(() => parse({ address: '10.0.1.11', tls: { cert: 'admin.crt' } }), /admin\.tls: cert and key must be given together/);
  });

  it('loopback stays plain HTTP (the benchmark: 127.0.0.1, tokenFile, no TLS)', () => {
    for (const address of ['127.0.0.1', '127.0.0.2', '::1', 'localhost']) {
      const cfg = parse({ address, port: 8025, tokenFile: 'admin.token' }, { cert: 'gw.crt', key: 'gw.key' });
      assert.equal(cfg.admin.tls, undefined, address);
    }
  });
});

describe('admin API: operator and read-only tokens, over TLS', () => {
  let app: App;
  let dir: string;
  let cfg: Config;
  let ca: string;
  let readToken: string;
  let port: number;

  before(async () => {
    const p = await prepareGateway({
      config: {
        admin: { address: '127.0.0.1', port: 0, token: OPERATOR, readTokenFile: 'var/read.token', tls: { cert: 'admin.crt', key: 'admin.key' } },
        roles: { popBeforeSmtp: { enabled: true } },
      },
    });
    dir = p.dir;
    const { cert, key } = await testCert();
    ca = cert;
    await fsp.writeFile(path.join(dir, 'admin.crt'), cert);
    await fsp.writeFile(path.join(dir, 'admin.key'), key, { mode: 0o600 });
    cfg = loadConfigFile(p.configFile);
    app = await build(cfg, { logger: createLogger({ level: 'silent', pretty: false }), scanIntervalMs: 60_000 });
    await app.start();
    port = app.admin.port;
    readToken = readFileSync(path.join(dir, 'var/read.token'), 'utf8').trim();
    assert.ok(readToken.length >= 20 && readToken !== OPERATOR, 'a read token was generated');
  });
  after(async () => {
    await app?.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('speaks TLS only: a plain HTTP request gets no HTTP answer', async () => {
    const answer = await new Promise<string>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write('GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n'));
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      s.on('close', () => resolve(got));
      s.on('error', () => resolve(got));
    });
    assert.doesNotMatch(answer, /^HTTP\/1\.1 200/);
    assert.equal((await request(port, 'GET', '/readyz', undefined, ca)).status, 200);
  });

  it('the read-only token gets 403 on every route that changes anything; views answer', async () => {
    const table = app.admin.routeTable();
    const mutating = table.filter((r) => r.method !== 'GET' && r.path !== '/api/policy/explain');
    assert.ok(mutating.length >= 11, `mutating routes found: ${mutating.length}`);
    for (const r of table) {
      const p = r.path.replace(':op', 'delete').replace(/:[a-z]+/g, 'x');
      const asReader = await request(port, r.method, p, readToken, ca);
      if (mutating.includes(r)) assert.equal(asReader.status, 403, `${r.method} ${r.path} with the read-only token`);
      else assert.notEqual(asReader.status, 403, `${r.method} ${r.path}: a view the read-only token may see`);
      assert.equal((await request(port, r.method, p, undefined, ca)).status, 401, `${r.method} ${r.path} without a token`);
      assert.equal((await request(port, r.method, p, `${readToken}x`, ca)).status, 401, `${r.method} ${r.path} with a wrong token`);
      assert.notEqual((await request(port, r.method, p, OPERATOR, ca)).status, 403, `${r.method} ${r.path} with the operator token`);
    }
    // The views a NOC needs, by name.
    for (const p of ['/api/queue', '/api/fleet', '/api/containment']) assert.equal((await request(port, 'GET', p, readToken, ca)).status, 200, p);
    const explain = await request(port, 'POST', '/api/policy/explain?listener=intercept&ip=127.0.0.5&from=a@home.test&rcpt=b@dest.test', readToken, ca);
    assert.equal(explain.status, 200, explain.body);
  });

  it('a refused change has no effect; the operator token makes it', async () => {
    const ip = '127.0.0.9';
    const grants = async () => JSON.parse((await request(port, 'GET', `/api/pop-grants?ip=${ip}`, readToken, ca)).body) as { grants: unknown[] };
    const grant = (token: string) =>
      new Promise<number>((resolve, reject) => {
        const req = https.request({ host: '127.0.0.1', port, method: 'POST', path: '/api/pop-grants', ca, servername: 'localhost', headers: { authorization: `Bearer ${token}` } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.once('error', reject);
        req.end(JSON.stringify({ user: 'alice@isp.test', ip }));
      });
    // A POP-before-SMTP grant is relay rights for that address.
    assert.equal(await grant(readToken), 403);
    assert.deepEqual((await grants()).grants, []);
    assert.equal(await grant(OPERATOR), 200);
    assert.equal((await grants()).grants.length, 1);
  });

  it('the CLI pins the configured certificate and sends no token to another one', async () => {
    const live = { ...cfg, admin: { ...cfg.admin, port } };
    const ok = await adminCall(live, 'GET', '/api/queue');
    assert.equal(ok.status, 200);
    // The operator's CLI trusts another certificate than the one the API presents: no token leaves.
    const other = await generate([{ name: 'commonName', value: 'localhost' }], { keySize: 2048, algorithm: 'sha256' });
    const otherCert = path.join(dir, 'other.crt');
    await fsp.writeFile(otherCert, other.cert);
    await assert.rejects(adminCall({ ...live, admin: { ...live.admin, tls: { cert: otherCert, key: '' } } }, 'GET', '/api/queue'), /did not present the certificate/);
  });
});
