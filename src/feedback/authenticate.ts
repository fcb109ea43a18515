/**
 * Is a complaint report really from the provider it claims? A report
 * counts only when
 *   1. its header From is inside a configured provider's reporting domains
 *      (feedback.yaml providers[].domains), and
 *   2. a DKIM signature on it verifies (mailauth, keys from DNS) with a
 *      signing domain d= inside the SAME provider's domains, and
 *   3. DMARC for the From domain does not fail (mailauth; "none" when the
 *      domain publishes no DMARC record).
 * SPF alone is never enough: reports are re-read from the spool, so the
 * connection's address proves little, and DKIM is what every feedback loop
 * signs with. An unsigned report, one signed by another domain (d= of an
 * unlisted domain, or of provider A for a From of provider B) or one whose
 * signature does not verify does not count. A DNS failure while checking
 * is temporary: the caller retries later (the report stays queued).
 *
 * Talks to: DNS (the configured resolvers) through mailauth. Trusts: nothing
 * in the report until this says so.
 */
import { Resolver } from 'node:dns/promises';
import { within, type FeedbackProvider } from './config';

export type AuthVerdict =
  | { readonly ok: true; readonly provider: FeedbackProvider; readonly dkimDomain: string; readonly dmarc: string }
  | { readonly ok: false; readonly reason: 'unknown_provider' | 'unauthenticated' | 'temporary'; readonly detail: string; readonly provider?: FeedbackProvider };

export interface ReportOrigin {
  /** The report's envelope sender (SPF); the client address and HELO come from our own Received: on top. */
  readonly mailFrom: string;
  readonly mta: string;
}

export type DnsLookup = (name: string, rrtype: string) => Promise<string[][] | string[]>;

/** A resolver on the configured servers (tests: the test DNS server), each query within `timeoutMs`. */
export function dnsLookup(servers: readonly string[], timeoutMs: number): DnsLookup {
  const r = new Resolver({ timeout: Math.max(1, Math.floor(timeoutMs / 2)), tries: 2 });
  if (servers.length > 0) r.setServers([...servers]);
  return (name, rrtype) => r.resolve(name, rrtype as 'TXT') as Promise<string[][] | string[]>;
}

const TEMP = new Set(['temperror', 'temperr']);

export async function authenticateReport(message: Buffer, from: string | undefined, providers: readonly FeedbackProvider[], origin: ReportOrigin, lookup: DnsLookup): Promise<AuthVerdict> {
  const fromDomain = from?.split('@')[1]?.toLowerCase() ?? '';
  const provider = providers.find((p) => fromDomain && within(fromDomain, p.domains));
  if (!provider) return { ok: false, reason: 'unknown_provider', detail: `From domain "${fromDomain || '(none)'}" is not a configured provider's` };
  // Loaded on the first report, not at start: mailauth and its HTTP/X.509 stack add ~40 MB
  // to every gateway process, and most gateways never receive a complaint report.
  const { authenticate } = await import('mailauth');
  const res = await authenticate(message, {
    // The topmost Received: is the one this gateway wrote at acceptance: client address and HELO.
    trustReceived: true,
    sender: origin.mailFrom,
    mta: origin.mta,
    resolver: lookup,
    disableArc: true,
    disableBimi: true,
  });
  const sigs = res.dkim.results ?? [];
  const passing = sigs.filter((s) => s.status.result === 'pass' && within(s.signingDomain, provider.domains));
  const dmarc = res.dmarc ? res.dmarc.status.result : 'none';
  if (passing.length === 0) {
    if (sigs.some((s) => TEMP.has(s.status.result) && within(s.signingDomain, provider.domains))) {
      return { ok: false, reason: 'temporary', provider, detail: 'DNS failure while verifying the provider signature' };
    }
    const seen = sigs.map((s) => `d=${s.signingDomain} ${s.status.result}`).join(', ') || 'no DKIM signature';
    return { ok: false, reason: 'unauthenticated', provider, detail: `no passing DKIM signature of ${provider.name} (${seen})` };
  }
  if (dmarc === 'fail') return { ok: false, reason: 'unauthenticated', provider, detail: 'DMARC fails for the From domain' };
  return { ok: true, provider, dkimDomain: passing[0]!.signingDomain, dmarc };
}
