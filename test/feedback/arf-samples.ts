/**
 * ARF reports (RFC 5965) for tests, built after the RFC's examples (§B.1
 * minimal, §B.2 extended) in the shapes two big feedback loops send:
 *   yahooStyle      multipart/report; report-type=feedback-report with a
 *                   text part, the message/feedback-report fields
 *                   (Feedback-Type, User-Agent, Version, Original-Mail-From,
 *                   Original-Rcpt-To, Arrival-Date, Source-IP,
 *                   Reported-Domain) and the original as message/rfc822;
 *   microsoftStyle  the same report with only the original's header
 *                   section (text/rfc822-headers), recipient redacted;
 * signed with DKIM keys the test publishes on its DNS server.
 */
import { generateKeyPairSync } from 'node:crypto';
import { dkimSign } from 'mailauth';
import type { TestDns } from '../helpers/dns-server';

export interface SigningKey {
  readonly domain: string;
  readonly selector: string;
  readonly privateKey: string;
}

/** A 2048-bit RSA key for `domain`, published as <selector>._domainkey.<domain> TXT. */
export function publishKey(dns: TestDns, domain: string, selector = 'fbl'): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const p = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  dns.set(`${selector}._domainkey.${domain}`, 'TXT', [`v=DKIM1; k=rsa; p=${p}`]);
  return { domain, selector, privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}

export interface ArfOptions {
  readonly from: string;
  readonly to: string;
  /** The original message (as the recipient's provider received it). */
  readonly original: string;
  readonly feedbackType?: string;
  readonly userAgent?: string;
  /** Attach the header section only (text/rfc822-headers). */
  readonly headersOnly?: boolean;
  readonly sourceIp?: string;
}

const CRLF = (s: string) => s.replace(/\r?\n/g, '\r\n');

export function arfReport(o: ArfOptions): string {
  const headerEnd = o.original.search(/\r?\n\r?\n/);
  const original = o.headersOnly ? CRLF(o.original.slice(0, headerEnd)) + '\r\n' : CRLF(o.original);
  const mailFrom = /^From:.*?<([^>]+)>/im.exec(o.original)?.[1] ?? 'unknown@example.invalid';
  return CRLF(`From: <${o.from}>
To: <${o.to}>
Subject: FW: complaint about mail from your network
Date: Thu, 8 Mar 2005 17:40:36 EDT
Message-ID: <${Math.random().toString(36).slice(2)}@${o.from.split('@')[1]}>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
${o.sourceIp ?? '192.0.2.1'} on Thu, 8 Mar 2005 14:00:00 EDT.
For more information about this format please see
http://www.mipassoc.org/arf/.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: ${o.feedbackType ?? 'abuse'}
User-Agent: ${o.userAgent ?? 'SomeGenerator/1.0'}
Version: 1
Original-Mail-From: <${mailFrom}>
Original-Rcpt-To: <user@recipient.test>
Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT
Reporting-MTA: dns; mail.provider.test
Source-IP: ${o.sourceIp ?? '192.0.2.1'}
Reported-Domain: isp.test

--part1_13d.2e68ed54_boundary
Content-Type: ${o.headersOnly ? 'text/rfc822-headers' : 'message/rfc822'}
Content-Disposition: inline

${original}
--part1_13d.2e68ed54_boundary--
`);
}

/** The report with a DKIM-Signature of `key` (relaxed/relaxed) on top. */
export async function signed(report: string, key: SigningKey): Promise<string> {
  // mailauth 4.13 signs with `signatureData` (its index.d.ts still describes the older flat options).
  // signTime fixes t= once: without it mailauth reads the clock for the header it hashes and again
  // for the header it writes after the RSA signature, each rounded to the second, and when the two
  // straddle a half second the t= written is not the one signed (about 1 report in 2,000 on an idle
  // machine, 1 in 400 on a loaded one: "d=yahoo.test fail", then "unauthenticated").
  const opts = { canonicalization: 'relaxed/relaxed', signTime: new Date(), signatureData: [{ signingDomain: key.domain, selector: key.selector, privateKey: key.privateKey, algorithm: 'rsa-sha256' }] };
  const r = await dkimSign(report, opts as unknown as Parameters<typeof dkimSign>[1]);
  if (r.errors.length > 0 || !r.signatures.startsWith('DKIM-Signature:')) throw new Error(`dkimSign: ${JSON.stringify(r.errors)}`);
  return r.signatures + report;
}

/** Ready for DATA: dot-stuffed, terminated. */
export function forData(msg: string): string {
  const body = CRLF(msg).replace(/\r\n\./g, '\r\n..');
  return `${body.endsWith('\r\n') ? body : `${body}\r\n`}.\r\n`;
}
