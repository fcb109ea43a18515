/**
 * One outbound SMTP session over our own client (./smtp-client/connection):
 * it opens a session to one address (connect, greeting, EHLO, STARTTLS,
 * AUTH), sends transactions, resets and closes. Results are values; nothing
 * here throws. The wire protocol lives in smtp-client/; this file decides
 * TLS levels, certificate checks, DANE, when to send credentials and what
 * each reply means for each recipient.
 *
 *  - TLS: 'opportunistic' → STARTTLS when offered, plain when the server
 *    refuses STARTTLS; 'required' → STARTTLS mandatory; 'none' → never.
 *    For these levels certificates are not verified (rejectUnauthorized:
 *    false): MX TLS is opportunistic, like Postfix's default `may` — MX hosts
 *    rarely present a certificate for the name we looked up, and refusing
 *    would only push the mail to plaintext. 'required' is Postfix's
 *    `encrypt` (encryption mandatory, identity not checked).
 *  - 'verify' (Postfix `verify`) → STARTTLS mandatory with
 *    rejectUnauthorized: true, SNI set to the host name, the target's CA
 *    bundle when configured (else Node's default roots), and
 *    tls.checkServerIdentity against the name we meant to reach
 *    (relayhost/route host, MX exchange; an IP literal host is checked
 *    against the certificate's IP SANs). A certificate that does not verify
 *    fails the session set-up with LOCAL_ERRORS.certificate — a deferral,
 *    never a plaintext retry.
 *  - DANE: the chain is checked right after STARTTLS, before any MAIL FROM.
 *  - AUTH credentials are only sent over an encrypted session, whatever the
 *    configured TLS level (opportunistic TLS can silently end up plaintext).
 *  - SMTPUTF8 is declared on MAIL FROM when an envelope address is
 *    non-ASCII and the server offers it; a message that needs it is refused
 *    here when the server does not (RFC 6531 §3.2) instead of being sent.
 *  - PIPELINING (RFC 2920) when offered: the RSET that makes a pooled session
 *    ready, MAIL, every RCPT and DATA go out in one write, and the replies
 *    are read per command (a refused recipient keeps its own reply). A RSET
 *    that gets no good reply means the reused connection was dead: nothing
 *    of the message was sent, so the transaction is tried once more on a
 *    fresh connection to the same target. Without PIPELINING, one command at
 *    a time, RSET probing the session first as before.
 */
import type { Readable } from 'node:stream';
import { isIP } from 'node:net';
import tls from 'node:tls';
import type { OutboundTls } from './config';
import { isCertificateFailure, LOCAL_ERRORS } from './classify';
import { checkDane, peerChain, type PeerCert, type Tlsa } from './dane';
import type { TargetPolicy } from './secure-transport';
import { smtpError, SmtpConnection, type Reply, type SmtpError } from './smtp-client/connection';

export type { SmtpError } from './smtp-client/connection';

/** Where to connect: one address of one host. */
export interface Target {
  /** Host name (MX exchange, relayhost name) for logs, SNI and Remote-MTA. */
  readonly host: string;
  readonly ip: string;
  readonly port: number;
  readonly tls: OutboundTls;
  /** tls: verify — CA certificates (PEM) to trust instead of Node's default roots. */
  readonly ca?: string;
  /**
   * Below verify (MTA-STS testing mode): check the certificate against `ca`
   * and the host name without refusing it, and say so in Session.verified.
   */
  readonly observe?: boolean;
  /**
   * DANE (with tls: required): the MX host's usable TLSA records, checked
   * against the server's chain right after STARTTLS, before any MAIL FROM.
   * Empty: TLSA records exist but none is usable — encryption only.
   */
  readonly dane?: readonly Tlsa[];
  /** The recipient domain's policy this target is tried under (reporting). */
  readonly policy?: TargetPolicy;
  readonly auth?: { readonly user: string; readonly pass: string };
}

export interface SessionSettings {
  /** EHLO name. */
  readonly name: string;
  readonly localAddress?: string;
  readonly connectTimeoutMs: number;
  readonly greetingTimeoutMs: number;
  readonly socketTimeoutMs: number;
  /** The message body's deadline (relay.dataTimeout, relay.minDataRate; smtp-client/data-deadline.ts). */
  readonly dataTimeoutMs: number;
  readonly minDataRate: number;
  /** The wait for the reply to the message's end (relay.dataDoneTimeout). */
  readonly dataDoneTimeoutMs: number;
}

export interface Session {
  /** The connection; replaced when a dead pooled connection is reopened for a transaction. */
  conn: SmtpConnection;
  readonly target: Target;
  readonly settings: SessionSettings;
  /** STARTTLS succeeded. */
  secure: boolean;
  /** The certificate verified for the host name (known with tls: verify, or when observed). */
  verified?: boolean;
  /** Transactions attempted on this session. */
  messages: number;
  /** Set when the connection ends or fails: never reuse. */
  broken: boolean;
  /** A RSET is owed before the next transaction (sent pipelined with it). */
  resetPending: boolean;
}

export type OpenResult = { ok: true; session: Session } | { ok: false; err: SmtpError };

export interface SendEnvelope {
  readonly from: string;
  readonly to: readonly string[];
  readonly size: number;
  readonly smtpUtf8: boolean;
}

/** Per-recipient result of a transaction: the reply (or error) each recipient got. */
export interface SendResult {
  /** recipient → final reply text for accepted ones. */
  readonly accepted: Map<string, string>;
  /** recipient → error for refused ones (RCPT reply, DATA reply, or session error). */
  readonly failed: Map<string, SmtpError>;
  /** The session can carry another transaction (after RSET). */
  readonly reusable: boolean;
}

export function localError(code: string, message: string): SmtpError {
  return smtpError(message, code);
}

export async function openSession(target: Target, settings: SessionSettings): Promise<OpenResult> {
  const opened = await connect(target, settings);
  if (!opened.ok) return opened;
  const { conn } = opened;
  const session: Session = {
    conn,
    target,
    settings,
    secure: conn.secure,
    verified: certificateVerified(target, conn),
    messages: 0,
    broken: false,
    resetPending: false,
  };
  watch(session);
  return { ok: true, session };
}

/** A connection set up at the target's TLS level, DANE-checked and logged in, or the error. */
async function connect(target: Target, settings: SessionSettings): Promise<{ ok: true; conn: SmtpConnection } | { ok: false; err: SmtpError }> {
  const conn = new SmtpConnection({
    ip: target.ip,
    port: target.port,
    localAddress: settings.localAddress,
    name: settings.name,
    connectTimeoutMs: settings.connectTimeoutMs,
    greetingTimeoutMs: settings.greetingTimeoutMs,
    socketTimeoutMs: settings.socketTimeoutMs,
    dataTimeoutMs: settings.dataTimeoutMs,
    minDataRate: settings.minDataRate,
    dataDoneTimeoutMs: settings.dataDoneTimeoutMs,
    startTls: target.tls === 'none' ? 'none' : target.tls === 'opportunistic' ? 'opportunistic' : 'required',
    tlsOptions: tlsOptions(target),
  });
  const fail = (err: SmtpError): { ok: false; err: SmtpError } => {
    conn.close();
    return { ok: false, err };
  };
  const err = await conn.open();
  if (err) return fail(certificateError(target, err));
  const daneFailure = daneMismatch(target, conn);
  if (daneFailure) return fail(daneFailure);
  if (target.auth) {
    if (!conn.secure) return fail(localError(LOCAL_ERRORS.noTlsForAuth, 'Refusing to send AUTH credentials over an unencrypted session'));
    const authErr = await conn.login(target.auth.user, target.auth.pass);
    if (authErr) return fail(authErr);
  }
  return { ok: true, conn };
}

/** A session whose connection ends (server closed, error) is never reused. */
function watch(s: Session): void {
  const conn = s.conn;
  conn.once('end', () => {
    if (s.conn === conn) s.broken = true;
  });
}

/** The name a certificate must be valid for: the host we meant to reach. */
function expectedName(target: Target): string {
  return target.host.replace(/\.$/, '');
}

/** tls.connect options for STARTTLS at the target's level. */
function tlsOptions(target: Target): tls.ConnectionOptions {
  const name = expectedName(target);
  // SNI carries host names only; an IP literal host has none.
  const sni = isIP(name) ? {} : { servername: name };
  if (target.tls !== 'verify' && !target.observe) return { rejectUnauthorized: false, ...sni };
  return {
    ...sni,
    rejectUnauthorized: target.tls === 'verify',
    ...(target.ca !== undefined ? { ca: target.ca } : {}),
    // Checked against the configured/looked-up name, whatever address we connected to.
    checkServerIdentity: (_host, cert) => tls.checkServerIdentity(name, cert),
  };
}

/** DANE: the server's chain must match a usable TLSA record (undefined when it does, or DANE does not apply). */
function daneMismatch(target: Target, conn: SmtpConnection): SmtpError | undefined {
  if (!target.dane || target.dane.length === 0 || !conn.secure) return undefined;
  const chain = peerChain(conn.tlsSocket?.getPeerCertificate(true) as PeerCert | undefined);
  const why = checkDane(target.dane, chain, expectedName(target));
  if (!why) return undefined;
  const e = localError(LOCAL_ERRORS.certificate, `4.7.5 DANE: ${why}`);
  (e as { originalCode?: string }).originalCode = 'ETLSA';
  return e;
}

/** Whether the session's certificate verified: always with verify (else no session), read from the socket when observed. */
function certificateVerified(target: Target, conn: SmtpConnection): boolean | undefined {
  if (!conn.secure) return target.observe ? false : undefined;
  if (target.tls === 'verify' || (target.dane && target.dane.length > 0)) return true;
  if (!target.observe) return undefined;
  return conn.tlsSocket?.authorized === true;
}

/**
 * With tls: verify, a certificate that does not verify becomes a local
 * error naming the problem (4.7.5, Postfix's "Server certificate not
 * verified"), so it is logged and deferred as such.
 */
function certificateError(target: Target, err: SmtpError): SmtpError {
  if (target.tls !== 'verify' || !isCertificateFailure(err)) return err;
  const reason = (err.message ?? '').replace(/\s+/g, ' ').trim();
  const e = localError(LOCAL_ERRORS.certificate, `4.7.5 Server certificate not verified for ${expectedName(target)}: ${reason}`);
  // OpenSSL's / Node's name for the problem: describeError appends it.
  const original = err.originalCode ?? err.code;
  if (original) (e as { originalCode?: string }).originalCode = original;
  return e;
}

/**
 * Make a pooled session ready for the next transaction; false when it is
 * unusable. With PIPELINING the RSET is owed and goes out with the next
 * MAIL FROM (one write, one round trip less); without, it is sent and
 * answered now.
 */
export async function resetSession(s: Session): Promise<boolean> {
  if (s.broken || s.conn.destroyed) return false;
  if (s.conn.extensions.has('PIPELINING')) {
    s.resetPending = true;
    return true;
  }
  const x = await s.conn.exchange(['RSET']);
  return !x.err && isPositive(x.replies[0]);
}

/** QUIT (politely, when the session is healthy) and close. */
export function closeSession(s: Session): void {
  s.broken = true;
  s.conn.quit();
}

/** Whether any envelope address needs SMTPUTF8. */
function needsSmtpUtf8(from: string, to: readonly string[]): boolean {
  // eslint-disable-next-line no-control-regex
  const nonAscii = /[^\x00-\x7f]/;
  return nonAscii.test(from) || to.some((a) => nonAscii.test(a));
}

/**
 * One transaction (MAIL, RCPT…, DATA) with per-recipient results. The
 * message stream is opened by the caller for this attempt only.
 */
export async function sendOnSession(s: Session, env: SendEnvelope, open: () => Readable): Promise<SendResult> {
  const failAll = (err: SmtpError, reusable: boolean): SendResult => ({
    accepted: new Map(),
    failed: new Map(env.to.map((r) => [r, err])),
    reusable,
  });
  const utf8 = needsSmtpUtf8(env.from, env.to);
  if (env.smtpUtf8 && utf8 && !s.conn.extensions.has('SMTPUTF8')) {
    return failAll(localError(LOCAL_ERRORS.smtputf8, 'SMTPUTF8 is required, but was not offered by the remote host'), true);
  }
  let stream: Readable;
  try {
    stream = open();
  } catch (err) {
    return failAll(localError(LOCAL_ERRORS.source, `Cannot read queued message: ${(err as Error).message}`), true);
  }
  s.messages++;
  const refused = envelopeProblem(s.conn, env);
  if (refused) {
    stream.destroy();
    return failAll(refused, !s.conn.destroyed);
  }
  let res = await transaction(s.conn, env, utf8, stream, s.resetPending);
  s.resetPending = false;
  if (res.deadSession) {
    // The pooled connection did not answer RSET: nothing of the message went out. One more
    // try on a fresh connection to the same target, with a fresh copy of the message.
    s.conn.close();
    const fresh = await connect(s.target, s.settings);
    if (!fresh.ok) {
      s.broken = true;
      return failAll(fresh.err, false);
    }
    s.conn = fresh.conn;
    s.secure = fresh.conn.secure;
    s.verified = certificateVerified(s.target, fresh.conn);
    s.broken = false;
    s.messages = 1;
    watch(s);
    let again: Readable;
    try {
      again = open();
    } catch (err) {
      return failAll(localError(LOCAL_ERRORS.source, `Cannot read queued message: ${(err as Error).message}`), true);
    }
    res = await transaction(s.conn, env, utf8, again, false);
  }
  if (s.conn.destroyed) s.broken = true;
  return { accepted: res.accepted, failed: res.failed, reusable: !s.broken && !s.conn.destroyed };
}

/** What we refuse to put on the wire before any command goes out (size, CR/LF/<> in addresses). */
function envelopeProblem(conn: SmtpConnection, env: SendEnvelope): SmtpError | undefined {
  if (conn.maxSize && env.size > conn.maxSize) return smtpError(`Message size larger than allowed ${conn.maxSize}`, 'EMESSAGE', 'MAIL FROM');
  if (env.to.length === 0) return smtpError('No recipients defined', 'EENVELOPE', 'API');
  if (/[\r\n<>]/.test(env.from)) return smtpError(`Invalid sender ${JSON.stringify(env.from)}`, 'EENVELOPE', 'API');
  for (const r of env.to) {
    if (!r || /[\r\n<>]/.test(r)) return smtpError(`Invalid recipient ${JSON.stringify(r)}`, 'EENVELOPE', 'API');
  }
  return undefined;
}

function isPositive(r: Reply | undefined): boolean {
  return r !== undefined && r.code >= 200 && r.code < 300;
}

interface TransactionResult {
  readonly accepted: Map<string, string>;
  readonly failed: Map<string, SmtpError>;
  /** The owed RSET got no good reply: the connection was dead, nothing was sent. */
  readonly deadSession?: boolean;
}

/**
 * MAIL, RCPT…, DATA and the message on one connection. With PIPELINING the
 * envelope (and an owed RSET) is one write and one round trip; otherwise
 * each command waits for its reply, and a refused MAIL stops there.
 */
async function transaction(conn: SmtpConnection, env: SendEnvelope, utf8: boolean, stream: Readable, reset: boolean): Promise<TransactionResult> {
  const from = env.from.trim();
  const to = env.to.map((r) => r.trim());
  const params: string[] = [];
  if (utf8 && conn.extensions.has('SMTPUTF8')) params.push('SMTPUTF8');
  // Only declared when the server offers 8BITMIME; harmless for 7-bit content.
  if (conn.extensions.has('8BITMIME')) params.push('BODY=8BITMIME');
  if (env.size > 0 && conn.extensions.has('SIZE')) params.push(`SIZE=${env.size}`);
  const mail = `MAIL FROM:<${from}>${params.length ? ` ${params.join(' ')}` : ''}`;
  const rcpts = to.map((r) => `RCPT TO:<${r}>`);
  const accepted: string[] = [];
  const failed = new Map<string, SmtpError>();
  const failRest = (err: SmtpError, extra: Partial<TransactionResult> = {}): TransactionResult => {
    stream.destroy();
    for (const r of env.to) if (!failed.has(r)) failed.set(r, err);
    return { accepted: new Map(), failed, ...extra };
  };
  const recordRcpt = (i: number, reply: Reply): void => {
    if (isPositive(reply)) return void accepted.push(env.to[i]);
    const e = smtpError('Recipient command failed', 'EENVELOPE', 'RCPT TO', reply.text);
    e.recipient = env.to[i];
    failed.set(env.to[i], e);
  };

  let dataReply: Reply | undefined;
  if (conn.extensions.has('PIPELINING')) {
    const off = reset ? 1 : 0;
    const x = await conn.exchange([...(reset ? ['RSET'] : []), mail, ...rcpts, 'DATA']);
    const r = x.replies;
    if (reset && !isPositive(r[0])) {
      conn.close();
      stream.destroy();
      return { accepted: new Map(), failed, deadSession: true };
    }
    const mailReply = r[off];
    if (!mailReply) return failRest(x.err!);
    if (!isPositive(mailReply)) {
      // A server that took DATA after refusing the sender cannot be trusted with the rest.
      if (r[off + 1 + to.length] && r[off + 1 + to.length].code === 354) conn.close();
      return failRest(smtpError('Mail command failed', 'EENVELOPE', 'MAIL FROM', mailReply.text));
    }
    for (let i = 0; i < to.length && r[off + 1 + i]; i++) recordRcpt(i, r[off + 1 + i]);
    dataReply = r[off + 1 + to.length];
    if (!dataReply) return failRest(x.err!);
    if (accepted.length === 0) {
      // Every recipient refused: a server that still said 354 gets an empty message ended
      // (RFC 2920 §3.1), so the session stays in step and usable.
      if (dataReply.code === 354) await conn.exchange(['.']);
      // A 2xx to DATA leaves the server in a state we do not know (below): not reused.
      else if (dataReply.code < 300) conn.close();
      stream.destroy();
      return { accepted: new Map(), failed };
    }
  } else {
    const m = await conn.exchange([mail]);
    if (m.err) return failRest(m.err);
    if (!isPositive(m.replies[0])) return failRest(smtpError('Mail command failed', 'EENVELOPE', 'MAIL FROM', m.replies[0].text));
    for (let i = 0; i < to.length; i++) {
      const x = await conn.exchange([rcpts[i]]);
      if (x.err) return failRest(x.err);
      recordRcpt(i, x.replies[0]);
    }
    if (accepted.length === 0) {
      stream.destroy();
      return { accepted: new Map(), failed };
    }
    const d = await conn.exchange(['DATA']);
    if (d.err) return failRest(d.err);
    dataReply = d.replies[0];
  }
  // RFC 5321 §4.3.2: the go-ahead for the message is 354 (3xx). A server that answers DATA
  // with 2xx is not reading a message: what we sent next would be read as commands, and
  // there is no reply that would then be the message's. Postfix's client refuses it as
  // well. Deferred, not a verdict on the recipients (the error is not the transaction's
  // reply), and the connection is not reused.
  if (dataReply.code < 300) {
    conn.close();
    return failRest(smtpError(`Server answered DATA with ${dataReply.code} instead of 354`, 'EPROTOCOL', 'CONN'));
  }
  if (dataReply.code >= 400) return failRest(smtpError('Data command failed', 'EENVELOPE', 'DATA', dataReply.text));
  const end = await conn.sendData(stream);
  const final = end.replies[0];
  if (!final) return failRest(end.err!);
  if (!isPositive(final)) return failRest(smtpError('Message failed', 'EMESSAGE', 'DATA', final.text));
  return { accepted: new Map(accepted.map((a) => [a, final.text])), failed };
}
