/**
 * tls: verify (Postfix `verify`): STARTTLS is mandatory and the server's
 * certificate must chain to a trusted CA (the configured `ca` bundle, else
 * Node's default roots) and be valid for the host name we meant to reach.
 * Real TLS over loopback against smtp-server: a test CA signs a leaf for
 * relay.test / mx.dest.test; names resolve to 127.0.0.1 through a stub
 * resolver. A failure defers (4.7.5), the server never sees MAIL FROM.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createDeliveryAgent } from '../../src/relay/deliver';
import { parseRelayConfig, type NextHop, type RelayConfig } from '../../src/relay/config';
import { routeFor } from '../../src/relay/routes';
import type { MxResolver } from '../../src/relay/mx';
import { loadConfigFile } from '../../src/config/load';
import { At, ConfigError } from '../../src/config/validate';
import { testCert } from '../helpers/tls';
import { startTestCa } from '../helpers/test-ca';
import { startTestMx, type TestMx, type TestMxOptions } from '../helpers/test-mx';
import { captureLogger, job, relayConfig } from './fixtures';

interface Pki {
  caPem: string;
  leaf: { key: string; cert: string };
}

let pki: Pki;
let dir: string;
let caFile: string;

before(async () => {
  const ca = await startTestCa();
  pki = { caPem: ca.caPem, leaf: await ca.leaf(['relay.test', 'mx.dest.test']) };
  dir = mkdtempSync(path.join(os.tmpdir(), 'smarthost-tlsverify-'));
  caFile = path.join(dir, 'ca.pem');
  writeFileSync(caFile, pki.caPem);
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Every name is 127.0.0.1; dest.test has MX mx.dest.test, wrong.test has MX mx.wrong.test. */
const resolver: MxResolver = {
  resolveHost: async () => ({ ok: true, addresses: ['127.0.0.1'] }),
  resolveMx: async (domain) => ({ ok: true, implicit: false, hosts: [{ name: `mx.${domain}`, preference: 10, addresses: ['127.0.0.1'] }] }),
  cancel: () => undefined,
};

function cfg(over: Partial<RelayConfig>): RelayConfig {
  return relayConfig(undefined, 25, { concurrencyPerDestination: 2, maxConnections: 10, activeWindow: 10, maxLifetimeMs: 60_000, socketTimeoutMs: 5000, poolIdleMs: 0, maxMessagesPerConnection: 10, ...over });
}

interface Watched {
  mx: TestMx;
  /** MAIL FROM commands the server saw (in plaintext or not). */
  mailFroms: string[];
  connections: number;
}

/** A test relay with STARTTLS, presenting the CA-signed leaf unless told otherwise. */
async function startRelay(opts: { selfSigned?: boolean; starttls?: boolean; auth?: TestMxOptions['auth'] } = {}): Promise<Watched> {
  const w = { mailFroms: [] as string[], connections: 0 } as Watched;
  w.mx = await startTestMx({
    starttls: opts.starttls ?? true,
    auth: opts.auth,
    extra: {
      ...(opts.selfSigned ? {} : { key: pki.leaf.key, cert: pki.leaf.cert }),
      // smtp-server still accepts a hidden STARTTLS (and nodemailer's requireTLS tries it): refuse it outright.
      ...(opts.starttls === false ? { disabledCommands: ['AUTH', 'STARTTLS'] } : {}),
      onConnect(_s, cb) {
        w.connections++;
        cb();
      },
      onMailFrom(address, _s, cb) {
        w.mailFroms.push(address.address);
        cb();
      },
    },
  });
  return w;
}

function hop(port: number, over: Partial<NextHop> = {}): NextHop {
  return { host: 'relay.test', port, tls: 'verify', ...over };
}

test('verify: delivered when the certificate chains to the configured CA and matches the relay name', { timeout: 20_000 }, async () => {
  const auth = { user: 'isp-gw', pass: 's3cret-pass' };
  const srv = await startRelay({ auth });
  const log = captureLogger();
  const agent = createDeliveryAgent(cfg({ relayhost: hop(srv.mx.port, { ca: pki.caPem, caFile, auth }) }), { hostname: 'gw.test', logger: log.logger, resolver });
  try {
    const [o] = await agent.deliver(job(['a@far.test']));
    assert.equal(o.kind, 'delivered', JSON.stringify(o));
    assert.equal(srv.mx.messages.length, 1);
    assert.equal(srv.mx.messages[0].secure, true);
    assert.equal(srv.mx.messages[0].user, 'isp-gw');
    assert.equal(log.lines.find((l) => l.evt === 'delivery')?.tls, true);
    // AUTH towards a verified peer: no warning; the password is never logged.
    assert.equal(log.lines.filter((l) => l.evt === 'config').length, 0);
    assert.ok(!log.raw.join('').includes('s3cret-pass'));
  } finally {
    await agent.close();
    await srv.mx.close();
  }
});

test('verify: an untrusted self-signed certificate defers (4.7.5), no plaintext fallback', { timeout: 20_000 }, async () => {
  const srv = await startRelay({ selfSigned: true });
  const log = captureLogger();
  // The self-signed test certificate is for "localhost": the name matches, the trust does not.
  const agent = createDeliveryAgent(cfg({ relayhost: hop(srv.mx.port, { host: 'localhost' }) }), { hostname: 'gw.test', logger: log.logger, resolver });
  try {
    const [o] = await agent.deliver(job(['a@far.test']));
    assert.equal(o.kind, 'deferred', JSON.stringify(o));
    const error = o.kind === 'deferred' ? o.error : '';
    assert.match(error, /4\.7\.5 Server certificate not verified for localhost: self[- ]signed certificate/);
    assert.equal(o.kind === 'deferred' && o.statusCode, '4.7.5');
    assert.match(error, /DEPTH_ZERO_SELF_SIGNED_CERT/);
    assert.deepEqual(srv.mailFroms, []);
    assert.equal(srv.mx.messages.length, 0);
    assert.equal(srv.connections, 1, 'no second (plaintext) session');
    const line = log.lines.find((l) => l.evt === 'transient_failure');
    assert.match(String(line?.response), /Server certificate not verified/);
  } finally {
    await agent.close();
    await srv.mx.close();
  }
});

test('verify: an IP literal host is checked against IP SANs; a self-signed certificate given as ca is trusted', { timeout: 20_000 }, async () => {
  const srv = await startRelay({ selfSigned: true });
  const { cert } = await testCert(); // CN localhost, SAN DNS:localhost + IP:127.0.0.1
  const log = captureLogger();
  const agent = createDeliveryAgent(cfg({ relayhost: hop(srv.mx.port, { host: '127.0.0.1', ca: cert }) }), { hostname: 'gw.test', logger: log.logger, resolver });
  try {
    const [o] = await agent.deliver(job(['a@far.test']));
    assert.equal(o.kind, 'delivered', JSON.stringify(o));
    assert.equal(srv.mx.messages[0].secure, true);
  } finally {
    await agent.close();
    await srv.mx.close();
  }
});

test('verify: a certificate from the right CA but for another name defers', { timeout: 20_000 }, async () => {
  const srv = await startRelay();
  const log = captureLogger();
  const routes = new Map([['far.test', hop(srv.mx.port, { host: 'other.test', ca: pki.caPem, caFile })]]);
  const agent = createDeliveryAgent(cfg({ routes }), { hostname: 'gw.test', logger: log.logger, resolver });
  try {
    const [o] = await agent.deliver(job(['a@far.test']));
    assert.equal(o.kind, 'deferred', JSON.stringify(o));
    assert.match(o.kind === 'deferred' ? o.error : '', /4\.7\.5 Server certificate not verified for other\.test: .*other\.test.*(ERR_TLS_CERT_ALTNAME_INVALID)/);
    assert.equal(o.kind === 'deferred' && o.statusCode, '4.7.5');
    assert.deepEqual(srv.mailFroms, []);
    assert.equal(srv.connections, 1);
  } finally {
    await agent.close();
    await srv.mx.close();
  }
});

test('verify: a server without STARTTLS defers, nothing sent in plaintext', { timeout: 20_000 }, async () => {
  const srv = await startRelay({ starttls: false });
  const log = captureLogger();
  const agent = createDeliveryAgent(cfg({ relayhost: hop(srv.mx.port, { ca: pki.caPem, caFile }) }), { hostname: 'gw.test', logger: log.logger, resolver });
  try {
    const [o] = await agent.deliver(job(['a@far.test']));
    assert.equal(o.kind, 'deferred', JSON.stringify(o));
    assert.equal(o.kind === 'deferred' && o.statusCode, '4.7.4', 'STARTTLS required but not offered');
    assert.deepEqual(srv.mailFroms, []);
    assert.equal(srv.connections, 1);
  } finally {
    await agent.close();
    await srv.mx.close();
  }
});

test('mxTls verify: checked against the MX exchange name, with mxCa', { timeout: 20_000 }, async () => {
  const srv = await startRelay();
  const log = captureLogger();
  const agent = createDeliveryAgent(cfg({ mxPort: srv.mx.port, mxTls: 'verify', mxCa: pki.caPem, mxCaFile: caFile }), {
    hostname: 'gw.test',
    logger: log.logger,
    resolver,
  });
  try {
    // dest.test → mx.dest.test (in the certificate); wrong.test → mx.wrong.test (not).
    const [ok, bad] = await agent.deliver(job(['a@dest.test', 'b@wrong.test']));
    assert.equal(ok.kind, 'delivered', JSON.stringify(ok));
    assert.equal(bad.kind, 'deferred', JSON.stringify(bad));
    assert.match(bad.kind === 'deferred' ? bad.error : '', /Server certificate not verified for mx\.wrong\.test/);
    assert.equal(bad.kind === 'deferred' && bad.statusCode, '4.7.5');
    assert.deepEqual(srv.mailFroms, ['sender@origin.test']);
  } finally {
    await agent.close();
    await srv.mx.close();
  }
});

test('AUTH to a next hop without tls: verify is warned about once at start, without secrets', async () => {
  const log = captureLogger();
  const auth = { user: 'isp-gw', pass: 'hunter2-secret' };
  const routes = new Map([
    ['corp.test', { host: 'corp-relay.test', port: 25, tls: 'required' as const, auth }],
    ['ok.test', { host: 'ok-relay.test', port: 25, tls: 'verify' as const, auth }],
  ]);
  const agent = createDeliveryAgent(cfg({ relayhost: { host: 'up.test', port: 587, tls: 'opportunistic', auth }, routes }), {
    hostname: 'gw.test',
    logger: log.logger,
    resolver,
  });
  await agent.close();
  const warned = log.lines.filter((l) => l.evt === 'config');
  assert.deepEqual(warned.map((l) => l.key), ['relay.relayhost', 'relay.routes.corp.test']);
  assert.ok(!log.raw.join('').includes('hunter2-secret'));
  assert.ok(!log.raw.join('').includes('isp-gw'));
});

test('config: tls verify with a ca file (relative to the config file), mxCa, and the pool key', () => {
  writeFileSync(path.join(dir, 'smarthost.yaml'), `serverTls: { selfSigned: true }\nrelay:\n  relayhost: { host: relay.test, port: 587, tlsLevel: verify, ca: ca.pem }\n  mxTls: verify\n  mxCa: ${caFile}\n`);
  const c = loadConfigFile(path.join(dir, 'smarthost.yaml')).relay;
  assert.equal(c.relayhost?.tls, 'verify');
  assert.equal(c.relayhost?.ca, pki.caPem);
  assert.equal(c.relayhost?.caFile, caFile);
  assert.equal(c.mxTls, 'verify');
  assert.equal(c.mxCa, pki.caPem);
  const plan = routeFor(c, 'far.test');
  assert.equal(plan.key, `relay:relay.test:587:verify::${caFile}`);
  // Without a CA file the key is what it always was.
  const plain = parseRelayConfig({ relayhost: { host: 'relay.test', port: 587, tlsLevel: 'verify' } }, new At('/x/smarthost.yaml', 'relay'), '/x');
  assert.equal(routeFor(plain, 'far.test').key, 'relay:relay.test:587:verify:');
});

test('config: an unreadable ca file is a config error naming the key and the file', () => {
  const missing = path.join(dir, 'nope.pem');
  assert.throws(
    () => parseRelayConfig({ routes: { 'corp.test': { host: 'r.test', tlsLevel: 'verify', ca: missing } } }, new At('/etc/smarthost.yaml', 'relay'), '/etc'),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.key, 'relay.routes.corp.test.ca');
      assert.match(err.reason, /cannot read CA bundle .*nope\.pem: ENOENT/);
      return true;
    },
  );
  writeFileSync(path.join(dir, 'junk.pem'), 'not a certificate\n');
  assert.throws(
    () => parseRelayConfig({ relayhost: { host: 'r.test', tlsLevel: 'verify', ca: path.join(dir, 'junk.pem') } }, new At('/etc/smarthost.yaml', 'relay'), '/etc'),
    /relay\.relayhost\.ca: no PEM certificate/,
  );
  assert.throws(
    () => parseRelayConfig({ relayhost: { host: 'r.test', tlsLevel: 'required', ca: caFile } }, new At('/etc/smarthost.yaml', 'relay'), '/etc'),
    /relay\.relayhost\.ca: a CA bundle is only used with tlsLevel: verify/,
  );
  assert.throws(
    () => parseRelayConfig({ mxCa: caFile }, new At('/etc/smarthost.yaml', 'relay'), '/etc'),
    /relay\.mxCa: a CA bundle is only used with mxTls: verify/,
  );
});
