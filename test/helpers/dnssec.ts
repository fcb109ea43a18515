/**
 * A real DNSSEC chain on loopback for tests: one zone signed with
 * ldns-keygen / ldns-signzone (ldnsutils), served by nsd (authoritative),
 * and a private unbound (validating resolver) holding the zone's KSK as its
 * trust anchor and a stub-zone pointing at nsd. unbound's answers for the
 * zone carry a real AD bit; data whose signature does not verify (see
 * `tamper`) gets SERVFAIL. An optional second, unsigned zone is served
 * beside it: outside the trust anchor, so its answers are insecure (no AD,
 * no SERVFAIL). Both daemons run in the foreground as children of
 * the test and are killed by close().
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as packet from 'dns-packet';
import { freePort } from './process';

export interface SignedDns {
  /** "127.0.0.1:PORT" of the validating resolver (unbound). */
  readonly resolver: string;
  /** "127.0.0.1:PORT" of the authoritative server (nsd): same data, never an AD bit. */
  readonly authoritative: string;
  close(): Promise<void>;
}

export interface SignedZoneOptions {
  /** Zone origin without trailing dot, e.g. "dane.test". */
  origin: string;
  /** Zone-file lines relative to the origin ("@ IN MX 10 mx", "mx IN A 127.0.0.1"). */
  records: string[];
  /** Edit the signed zone text (e.g. change a record after signing, so its RRSIG no longer verifies). */
  tamper?: (signed: string) => string;
  /** A second zone, served unsigned (e.g. the target of a CNAME from the signed zone). */
  unsigned?: { origin: string; records: string[] };
}

function zoneText(origin: string, records: readonly string[]): string {
  return [`$ORIGIN ${origin}.`, '$TTL 300', `@ IN SOA ns.${origin}. root.${origin}. 1 3600 600 86400 300`, `@ IN NS ns.${origin}.`, 'ns IN A 127.0.0.1', ...records, ''].join('\n');
}

export async function startSignedDns(opts: SignedZoneOptions): Promise<SignedDns> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'smarthost-dnssec-'));
  const children: ChildProcess[] = [];
  const close = async (): Promise<void> => {
    await Promise.all(
      children.map((c) => new Promise<void>((resolve) => (c.exitCode !== null || c.signalCode !== null ? resolve() : (c.once('exit', () => resolve()), c.kill('SIGTERM'))))),
    );
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const zoneFile = path.join(dir, `${opts.origin}.zone`);
    writeFileSync(zoneFile, zoneText(opts.origin, opts.records));
    const unsignedFile = opts.unsigned ? path.join(dir, `${opts.unsigned.origin}.zone`) : undefined;
    if (opts.unsigned && unsignedFile) writeFileSync(unsignedFile, zoneText(opts.unsigned.origin, opts.unsigned.records));
    const keygen = (...args: string[]): string => execFileSync('ldns-keygen', [...args, '-a', 'ECDSAP256SHA256', opts.origin], { cwd: dir }).toString().trim();
    const zsk = keygen();
    const ksk = keygen('-k');
    execFileSync('ldns-signzone', ['-n', zoneFile, zsk, ksk], { cwd: dir });
    const signed = `${zoneFile}.signed`;
    if (opts.tamper) writeFileSync(signed, opts.tamper(readFileSync(signed, 'utf8')));

    const nsdPort = await freePort();
    const nsdConf = path.join(dir, 'nsd.conf');
    writeFileSync(
      nsdConf,
      `server:\n  ip-address: 127.0.0.1\n  port: ${nsdPort}\n  username: ""\n  zonesdir: "${dir}"\n  database: ""\n  pidfile: "${dir}/nsd.pid"\n` +
        `  xfrdfile: "${dir}/xfrd.state"\n  zonelistfile: "${dir}/zone.list"\n  logfile: "${dir}/nsd.log"\n  server-count: 1\n` +
        `remote-control:\n  control-enable: no\nzone:\n  name: ${opts.origin}\n  zonefile: ${signed}\n` +
        (opts.unsigned ? `zone:\n  name: ${opts.unsigned.origin}\n  zonefile: ${unsignedFile}\n` : ''),
    );
    children.push(spawn('nsd', ['-d', '-c', nsdConf], { stdio: 'ignore' }));

    const port = await freePort();
    const unboundConf = path.join(dir, 'unbound.conf');
    writeFileSync(
      unboundConf,
      `server:\n  interface: 127.0.0.1\n  port: ${port}\n  do-daemonize: no\n  username: ""\n  chroot: ""\n  directory: "${dir}"\n  pidfile: ""\n` +
        `  use-syslog: no\n  logfile: "${dir}/unbound.log"\n  do-ip6: no\n  do-not-query-localhost: no\n  access-control: 127.0.0.0/8 allow\n` +
        `  module-config: "validator iterator"\n  trust-anchor-file: "${path.join(dir, `${ksk}.key`)}"\n` +
        // unbound answers .test itself by default (RFC 6761); let the stub zone below through.
        `  local-zone: "test." nodefault\n  num-threads: 1\n  so-reuseport: no\n` +
        `remote-control:\n  control-enable: no\nstub-zone:\n  name: "${opts.origin}"\n  stub-addr: 127.0.0.1@${nsdPort}\n` +
        (opts.unsigned ? `stub-zone:\n  name: "${opts.unsigned.origin}"\n  stub-addr: 127.0.0.1@${nsdPort}\n` : ''),
    );
    children.push(spawn('unbound', ['-d', '-c', unboundConf], { stdio: 'ignore' }));

    await waitForAd(port, opts.origin);
    return { resolver: `127.0.0.1:${port}`, authoritative: `127.0.0.1:${nsdPort}`, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Poll the resolver until the zone's SOA comes back with AD (bounded: 100 tries). */
async function waitForAd(port: number, origin: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await soaHasAd(port, origin)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`unbound on 127.0.0.1:${port} never answered ${origin} SOA with the AD bit`);
}

function soaHasAd(port: number, origin: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => finish(false), 500);
    const finish = (v: boolean): void => {
      clearTimeout(timer);
      s.close();
      resolve(v);
    };
    s.on('error', () => finish(false));
    s.on('message', (m) => finish((packet.decode(m) as { flag_ad?: boolean }).flag_ad === true));
    const q = packet.encode({
      id: 1,
      type: 'query',
      flags: packet.RECURSION_DESIRED | packet.AUTHENTIC_DATA,
      questions: [{ type: 'SOA', name: origin, class: 'IN' }],
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096, flags: packet.DNSSEC_OK } as packet.Answer],
    });
    s.send(q, port, '127.0.0.1');
  });
}
