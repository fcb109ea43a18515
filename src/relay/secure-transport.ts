/**
 * Secure transport to MX hosts: what a recipient domain's published policy
 * (MTA-STS, RFC 8461) demands of one delivery attempt (DANE's rules are in
 * dane.ts; DANE decides for a host with secure TLSA records), and how the attempt
 * went, in TLS-RPT's vocabulary (RFC 8460 §4.3 result types), so logs,
 * metrics and reports share one closed set of words.
 *
 * Rules (RFC 8461 §5):
 *  - enforce: only MX hosts matching the policy's mx patterns are tried, each
 *    at tls: verify (certificate chains to a trusted CA and is valid for the
 *    MX name); no match, no STARTTLS or a bad certificate defers — never
 *    plaintext, never an unverified certificate;
 *  - testing: delivery as without a policy (relay.mxTls), but a non-matching
 *    MX, a missing STARTTLS or a certificate that does not verify is
 *    reported;
 *  - none (or no policy): nothing changes.
 */
import type { SmtpErrorLike } from './classify';
import { mxMatches, type StsLookup } from './mta-sts';

/** TLS-RPT result types we produce, plus success. A closed set: metric labels use it. */
export const TLS_RESULTS = [
  'success',
  'starttls-not-supported',
  'certificate-host-mismatch',
  'certificate-expired',
  'certificate-not-trusted',
  'validation-failure',
  'tlsa-invalid',
  'dnssec-invalid',
  'dane-required',
  'sts-policy-fetch-error',
  'sts-policy-invalid',
  'sts-webpki-invalid',
] as const;
export type TlsResult = (typeof TLS_RESULTS)[number];

export const TLS_MECHANISMS = ['mta-sts', 'dane'] as const;
export type TlsMechanism = (typeof TLS_MECHANISMS)[number];

export const TLS_MODES = ['enforce', 'testing'] as const;
export type TlsMode = (typeof TLS_MODES)[number];

/** One attempt's result under a policy (or a policy fetch failure). */
export interface TlsPolicyEvent {
  /** The policy domain (the recipient domain). */
  readonly domain: string;
  readonly mechanism: TlsMechanism;
  readonly mode: TlsMode;
  readonly result: TlsResult;
  /** The MX host concerned, when there is one. */
  readonly mx?: string;
}

/** The policy one target is tried under. */
export type TargetPolicy = Pick<TlsPolicyEvent, 'domain' | 'mechanism' | 'mode'>;

export interface TlsPolicyObserver {
  onTlsPolicy(e: TlsPolicyEvent): void;
}

/** The policy an attempt runs under: absent for no policy / mode none. */
export interface MxSecurity {
  readonly mechanism: TlsMechanism;
  readonly mode: TlsMode;
  readonly domain: string;
  /** Whether an MX host name is allowed by the policy. */
  allows(host: string): boolean;
  /** Pool key suffix: sessions opened under a policy are never shared with others. */
  readonly key: string;
}

export function stsSecurity(domain: string, found: StsLookup): MxSecurity | undefined {
  const p = found.policy;
  if (!p || p.mode === 'none') return undefined;
  return { mechanism: 'mta-sts', mode: p.mode, domain, allows: (host) => mxMatches(p.mx, host), key: `sts-${p.mode}` };
}

/** The result type of a failed session set-up (or undefined when it was not about TLS). */
export function tlsResultOfError(err: SmtpErrorLike): TlsResult | undefined {
  const code = err.originalCode ?? err.code ?? '';
  if (code === 'ETLSA') return 'tlsa-invalid';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' || /HOSTNAME_MISMATCH/.test(code)) return 'certificate-host-mismatch';
  if (code === 'CERT_HAS_EXPIRED') return 'certificate-expired';
  if (/^(?:DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_|CERT_|INVALID_CA)/.test(code) || code === 'ECERT') {
    return 'certificate-not-trusted';
  }
  // STARTTLS mandatory, and the server refuses it (it is tried even when not offered).
  if (code === 'ETLS' || /STARTTLS/i.test(err.message ?? '')) return 'starttls-not-supported';
  return undefined;
}

/** The result of an observed (testing-mode) session from its state. */
export function tlsResultOfSession(s: { secure: boolean; verified?: boolean; target: { dane?: readonly unknown[] } }): TlsResult {
  if (!s.secure) return s.target.dane ? 'dane-required' : 'starttls-not-supported';
  // DANE with only unusable TLSA records: encryption is all that is asked.
  if (s.target.dane?.length === 0) return 'success';
  return s.verified ? 'success' : 'certificate-not-trusted';
}
