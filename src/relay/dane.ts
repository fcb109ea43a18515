/**
 * DANE for SMTP (RFC 7672): TLSA records of MX hosts, trusted only when the
 * configured DNSSEC-validating resolver says they are (the AD bit) — the
 * Postfix model: the gateway does not validate DNSSEC itself, it trusts a
 * local validating resolver (unbound) over loopback.
 *
 * Talks to: `relay.dane.resolver` over UDP (dns-packet), queries with RD,
 * AD and EDNS DO set. Trusts: the AD bit of that resolver only; every record
 * is checked for shape.
 *
 * Rules:
 *  - the domain's MX RRset must be secure (AD) for its host names to be
 *    trusted; an insecure MX RRset means no DANE for the domain (§2.2.1);
 *  - an MX host's own address records (A, AAAA) must be secure too
 *    (§2.2.2): an insecure address answer (e.g. a CNAME into an unsigned
 *    zone) means no DANE for that host; an address lookup that fails at the
 *    validating resolver (SERVFAIL: bogus) makes the host unusable. CNAMEs
 *    are not followed for the TLSA base name: TLSA is looked up at the MX
 *    host name only;
 *  - for each MX host, `_<port>._tcp.<host>` TLSA: secure with usable
 *    records → DANE (STARTTLS mandatory, certificate must match a record);
 *    secure but none usable → mandatory TLS without authentication
 *    (RFC 7672 §2.2, Postfix's "encrypt"); insecure or NXDOMAIN/NODATA →
 *    no DANE for that host; a failed lookup (SERVFAIL, bogus, timeout) →
 *    the host is unusable: it is skipped, never tried in plaintext (§2.2);
 *  - usable records: DANE-TA(2) and DANE-EE(3), selector Cert(0) or
 *    SPKI(1), matching Full(0), SHA2-256(1), SHA2-512(2). PKIX-TA/EE (0/1)
 *    are unusable for SMTP (§3.1.3);
 *  - DANE-EE: the server's own certificate matches; names and dates are not
 *    checked (§3.1.1). DANE-TA: a certificate in the server's chain matches,
 *    the leaf chains to it by signature, and the leaf is valid for the MX
 *    host name (§3.2.2).
 */
import dgram from 'node:dgram';
import { createHash, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import * as packet from 'dns-packet';

export interface Tlsa {
  readonly usage: number;
  readonly selector: number;
  readonly matchingType: number;
  readonly data: Buffer;
}

export type TlsaLookup =
  /** Secure TLSA RRset; `usable` may be empty (→ mandatory TLS, no authentication). */
  | { readonly kind: 'dane'; readonly usable: readonly Tlsa[] }
  /** No (secure) TLSA records: DANE does not apply to this host. */
  | { readonly kind: 'none' }
  /** The lookup failed or was bogus: the host must not be used. */
  | { readonly kind: 'failed'; readonly reason: string };

export interface DaneConfig {
  enabled: boolean;
  /** "127.0.0.1:53": a DNSSEC-validating resolver on loopback whose AD bit is trusted. */
  resolver: string;
  timeoutMs: number;
}

interface Answer {
  readonly rcode: string;
  readonly ad: boolean;
  readonly answers: readonly packet.Answer[];
}

/** A usable record for SMTP (RFC 7672 §3.1): DANE-TA/EE, known selector and matching type. */
export function usableTlsa(t: Tlsa): boolean {
  return (t.usage === 2 || t.usage === 3) && (t.selector === 0 || t.selector === 1) && t.matchingType >= 0 && t.matchingType <= 2;
}

export class DaneResolver {
  private readonly host: string;
  private readonly port: number;

  constructor(private readonly cfg: DaneConfig) {
    const i = cfg.resolver.lastIndexOf(':');
    this.host = cfg.resolver.slice(0, i).replace(/^\[|\]$/g, '');
    this.port = Number(cfg.resolver.slice(i + 1));
  }

  /** The MX host names of a domain when its MX RRset is secure (undefined: insecure, or no answer). */
  async secureMxNames(domain: string): Promise<ReadonlySet<string> | undefined> {
    const r = await this.query(domain, 'MX').catch(() => undefined);
    if (!r || !r.ad || r.rcode !== 'NOERROR') return undefined;
    const names = r.answers.filter((a): a is packet.MxAnswer => a.type === 'MX').map((a) => normalise(a.data.exchange));
    return new Set(names);
  }

  /**
   * The DANE state of one MX host: its TLSA records, used only when the
   * host's address records are secure as well (RFC 7672 §2.2.2).
   */
  async tlsa(hostName: string, port: number): Promise<TlsaLookup> {
    const [addresses, found] = await Promise.all([this.addressSecurity(hostName), this.tlsaRecords(hostName, port)]);
    if (addresses.kind === 'secure') return found;
    if (addresses.kind === 'insecure') return { kind: 'none' };
    return addresses;
  }

  /**
   * Whether the host's A and AAAA answers are secure: every answer that has
   * addresses carries AD, and there is at least one such answer.
   */
  private async addressSecurity(hostName: string): Promise<{ kind: 'secure' } | { kind: 'insecure' } | { kind: 'failed'; reason: string }> {
    const name = normalise(hostName);
    let answers: Answer[];
    try {
      answers = await Promise.all([this.query(name, 'A'), this.query(name, 'AAAA')]);
    } catch (err) {
      return { kind: 'failed', reason: `address lookup for ${hostName} failed: ${(err as Error).message}` };
    }
    const bad = answers.find((a) => a.rcode !== 'NOERROR' && a.rcode !== 'NXDOMAIN');
    if (bad) return { kind: 'failed', reason: `address lookup for ${hostName}: ${bad.rcode}` };
    const withAddresses = answers.filter((a) => a.answers.some((r) => r.type === 'A' || r.type === 'AAAA'));
    return withAddresses.length > 0 && withAddresses.every((a) => a.ad) ? { kind: 'secure' } : { kind: 'insecure' };
  }

  private async tlsaRecords(hostName: string, port: number): Promise<TlsaLookup> {
    let r: Answer;
    try {
      r = await this.query(`_${port}._tcp.${normalise(hostName)}`, 'TLSA');
    } catch (err) {
      return { kind: 'failed', reason: `TLSA lookup for ${hostName} failed: ${(err as Error).message}` };
    }
    // A validating resolver answers SERVFAIL for bogus data: the host is unusable, not insecure.
    if (r.rcode !== 'NOERROR' && r.rcode !== 'NXDOMAIN') return { kind: 'failed', reason: `TLSA lookup for ${hostName}: ${r.rcode}` };
    const records = r.answers
      .filter((a): a is packet.TlsaAnswer => a.type === 'TLSA')
      .map((a) => ({ usage: a.data.usage, selector: a.data.selector, matchingType: a.data.matchingType, data: Buffer.from(a.data.certificate) }));
    if (!r.ad || records.length === 0) return { kind: 'none' };
    return { kind: 'dane', usable: records.filter(usableTlsa) };
  }

  private query(name: string, type: 'MX' | 'TLSA' | 'A' | 'AAAA'): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const socket = dgram.createSocket(isIP(this.host) === 6 ? 'udp6' : 'udp4');
      const id = Math.floor(Math.random() * 65536);
      const timer = setTimeout(() => done(new Error('timeout')), this.cfg.timeoutMs);
      const done = (err: Error | undefined, a?: Answer): void => {
        clearTimeout(timer);
        socket.close();
        if (err) reject(err);
        else resolve(a!);
      };
      socket.on('error', (err) => done(err));
      socket.on('message', (msg) => {
        // dns-packet decodes these header fields, its types do not declare them.
        let res: packet.Packet & { flag_tc?: boolean; flag_ad?: boolean; rcode?: string };
        try {
          res = packet.decode(msg);
        } catch {
          return;
        }
        if (res.id !== id || res.type !== 'response') return;
        // A truncated answer is not trusted (no TCP retry): a failed lookup.
        if (res.flag_tc) return done(new Error('truncated answer'));
        done(undefined, { rcode: res.rcode ?? 'NOERROR', ad: res.flag_ad === true, answers: res.answers ?? [] });
      });
      const q = packet.encode({
        id,
        type: 'query',
        flags: packet.RECURSION_DESIRED | packet.AUTHENTIC_DATA,
        questions: [{ type, name, class: 'IN' }],
        additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096, flags: packet.DNSSEC_OK } as packet.Answer],
      });
      socket.send(q, this.port, this.host);
    });
  }
}

/** The DER certificates a TLS peer presented, leaf first (from getPeerCertificate(true)). */
export interface PeerCert {
  raw: Buffer;
  issuerCertificate?: PeerCert;
}

export function peerChain(leaf: PeerCert | undefined): Buffer[] {
  const out: Buffer[] = [];
  for (let c = leaf; c?.raw && out.length < 10; c = c.issuerCertificate) {
    if (out.some((d) => d.equals(c!.raw))) break;
    out.push(c.raw);
  }
  return out;
}

function matches(t: Tlsa, der: Buffer): boolean {
  const subject = t.selector === 0 ? der : spki(der);
  const value = t.matchingType === 0 ? subject : createHash(t.matchingType === 1 ? 'sha256' : 'sha512').update(subject).digest();
  return value.equals(t.data);
}

function spki(der: Buffer): Buffer {
  return new X509Certificate(der).publicKey.export({ type: 'spki', format: 'der' });
}

/**
 * Whether a server's chain satisfies the usable TLSA records for an MX host
 * (undefined when it does, else why not).
 */
export function checkDane(records: readonly Tlsa[], chain: readonly Buffer[], mxHost: string): string | undefined {
  if (chain.length === 0) return 'no server certificate';
  const leaf = chain[0];
  if (records.some((t) => t.usage === 3 && matches(t, leaf))) return undefined;
  const ta = records.filter((t) => t.usage === 2);
  for (let i = 0; i < chain.length; i++) {
    if (!ta.some((t) => matches(t, chain[i]))) continue;
    if (!chainsTo(chain, i)) continue;
    const name = normalise(mxHost);
    const leafCert = new X509Certificate(leaf);
    if (leafCert.checkHost(name, { wildcards: true, singleLabelSubdomains: false }) === undefined) {
      return `certificate of ${name} matches a DANE-TA record but is not valid for the MX name`;
    }
    const now = Date.now();
    if (Date.parse(leafCert.validFrom) > now || Date.parse(leafCert.validTo) < now) return `certificate of ${name} is outside its validity period`;
    return undefined;
  }
  return `no TLSA record of ${normalise(mxHost)} matches the server certificate`;
}

/** chain[0] is signed by chain[1] … up to chain[anchor] (the anchor itself may be the leaf). */
function chainsTo(chain: readonly Buffer[], anchor: number): boolean {
  for (let i = 0; i < anchor; i++) {
    const child = new X509Certificate(chain[i]);
    const parent = new X509Certificate(chain[i + 1]);
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) return false;
  }
  return true;
}

function normalise(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, '');
}
