/**
 * DANE (RFC 7672) against a real DNSSEC chain on loopback: a zone signed
 * with ldns-signzone, served by nsd, validated by a private unbound whose
 * trust anchor is the zone's KSK — the AD bit the gateway trusts is
 * unbound's own (test/helpers/dnssec.ts). Test MXes (smtp-server) on
 * 127.0.19.2x: one presenting a leaf signed by a test CA together with the
 * CA (so DANE-TA can find its anchor in the chain), one without STARTTLS.
 *
 * As an attacker: a certificate that matches no TLSA record, a DANE-TA
 * chain whose leaf is not valid for the MX name, a bogus (badly signed)
 * TLSA RRset, and TLSA records present but unusable in front of a server
 * without STARTTLS must all defer with no MAIL FROM at the server; DANE wins
 * over an MTA-STS policy that would refuse the MX; TLSA records of an MX
 * host whose own addresses are insecure (a CNAME into an unsigned zone) are
 * not used (RFC 7672 §2.2.2).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { createDeliveryAgent } from '../../src/relay/deliver';
import { parseRelayConfig, type RelayConfig } from '../../src/relay/config';
import { At, ConfigError } from '../../src/config/validate';
import { checkDane, DaneResolver } from '../../src/relay/dane';
import type { TlsPolicyEvent } from '../../src/relay/secure-transport';
import { startSignedDns, type SignedDns } from '../helpers/dnssec';
import { startTestCa, type TestCa } from '../helpers/test-ca';
import { captureLogger, job, relayConfig, startMxGroup, type CountedMx } from './fixtures';

let dns: SignedDns;
let ca: TestCa;
let caDer: Buffer;
let leafDer: Buffer;
let otherLeafDer: Buffer;
let mxPort: number;
let tlsMx: CountedMx, plainMx: CountedMx;
let web: https.Server;
let webPort: number;
const mailFroms = new Map<string, number>();
const IP = { tls: '127.0.19.21', plain: '127.0.19.22' };
const HOSTS = ['mx-ee', 'mx-ee512', 'mx-eefull', 'mx-ta', 'mx-wrong', 'mx-unusable-tls', 'mx-bogus'].map((h) => `${h}.dane.test`);

const hex = (b: Buffer): string => b.toString('hex');
const spki = (der: Buffer): Buffer => new X509Certificate(der).publicKey.export({ type: 'spki', format: 'der' });
const sha = (alg: 'sha256' | 'sha512', b: Buffer): string => createHash(alg).update(b).digest('hex');

before(async () => {
  ca = await startTestCa();
  const other = await startTestCa('Unrelated CA');
  // The leaf is valid for every MX name but mx-taname (a DANE-TA name mismatch).
  const leaf = await ca.leaf([...HOSTS, 'mta-sts.sts.dane.test']);
  caDer = new X509Certificate(ca.caPem).raw;
  leafDer = new X509Certificate(leaf.cert).raw;
  otherLeafDer = new X509Certificate((await other.leaf(['mx-wrong.dane.test'])).cert).raw;

  const watch = (ip: string) => ({
    onMailFrom(_a: unknown, _s: unknown, cb: () => void) {
      mailFroms.set(ip, (mailFroms.get(ip) ?? 0) + 1);
      cb();
    },
  });
  const g = await startMxGroup([
    // DANE-TA needs the anchor in the server's chain (RFC 7672 §3.2.2): leaf + CA.
    { host: IP.tls, starttls: true, extra: { key: leaf.key, cert: `${leaf.cert.trim()}\n${ca.caPem}`, ...watch(IP.tls) } },
    { host: IP.plain, starttls: false, extra: { disabledCommands: ['AUTH', 'STARTTLS'], ...watch(IP.plain) } },
  ]);
  mxPort = g.port;
  [tlsMx, plainMx] = g.mxs;

  // An MTA-STS policy host for the precedence test.
  web = https.createServer({ key: leaf.key, cert: leaf.cert }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('version: STSv1\r\nmode: enforce\r\nmx: only.elsewhere.test\r\nmax_age: 86400\r\n');
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  webPort = (web.address() as AddressInfo).port;

  const p = `_${mxPort}._tcp`;
  const zone = (name: string, mx: string, ip: string, tlsa?: string): string[] => [`${name} IN MX 10 ${mx}`, `${mx} IN A ${ip}`, ...(tlsa ? [`${p}.${mx} IN TLSA ${tlsa}`] : [])];
  dns = await startSignedDns({
    origin: 'dane.test',
    records: [
      ...zone('ee', 'mx-ee', IP.tls, `3 1 1 ${sha('sha256', spki(leafDer))}`),
      ...zone('ee512', 'mx-ee512', IP.tls, `3 0 2 ${sha('sha512', leafDer)}`),
      ...zone('eefull', 'mx-eefull', IP.tls, `3 0 0 ${hex(leafDer)}`),
      ...zone('ta', 'mx-ta', IP.tls, `2 1 1 ${sha('sha256', spki(caDer))}`),
      ...zone('taname', 'mx-taname', IP.tls, `2 0 1 ${sha('sha256', caDer)}`),
      ...zone('wrong', 'mx-wrong', IP.tls, `3 1 1 ${sha('sha256', spki(otherLeafDer))}`),
      ...zone('unusable', 'mx-unusable', IP.plain, `1 1 1 ${sha('sha256', spki(leafDer))}`),
      ...zone('unusable-tls', 'mx-unusable-tls', IP.tls, `0 0 1 ${sha('sha256', leafDer)}`),
      ...zone('bogus', 'mx-bogus', IP.tls, `3 1 1 ${sha('sha256', spki(leafDer))}`),
      // Secure TLSA (of another key) at hosts whose addresses come through a CNAME: into an
      // unsigned zone (insecure: no DANE), and within this zone (secure: DANE, and the record fails).
      'alias IN MX 10 mx-alias',
      'mx-alias IN CNAME mx.plain.test.',
      `${p}.mx-alias IN TLSA 3 1 1 ${sha('sha256', spki(otherLeafDer))}`,
      'secure-alias IN MX 10 mx-secure-alias',
      'mx-secure-alias IN CNAME mx-ee',
      `${p}.mx-secure-alias IN TLSA 3 1 1 ${sha('sha256', spki(otherLeafDer))}`,
      'sts IN MX 10 mx-ee',
      '_mta-sts.sts IN TXT "v=STSv1; id=1;"',
      'mta-sts.sts IN A 127.0.0.1',
    ],
    unsigned: { origin: 'plain.test', records: [`mx IN A ${IP.tls}`] },
    // Change the bogus TLSA record after signing: its RRSIG no longer verifies (unbound: SERVFAIL).
    tamper: (signed) =>
      signed.replace(new RegExp(`(${p.replace(/\./g, '\\.')}\\.mx-bogus\\.dane\\.test\\.\\s+\\d+\\s+IN\\s+TLSA\\s+3 1 1 )[0-9a-fA-F]+`), (_m, head: string) => `${head}${'ab'.repeat(32)}`),
  });
});

after(async () => {
  await Promise.all([tlsMx, plainMx].filter(Boolean).map((m) => m.close()));
  await new Promise<void>((resolve) => (web ? web.close(() => resolve()) : resolve()));
  await dns?.close();
});

function cfg(over: Partial<RelayConfig> = {}): RelayConfig {
  return {
    ...relayConfig(undefined, mxPort, { poolIdleMs: 0, dane: { enabled: true, resolver: dns.resolver, timeoutMs: 3000 }, ...over }),
    dns: { servers: [dns.resolver], timeoutMs: 3000, tries: 1 },
  };
}

async function deliverTo(rcpt: string, over: Partial<RelayConfig> = {}) {
  const events: TlsPolicyEvent[] = [];
  const agent = createDeliveryAgent(cfg(over), { hostname: 'gw.test', logger: captureLogger().logger, tlsObserver: { onTlsPolicy: (e) => events.push(e) } });
  try {
    const [outcome] = await agent.deliver(job([rcpt]));
    return { outcome, events, error: outcome.kind === 'deferred' ? outcome.error : '' };
  } finally {
    await agent.close();
  }
}

const seen = (ip: string): number => mailFroms.get(ip) ?? 0;

test('the resolver AD bit is real: a secure MX RRset and TLSA records come back as DANE', { timeout: 20_000 }, async () => {
  const r = new DaneResolver({ enabled: true, resolver: dns.resolver, timeoutMs: 3000 });
  assert.deepEqual([...((await r.secureMxNames('ee.dane.test')) ?? [])], ['mx-ee.dane.test']);
  const t = await r.tlsa('mx-ee.dane.test', mxPort);
  assert.equal(t.kind, 'dane');
  assert.equal(t.kind === 'dane' ? t.usable.length : 0, 1);
  assert.equal((await r.tlsa('mx-bogus.dane.test', mxPort)).kind, 'failed', 'a TLSA RRset whose signature fails is SERVFAIL, not "no DANE"');
  assert.equal((await r.tlsa('mx-none.dane.test', mxPort)).kind, 'none');
});

test('answers without the AD bit (the authoritative server, no validation) are not DANE: TLSA ignored', { timeout: 20_000 }, async () => {
  const r = new DaneResolver({ enabled: true, resolver: dns.authoritative, timeoutMs: 3000 });
  assert.equal(await r.secureMxNames('wrong.dane.test'), undefined, 'MX RRset not validated');
  assert.equal((await r.tlsa('mx-wrong.dane.test', mxPort)).kind, 'none');
  // Delivery through that resolver: no DANE, so the wrong TLSA record does not stop opportunistic TLS.
  const { outcome, events } = await deliverTo('b@wrong.dane.test', { dane: { enabled: true, resolver: dns.authoritative, timeoutMs: 3000 } });
  assert.equal(outcome.kind, 'delivered', JSON.stringify(outcome));
  assert.deepEqual(events, []);
});

for (const [domain, what] of [
  ['ee.dane.test', 'DANE-EE SPKI SHA-256'],
  ['ee512.dane.test', 'DANE-EE full certificate SHA-512'],
  ['eefull.dane.test', 'DANE-EE full certificate, exact match'],
  ['ta.dane.test', 'DANE-TA SPKI SHA-256 (anchor in the chain, leaf valid for the MX name)'],
] as const) {
  test(`correct TLSA (${what}): delivered over TLS`, { timeout: 20_000 }, async () => {
    const before = tlsMx.messages.length;
    const { outcome, events } = await deliverTo(`a@${domain}`);
    assert.equal(outcome.kind, 'delivered', JSON.stringify(outcome));
    assert.equal(tlsMx.messages.length, before + 1);
    assert.equal(tlsMx.messages.at(-1)?.secure, true);
    assert.deepEqual(events.map((e) => [e.mechanism, e.result]), [['dane', 'success']]);
  });
}

test('wrong TLSA (a certificate of another key): deferred, the MX never sees MAIL FROM', { timeout: 20_000 }, async () => {
  const before = seen(IP.tls);
  const { outcome, events, error } = await deliverTo('a@wrong.dane.test');
  assert.equal(outcome.kind, 'deferred', JSON.stringify(outcome));
  assert.match(error, /4\.7\.5 DANE: no TLSA record of mx-wrong\.dane\.test matches the server certificate/);
  assert.equal(outcome.kind === 'deferred' && outcome.statusCode, '4.7.5');
  assert.equal(seen(IP.tls), before);
  assert.deepEqual(events.map((e) => e.result), ['tlsa-invalid']);
});

test('DANE-TA whose leaf is not valid for the MX name: deferred', { timeout: 20_000 }, async () => {
  const before = seen(IP.tls);
  const { outcome, error } = await deliverTo('a@taname.dane.test');
  assert.equal(outcome.kind, 'deferred', JSON.stringify(outcome));
  assert.match(error, /not valid for the MX name/);
  assert.equal(seen(IP.tls), before);
});

test('bogus TLSA RRset (signature fails): the host is unusable, deferred without connecting', { timeout: 20_000 }, async () => {
  const connections = tlsMx.connections.total;
  const { outcome, events, error } = await deliverTo('a@bogus.dane.test');
  assert.equal(outcome.kind, 'deferred', JSON.stringify(outcome));
  assert.match(error, /mx-bogus\.dane\.test \(DANE TLSA lookup failed\)/);
  assert.equal(outcome.kind === 'deferred' && outcome.statusCode, '4.7.5');
  assert.equal(tlsMx.connections.total, connections);
  assert.deepEqual(events.map((e) => e.result), ['dnssec-invalid']);
});

test('TLSA present but unusable, server without STARTTLS: deferred, never plaintext', { timeout: 20_000 }, async () => {
  const before = seen(IP.plain);
  const { outcome, events } = await deliverTo('a@unusable.dane.test');
  assert.equal(outcome.kind, 'deferred', JSON.stringify(outcome));
  assert.equal(seen(IP.plain), before, 'no MAIL FROM in plaintext');
  assert.ok(events.some((e) => e.mechanism === 'dane' && (e.result === 'starttls-not-supported' || e.result === 'dane-required')), JSON.stringify(events));
  assert.equal(outcome.kind === 'deferred' && outcome.statusCode, '4.7.4', 'STARTTLS required but not offered');
});

test('TLSA present but unusable, server with STARTTLS: delivered encrypted (RFC 7672 §2.2: encryption without authentication)', { timeout: 20_000 }, async () => {
  const before = tlsMx.messages.length;
  const { outcome } = await deliverTo('a@unusable-tls.dane.test');
  assert.equal(outcome.kind, 'delivered', JSON.stringify(outcome));
  assert.equal(tlsMx.messages.length, before + 1);
  assert.equal(tlsMx.messages.at(-1)?.secure, true);
});

test('DANE takes precedence over an MTA-STS policy that does not list the MX', { timeout: 20_000 }, async () => {
  const mtaSts = { enabled: true, httpsPort: webPort, ca: ca.caPem, caFile: 'ca.pem', fetchTimeoutMs: 3000 };
  // Without DANE the enforce policy (mx: only.elsewhere.test) refuses mx-ee…
  const withoutDane = await deliverTo('a@sts.dane.test', { mtaSts, dane: undefined });
  assert.equal(withoutDane.outcome.kind, 'deferred', JSON.stringify(withoutDane.outcome));
  // …with DANE, mx-ee's secure TLSA record decides.
  const r = await deliverTo('a@sts.dane.test', { mtaSts });
  assert.equal(r.outcome.kind, 'delivered', JSON.stringify(r.outcome));
  assert.deepEqual(r.events.map((e) => [e.mechanism, e.result]), [['dane', 'success']]);
});

test('an MX host whose addresses are insecure (CNAME into an unsigned zone): its secure TLSA records are not used', { timeout: 20_000 }, async () => {
  const r = new DaneResolver({ enabled: true, resolver: dns.resolver, timeoutMs: 3000 });
  assert.deepEqual([...((await r.secureMxNames('alias.dane.test')) ?? [])], ['mx-alias.dane.test'], 'the MX RRset itself is secure');
  assert.equal((await r.tlsa('mx-alias.dane.test', mxPort)).kind, 'none');
  assert.equal((await r.tlsa('mx-secure-alias.dane.test', mxPort)).kind, 'dane', 'a CNAME inside the signed zone keeps the addresses secure');
  // The TLSA record matches no certificate: were DANE applied, the mail would be deferred.
  const before = tlsMx.messages.length;
  const { outcome, events } = await deliverTo('a@alias.dane.test');
  assert.equal(outcome.kind, 'delivered', JSON.stringify(outcome));
  assert.equal(tlsMx.messages.length, before + 1);
  assert.deepEqual(events, [], 'no DANE event: opportunistic delivery');
  const secure = await deliverTo('a@secure-alias.dane.test');
  assert.equal(secure.outcome.kind, 'deferred', JSON.stringify(secure.outcome));
  assert.deepEqual(secure.events.map((e) => [e.mechanism, e.result]), [['dane', 'tlsa-invalid']]);
});

test('checkDane: EE ignores names, TA checks the chain signature', () => {
  const ee = [{ usage: 3, selector: 1, matchingType: 1, data: Buffer.from(sha('sha256', spki(leafDer)), 'hex') }];
  assert.equal(checkDane(ee, [leafDer], 'any.name.test'), undefined);
  const ta = [{ usage: 2, selector: 0, matchingType: 0, data: caDer }];
  assert.equal(checkDane(ta, [leafDer, caDer], 'mx-ta.dane.test'), undefined);
  // The anchor presented but the leaf not signed by it (an attacker's leaf next to the real CA).
  assert.match(checkDane(ta, [otherLeafDer, caDer], 'mx-wrong.dane.test') ?? '', /no TLSA record/);
});

test('config: the trusted resolver must be on loopback; errors name file and key', () => {
  const at = new At('/etc/smarthost.yaml', 'relay');
  assert.throws(
    () => parseRelayConfig({ dane: { resolver: '192.0.2.53:53' } }, at, '/etc'),
    (err: unknown) => err instanceof ConfigError && /\/etc\/smarthost\.yaml: relay\.dane\.resolver: must be a DNSSEC-validating resolver on loopback/.test(err.message),
  );
  assert.deepEqual(parseRelayConfig({ dane: {} }, at, '/etc').dane, { enabled: true, resolver: '127.0.0.1:53', timeoutMs: 5000 });
  assert.throws(() => parseRelayConfig({ mtaSts: { ca: '/nonexistent/ca.pem' } }, at, '/etc'), /relay\.mtaSts\.ca: cannot read CA bundle/);
});
