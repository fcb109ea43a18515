/**
 * Delivery-outcome classification, in one place: turns what happened to a
 * recipient — an SMTP reply, an outbound client error (smtp-client/; code,
 * responseCode, response, command) or a DNS failure — into a
 * RecipientOutcome (delivered | deferred | bounced).
 *
 * Rules:
 *  - 2xx → delivered.
 *  - 4xx → deferred. 5xx → bounced, with the enhanced status from the reply
 *    when its class agrees with the basic code, else X.0.0 from the basic
 *    code. Exception: 503 (bad sequence of commands) is deferred — it says
 *    the session was in the wrong state, not that the message is refused
 *    (nodemailer's `permanent` flag made the same call).
 *  - A reply counts as a verdict on the message only in the transaction
 *    (MAIL FROM, RCPT TO, DATA). Anything during session set-up (connect,
 *    greeting, EHLO, STARTTLS, AUTH) is deferred even when it is 5xx: a 554
 *    greeting or a 535 AUTH failure says nothing about the recipient
 *    (Postfix: smtp_skip_5xx_greeting, smtp_sasl_auth_soft_bounce).
 *  - Refused / timed-out / reset connections and TLS handshake failures are
 *    deferred, as is a certificate that fails `tls: verify` (4.7.5, never a
 *    bounce: the next attempt may meet a fixed certificate or a corrected
 *    config). Unknown errors are deferred: never lose mail.
 *  - A few locally-detected permanent problems bounce: message larger than
 *    the server's advertised SIZE (5.3.4), addresses the client refuses to
 *    put on the wire (5.1.3 / 5.1.7), SMTPUTF8 needed but not offered (5.6.7).
 *
 * Every deferral carries a class-4 enhanced status (Postfix's dsn= on its
 * status=deferred lines), decided here and never read back from the text:
 *  - a server's reply: its own code when it gives one of class 4, else
 *    4.0.0. A 5xx that is deferred (503, a 5xx greeting, a 535 to AUTH)
 *    keeps its subject and detail with class 4, as Postfix does with
 *    smtp_skip_5xx_greeting (the first digit of the reply's status becomes
 *    4): a delayed recipient's status is of class 4 (RFC 3464 §2.3.4), and
 *    a 5.x.y beside status=deferred would be counted as a refusal.
 *  - local failures, with Postfix's codes: the status named where the
 *    failure was detected (SmtpErrorLike.status: could not connect 4.4.1,
 *    STARTTLS required but not offered 4.7.4, TLS handshake 4.7.5), a
 *    certificate or DANE mismatch 4.7.5, credentials with no TLS to send
 *    them over 4.7.4, the spool or the agent itself 4.3.0, a reply that is
 *    not SMTP 4.5.0, and otherwise a connection lost or timed out during
 *    the session 4.4.2.
 */
import type { RecipientOutcome } from '../envelope';
import type { DnsFailure } from './mx';

/** The fields of an outbound client error we read (the shapes nodemailer's SMTPConnection used). */
export interface SmtpErrorLike {
  readonly code?: string;
  readonly originalCode?: string;
  readonly responseCode?: number;
  readonly response?: string;
  readonly command?: string;
  readonly message?: string;
  /** Which wait an ETIMEDOUT ended: CONNECT_, GREETING_, UPGRADE_, SOCKET_, DATA_ (the body, 4.4.2), DATA_DONE_TIMEOUT (the reply to its end). */
  readonly timeoutType?: string;
  /**
   * The RFC 3463 status of a local failure, named where it was detected when
   * its code alone does not tell (Postfix's dsb_simple at the same places):
   * 4.4.1 for a connection that never opened, 4.7.4 for STARTTLS required
   * but not offered, 4.7.5 for a TLS handshake that failed.
   */
  readonly status?: string;
}

/** Local error codes the delivery agent raises itself (not the wire client's). */
export const LOCAL_ERRORS = {
  /** Credentials configured but the session is not encrypted: refuse to send them. */
  noTlsForAuth: 'ENOTLSAUTH',
  /** The message needs SMTPUTF8 and the server does not offer it (RFC 6531 §3.2). */
  smtputf8: 'ESMTPUTF8',
  /** The agent is closing. */
  shutdown: 'ESHUTDOWN',
  /** The message could not be read from the spool. */
  source: 'ESOURCE',
  /** tls: verify and the server's certificate did not verify (untrusted, wrong name, expired…). */
  certificate: 'ECERT',
} as const;

const TRANSACTION_COMMANDS = new Set(['MAIL FROM', 'RCPT TO', 'DATA']);

/** Deferrals whose cause the local error code names on its own. */
const LOCAL_STATUS: Readonly<Record<string, string>> = {
  [LOCAL_ERRORS.certificate]: '4.7.5',
  // RFC 3463 X.7.4, security features not supported: no encrypted session to send credentials over.
  [LOCAL_ERRORS.noTlsForAuth]: '4.7.4',
  [LOCAL_ERRORS.shutdown]: '4.3.0',
  [LOCAL_ERRORS.source]: '4.3.0',
  // The message's bytes could not be read while they were sent (Postfix: "local data error", 4.3.0).
  ESTREAM: '4.3.0',
};

export type OutcomeEvent = 'delivery' | 'transient_failure' | 'bounce';

export function outcomeEvent(o: RecipientOutcome): OutcomeEvent {
  return o.kind === 'delivered' ? 'delivery' : o.kind === 'deferred' ? 'transient_failure' : 'bounce';
}

/** A reply on one line (multi-line replies joined), without trailing whitespace. */
export function replyText(reply: string): string {
  return reply.replace(/\s*[\r\n]+\s*/g, ' ').trim();
}

/**
 * Basic reply code of a reply string, or 0 when it does not start with one.
 * The code may be followed by a tab, as the client's reply reader accepts
 * (smtp-client/reply-reader.ts): the two must agree, or a "250<TAB>queued"
 * the client took as accepted would be classified as no reply at all.
 */
export function replyCode(reply: string): number {
  const m = /^([2-5]\d\d)(?:[ \t-]|$)/.exec(reply.trim());
  return m ? Number(m[1]) : 0;
}

/**
 * RFC 3463 enhanced status of a reply: the one the server wrote when its
 * class matches the basic code, otherwise derived from the basic code.
 */
export function enhancedStatus(reply: string | undefined, basicCode: number): string {
  const cls = String(basicCode).charAt(0);
  const m = /^\d{3}[ \t-]([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)/.exec((reply ?? '').trim());
  if (m && m[1] === cls) return `${m[1]}.${Number(m[2])}.${Number(m[3])}`;
  return `${cls}.0.0`;
}

/**
 * The status of a reply that defers: class 4 always. Its own code when of
 * class 4, 4.0.0 when it gives none; a deferred 5xx keeps subject and
 * detail (Postfix's smtp_skip_5xx_greeting). Not a 4xx or 5xx: 4.5.0.
 */
export function deferralStatus(reply: string | undefined, basicCode: number): string {
  if (basicCode < 400 || basicCode > 599) return '4.5.0';
  return `4${enhancedStatus(reply, basicCode).slice(1)}`;
}

/** The status of a failure that defers, other than a reply in the transaction. */
export function failureStatus(err: SmtpErrorLike): string {
  if (err.status) return err.status;
  const local = LOCAL_STATUS[err.code ?? ''];
  if (local) return local;
  const code = replyCode(err.response ?? '');
  // The server refused us (greeting, EHLO, STARTTLS, AUTH) or said 421.
  if (code >= 400) return deferralStatus(err.response, code);
  if (err.code === 'EPROTOCOL') return '4.5.0';
  if (err.timeoutType === 'CONNECT_TIMEOUT') return '4.4.1';
  // Lost or timed out during the session (Postfix smtp_stream_except); what is left is ours.
  return err.code === 'ECONNECTION' || err.code === 'ESOCKET' || err.code === 'ETIMEDOUT' ? '4.4.2' : '4.3.0';
}

/** Outcome of a server reply given to this recipient during the transaction. */
export function classifyReply(address: string, reply: string, remoteMta?: string): RecipientOutcome {
  const text = replyText(reply);
  const code = replyCode(text);
  if (code >= 200 && code < 300) return { address, kind: 'delivered', remoteMta: remoteMta ?? '', response: text };
  if (code >= 500 && code !== 503) {
    return { address, kind: 'bounced', error: text, statusCode: enhancedStatus(text, code), remoteMta };
  }
  return { address, kind: 'deferred', error: text || 'malformed reply', statusCode: deferralStatus(text, code), remoteMta };
}

/** Outcome of a failed SMTP session or transaction for this recipient. */
export function classifyError(address: string, err: SmtpErrorLike, remoteMta?: string): RecipientOutcome {
  const inTransaction = err.command !== undefined && TRANSACTION_COMMANDS.has(err.command);
  if (inTransaction && err.response && replyCode(err.response) > 0) return classifyReply(address, err.response, remoteMta);

  const message = describeError(err);
  if (err.code === 'EMESSAGE' && err.command === 'MAIL FROM' && !err.responseCode && /size/i.test(err.message ?? '')) {
    return { address, kind: 'bounced', error: message, statusCode: '5.3.4', remoteMta };
  }
  if (err.code === 'EENVELOPE' && err.command === 'API' && /^Invalid (sender|recipient)/.test(err.message ?? '')) {
    const statusCode = /^Invalid sender/.test(err.message ?? '') ? '5.1.7' : '5.1.3';
    return { address, kind: 'bounced', error: message, statusCode, remoteMta };
  }
  if (err.code === LOCAL_ERRORS.smtputf8) return { address, kind: 'bounced', error: message, statusCode: '5.6.7', remoteMta };
  return { address, kind: 'deferred', error: message, statusCode: failureStatus(err), remoteMta };
}

/** A recipient deferred by a fault of the gateway's own (a bug, a failure outside SMTP): 4.3.0. */
export function internalDeferral(address: string, error: string): RecipientOutcome {
  return { address, kind: 'deferred', error, statusCode: '4.3.0' };
}

/** Outcome of a failed DNS resolution of the recipient's domain. */
export function classifyDnsFailure(address: string, f: DnsFailure): RecipientOutcome {
  if (f.permanent) return { address, kind: 'bounced', error: f.message, statusCode: f.status };
  return { address, kind: 'deferred', error: f.message, statusCode: f.status };
}

/**
 * Whether a session failed in the STARTTLS handshake. The client reports
 * that as ETLS, as ESOCKET carrying OpenSSL's code, or as an
 * UPGRADE_TIMEOUT, depending on how the handshake broke.
 */
export function isTlsFailure(err: SmtpErrorLike): boolean {
  return (
    err.code === 'ETLS' ||
    err.timeoutType === 'UPGRADE_TIMEOUT' ||
    /^ERR_(SSL|TLS)_/.test(err.originalCode ?? '') ||
    /^ERR_(SSL|TLS)_/.test(err.code ?? '')
  );
}

/**
 * Whether a TLS error is a certificate verification failure (OpenSSL's
 * X509_V_ERR_* names as Node reports them, or Node's own host name check),
 * as opposed to a broken handshake.
 */
export function isCertificateFailure(err: SmtpErrorLike): boolean {
  const code = err.originalCode ?? err.code ?? '';
  return (
    code === LOCAL_ERRORS.certificate ||
    code === 'ERR_TLS_CERT_ALTNAME_INVALID' ||
    /^(?:DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_|CERT_|HOSTNAME_MISMATCH|IP_ADDRESS_MISMATCH|INVALID_CA|PATH_LENGTH_EXCEEDED|INVALID_PURPOSE|ERROR_IN_CERT_|CRL_|UNABLE_TO_GET_CRL)/.test(code)
  );
}

/** A short human-readable text for an error: the server's reply if there was one. */
export function describeError(err: SmtpErrorLike): string {
  if (err.response && replyCode(err.response) > 0) return replyText(err.response);
  // OpenSSL messages carry a library dump; keep the reason ("wrong version number").
  const ssl = /SSL routines:[^:]*:([^:]+):/.exec(err.message ?? '');
  const base = ssl ? `TLS handshake failed: ${ssl[1]}` : replyText(err.message ?? String(err.code ?? 'unknown error'));
  const code = err.originalCode ?? err.code;
  return code && !base.includes(code) ? `${base} (${code})` : base;
}
