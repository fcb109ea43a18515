/**
 * Every SMTP reply the gateway writes itself, in one table: basic code,
 * RFC 3463 enhanced status and text kept apart, so nothing lacks a status
 * and the text can change without touching code.
 */

export interface Reply {
  readonly code: number;
  readonly enhanced: string;
  readonly text: string;
}

export const REPLIES = {
  // 2xx
  accepted: { code: 250, enhanced: '2.0.0', text: 'Ok: queued as' },
  accepted_hold: { code: 250, enhanced: '2.0.0', text: 'Ok: queued as' },
  sender_ok: { code: 250, enhanced: '2.1.0', text: 'Sender ok' },
  recipient_ok: { code: 250, enhanced: '2.1.5', text: 'Recipient ok' },
  // The protocol's own replies (src/smtp/connection.ts).
  ok: { code: 250, enhanced: '2.0.0', text: 'Ok' },
  reset_ok: { code: 250, enhanced: '2.0.0', text: 'Ok: transaction reset' },
  help: { code: 214, enhanced: '2.0.0', text: 'See RFC 5321' },
  closing: { code: 221, enhanced: '2.0.0', text: 'Bye' },
  auth_ok: { code: 235, enhanced: '2.7.0', text: 'Authentication successful' },
  vrfy_unverified: { code: 252, enhanced: '2.5.0', text: 'Cannot VRFY user, but will accept message and attempt delivery' },
  tls_go_ahead: { code: 220, enhanced: '2.0.0', text: 'Ready to start TLS' },

  // 4xx: try again later
  service_unavailable: { code: 421, enhanced: '4.3.2', text: 'Service not available, closing channel' },
  too_many_connections: { code: 421, enhanced: '4.7.0', text: 'Too many connections, try again later' },
  too_many_connections_ip: { code: 421, enhanced: '4.7.0', text: 'Too many connections from your address, try again later' },
  command_timeout: { code: 421, enhanced: '4.4.2', text: 'Timeout waiting for a complete command, closing connection' },
  data_timeout: { code: 421, enhanced: '4.4.2', text: 'Timeout receiving the message, closing connection' },
  local_error: { code: 451, enhanced: '4.3.0', text: 'Local error in processing, try again later' },
  state_unavailable: { code: 451, enhanced: '4.3.0', text: 'Policy state unavailable, try again later' },
  rate_limited: { code: 451, enhanced: '4.7.1', text: 'Sending rate limit exceeded, try again later' },
  policy_tempfail: { code: 451, enhanced: '4.7.1', text: 'Temporarily refused by policy, try again later' },
  recipient_unverified: { code: 451, enhanced: '4.4.3', text: 'Recipient cannot be verified now, try again later' },
  dnsbl_tempfail: { code: 451, enhanced: '4.7.1', text: 'Blocklist lookup failed, try again later' },
  content_tempfail: { code: 451, enhanced: '4.7.1', text: 'Message content deferred by the spam filter, try again later' },
  content_scan_unavailable: { code: 451, enhanced: '4.7.1', text: 'Content scanner unavailable, try again later' },
  storage_full: { code: 452, enhanced: '4.3.1', text: 'Insufficient system storage, try again later' },
  too_many_recipients: { code: 452, enhanced: '4.5.3', text: 'Too many recipients' },
  auth_temp_failure: { code: 454, enhanced: '4.7.0', text: 'Temporary authentication failure' },
  auth_locked_out: { code: 454, enhanced: '4.7.0', text: 'Too many failed logins, try again later' },

  // 5xx: permanent
  syntax_error: { code: 501, enhanced: '5.5.4', text: 'Syntax error in parameters' },
  bad_sender_syntax: { code: 501, enhanced: '5.1.7', text: 'Bad sender address syntax' },
  bad_recipient_syntax: { code: 501, enhanced: '5.1.3', text: 'Bad recipient address syntax' },
  routed_recipient: { code: 553, enhanced: '5.1.3', text: 'Routed address forms (source route, %, !, quoted @) are not accepted' },
  auth_required: { code: 530, enhanced: '5.7.0', text: 'Authentication required' },
  auth_failed: { code: 535, enhanced: '5.7.8', text: 'Authentication credentials invalid' },
  starttls_required: { code: 538, enhanced: '5.7.11', text: 'Encryption required for requested authentication mechanism' },
  relay_denied: { code: 554, enhanced: '5.7.1', text: 'Relay access denied' },
  recipient_relay_denied: { code: 550, enhanced: '5.7.1', text: 'Relay access denied' },
  // RFC 6531 §3.5: a non-ASCII address in a transaction that did not declare SMTPUTF8 (Postfix's wording).
  utf8_undeclared: { code: 553, enhanced: '5.6.7', text: 'Must declare SMTPUTF8 to send a non-ASCII address' },
  // RFC 3463 X.1.2, bad destination system: the status the relay's DSN gave for the same recipient (src/relay/mx.ts).
  literal_recipient: { code: 550, enhanced: '5.1.2', text: 'Address literal recipients are not accepted, use a domain name' },
  unknown_recipient: { code: 550, enhanced: '5.1.1', text: 'No such user here' },
  policy_reject: { code: 550, enhanced: '5.7.1', text: 'Refused by policy' },
  // The dnsbl rule always continues it with "[ip] listed at <zone> (<meaning>)" (Postfix: "blocked using <zone>").
  dnsbl_listed: { code: 554, enhanced: '5.7.1', text: 'Service unavailable; client host' },
  content_rejected: { code: 554, enhanced: '5.7.1', text: 'Message content rejected as spam' },
  account_suspended: { code: 550, enhanced: '5.7.1', text: 'Account suspended, contact support' },
  unsigned_refused: { code: 550, enhanced: '5.7.1', text: 'No signing key for sender domain' },
  too_big: { code: 552, enhanced: '5.3.4', text: 'Message size exceeds fixed limit' },
  sender_not_owned: { code: 553, enhanced: '5.7.1', text: 'Sender address not owned by authenticated user' },
  header_from_not_owned: { code: 550, enhanced: '5.7.1', text: 'Header From not owned by authenticated user' },
  sender_not_permitted: { code: 553, enhanced: '5.7.1', text: 'Sender domain not permitted from this network' },
  header_from_not_permitted: { code: 550, enhanced: '5.7.1', text: 'Header From domain not permitted from this network' },
  account_network_denied: { code: 550, enhanced: '5.7.1', text: 'Account may not be used from this network' },
  bare_newline: { code: 554, enhanced: '5.6.0', text: 'Message contains bare CR or LF, use CRLF line endings' },
  loop_detected: { code: 554, enhanced: '5.4.6', text: 'Mail loop detected' },
  transaction_failed: { code: 554, enhanced: '5.6.0', text: 'Transaction failed' },

  // Protocol errors (src/smtp/connection.ts): RFC 5321 §4.2.4, RFC 3463 5.5.x.
  unknown_command: { code: 500, enhanced: '5.5.2', text: 'Command not recognized' },
  not_offered: { code: 502, enhanced: '5.5.1', text: 'Command not implemented on this port' },
  line_too_long: { code: 500, enhanced: '5.5.2', text: 'Command line too long' },
  command_syntax: { code: 501, enhanced: '5.5.2', text: 'Syntax error' },
  helo_syntax: { code: 501, enhanced: '5.5.2', text: 'Syntax: EHLO hostname' },
  bad_sequence: { code: 503, enhanced: '5.5.1', text: 'Bad sequence of commands' },
  helo_first: { code: 503, enhanced: '5.5.1', text: 'Send HELO/EHLO first' },
  mail_first: { code: 503, enhanced: '5.5.1', text: 'Need MAIL command' },
  rcpt_first: { code: 503, enhanced: '5.5.1', text: 'Need RCPT command' },
  nested_mail: { code: 503, enhanced: '5.5.1', text: 'Nested MAIL command' },
  tls_active: { code: 503, enhanced: '5.5.1', text: 'TLS already active' },
  already_authenticated: { code: 503, enhanced: '5.5.1', text: 'Already authenticated' },
  auth_mechanism: { code: 504, enhanced: '5.5.4', text: 'Unrecognized authentication type' },
  auth_cancelled: { code: 501, enhanced: '5.7.0', text: 'Authentication cancelled' },
  auth_syntax: { code: 501, enhanced: '5.5.2', text: 'Cannot decode the authentication response' },
  unknown_parameter: { code: 555, enhanced: '5.5.4', text: 'Unsupported parameter' },
  too_many_errors: { code: 421, enhanced: '4.7.0', text: 'Too many errors, closing connection' },
  early_talker: { code: 421, enhanced: '4.7.0', text: 'Talking before the greeting, closing connection' },
  http_refused: { code: 421, enhanced: '4.7.0', text: 'This is an SMTP server, closing connection' },
  // Bytes pipelined behind a refused DATA (RFC 2920 §3.1): the message, never run as commands.
  data_unsynchronized: { code: 421, enhanced: '4.5.0', text: 'Data sent before the reply to DATA, closing connection' },
  shutting_down: { code: 421, enhanced: '4.3.2', text: 'Server shutting down, try again later' },
} as const satisfies Record<string, Reply>;

export type ReplyName = keyof typeof REPLIES;

export function isReplyName(name: string): name is ReplyName {
  return Object.prototype.hasOwnProperty.call(REPLIES, name);
}

/** "554 5.7.1 Relay access denied (detail)" as sent on the wire. */
export function formatReply(name: ReplyName, detail?: string): string {
  const r: Reply = REPLIES[name];
  return `${r.code} ${r.enhanced} ${r.text}${detail ? ` ${detail}` : ''}`;
}

/** "5.7.1 Relay access denied (detail)": the reply after its basic code. */
export function replyLine(name: ReplyName, detail?: string): string {
  const r: Reply = REPLIES[name];
  return `${r.enhanced} ${r.text}${detail ? ` ${detail}` : ''}`;
}

/**
 * A refusal a session hook returns: the connection (src/smtp/connection.ts)
 * writes its basic code and then its text, which starts with the enhanced code.
 */
export class SmtpReplyError extends Error {
  readonly responseCode: number;
  readonly replyName: ReplyName;
  constructor(name: ReplyName, detail?: string) {
    super(replyLine(name, detail));
    this.responseCode = REPLIES[name].code;
    this.replyName = name;
  }
}
