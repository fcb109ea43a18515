/**
 * One outbound SMTP session: a thin promise layer over nodemailer's
 * SMTPConnection (nodemailer/lib/smtp-connection). It opens a session to one
 * address (connect, greeting, EHLO, STARTTLS, AUTH), sends one transaction,
 * resets and closes. Results are values; nothing here throws.
 *
 * How the library is adapted:
 *  - SMTPConnection reports set-up failures through its 'error' event (the
 *    connect callback only sees success), so openSession listens to 'error'
 *    and 'end' too and settles once. A permanent 'error' listener marks the
 *    session broken, so an error never crashes the process and a broken
 *    session is never pooled.
 *  - TLS: 'opportunistic' → opportunisticTLS (STARTTLS when offered, plain
 *    when the server refuses STARTTLS); 'required' → requireTLS; 'none' →
 *    ignoreTLS. For these levels certificates are not verified
 *    (rejectUnauthorized: false): MX TLS is opportunistic, like Postfix's
 *    default `may` — MX hosts rarely present a certificate for the name we
 *    looked up, and refusing would only push the mail to plaintext.
 *    'required' is Postfix's `encrypt` (encryption mandatory, identity not
 *    checked).
 *  - 'verify' (Postfix `verify`) → requireTLS with rejectUnauthorized: true,
 *    SNI set to the host name, the target's CA bundle when configured (else
 *    Node's default roots), and tls.checkServerIdentity against the name we
 *    meant to reach (relayhost/route host, MX exchange; an IP literal host is
 *    checked against the certificate's IP SANs). A certificate that does not
 *    verify fails the session set-up with LOCAL_ERRORS.certificate — a
 *    deferral, never a plaintext retry.
 *  - AUTH credentials are only sent over an encrypted session, whatever the
 *    configured TLS level (opportunistic TLS can silently end up plaintext).
 *  - The SMTPUTF8 keyword is added by nodemailer itself when an envelope
 *    address is non-ASCII; sendOnSession refuses such a message when the
 *    server does not offer SMTPUTF8 (RFC 6531 §3.2) instead of sending it.
 */
import type { Readable } from 'node:stream';
import { isIP } from 'node:net';
import tls from 'node:tls';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { OutboundTls } from './config';
import { isCertificateFailure, LOCAL_ERRORS, type SmtpErrorLike } from './classify';
import { checkDane, peerChain, type PeerCert, type Tlsa } from './dane';
import type { TargetPolicy } from './secure-transport';

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
}

export interface Session {
  readonly conn: SMTPConnection;
  readonly target: Target;
  /** STARTTLS succeeded. */
  readonly secure: boolean;
  /** The certificate verified for the host name (known with tls: verify, or when observed). */
  readonly verified?: boolean;
  /** Transactions attempted on this session. */
  messages: number;
  /** Set by any 'error' or 'end': never reuse. */
  broken: boolean;
}

/** SMTPConnection errors, as far as we read them. */
export type SmtpError = Error & SmtpErrorLike & { recipient?: string; rejectedErrors?: SmtpError[] };

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
  const e = new Error(message) as SmtpError & { code: string };
  e.code = code;
  return e;
}

export function openSession(target: Target, settings: SessionSettings): Promise<OpenResult> {
  return new Promise((resolve) => {
    const opts: SMTPConnection.Options = {
      host: target.ip,
      port: target.port,
      name: settings.name,
      localAddress: settings.localAddress,
      connectionTimeout: settings.connectTimeoutMs,
      greetingTimeout: settings.greetingTimeoutMs,
      socketTimeout: settings.socketTimeoutMs,
      logger: false,
      ignoreTLS: target.tls === 'none',
      opportunisticTLS: target.tls === 'opportunistic',
      requireTLS: target.tls === 'required' || target.tls === 'verify',
      tls: tlsOptions(target),
    };
    const conn = new SMTPConnection(opts);
    const state = { broken: false };
    conn.on('error', () => {
      state.broken = true;
    });
    conn.on('end', () => {
      state.broken = true;
    });
    let settled = false;
    const settle = (r: OpenResult): void => {
      if (settled) return;
      settled = true;
      conn.off('error', onError);
      conn.off('end', onEnd);
      if (!r.ok) conn.close();
      resolve(r);
    };
    const onError = (err: Error): void => settle({ ok: false, err: certificateError(target, err as SmtpError) });
    const onEnd = (): void => settle({ ok: false, err: localError('ECONNECTION', 'Connection closed during session set-up') });
    conn.on('error', onError);
    conn.once('end', onEnd);
    conn.connect((err) => {
      if (err) return settle({ ok: false, err: certificateError(target, err as SmtpError) });
      const daneFailure = daneMismatch(target, conn);
      if (daneFailure) return settle({ ok: false, err: daneFailure });
      const session: Session = {
        conn,
        target,
        secure: conn.secure,
        verified: certificateVerified(target, conn),
        messages: 0,
        get broken() {
          return state.broken;
        },
        set broken(v: boolean) {
          state.broken = v;
        },
      };
      if (!target.auth) return settle({ ok: true, session });
      if (!conn.secure) {
        return settle({ ok: false, err: localError(LOCAL_ERRORS.noTlsForAuth, 'Refusing to send AUTH credentials over an unencrypted session') });
      }
      conn.login({ user: target.auth.user, pass: target.auth.pass }, (loginErr) => {
        if (loginErr) return settle({ ok: false, err: loginErr as SmtpError });
        settle({ ok: true, session });
      });
    });
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
function daneMismatch(target: Target, conn: SMTPConnection): SmtpError | undefined {
  if (!target.dane || target.dane.length === 0 || !conn.secure) return undefined;
  // nodemailer keeps the upgraded socket in a private field; without it there is nothing to trust.
  const socket = (conn as unknown as { _socket?: { getPeerCertificate?: (detailed: boolean) => PeerCert } })._socket;
  const chain = peerChain(socket?.getPeerCertificate?.(true));
  const why = checkDane(target.dane, chain, expectedName(target));
  if (!why) return undefined;
  const e = localError(LOCAL_ERRORS.certificate, `4.7.5 DANE: ${why}`);
  (e as { originalCode?: string }).originalCode = 'ETLSA';
  return e;
}

/** Whether the session's certificate verified: always with verify (else no session), read from the socket when observed. */
function certificateVerified(target: Target, conn: SMTPConnection): boolean | undefined {
  if (!conn.secure) return target.observe ? false : undefined;
  if (target.tls === 'verify' || (target.dane && target.dane.length > 0)) return true;
  if (!target.observe) return undefined;
  // nodemailer keeps the upgraded socket in a private field: read it defensively.
  const socket = (conn as unknown as { _socket?: { authorized?: unknown } })._socket;
  return socket?.authorized === true;
}

/**
 * With tls: verify, a certificate that does not verify becomes a local
 * error naming the problem (4.7.5, Postfix's "Server certificate not
 * verified"), so it is logged and deferred as such.
 */
function certificateError(target: Target, err: SmtpError): SmtpError {
  if (target.tls !== 'verify' || !isCertificateFailure(err)) return err;
  const reason = (err.message ?? '').replace(/^Error initiating TLS - /, '').replace(/\s+/g, ' ').trim();
  const e = localError(LOCAL_ERRORS.certificate, `4.7.5 Server certificate not verified for ${expectedName(target)}: ${reason}`);
  // OpenSSL's / Node's name for the problem: describeError appends it.
  const original = err.originalCode ?? err.code;
  if (original) (e as { originalCode?: string }).originalCode = original;
  return e;
}

/** RSET before reusing a pooled session; false when the session is unusable. */
export function resetSession(s: Session): Promise<boolean> {
  if (s.broken || s.conn.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      s.conn.off('end', onEnd);
      resolve(ok);
    };
    const onEnd = (): void => finish(false);
    s.conn.once('end', onEnd);
    s.conn.reset((err) => finish(!err));
  });
}

/** QUIT (politely, when the session is healthy) and close. */
export function closeSession(s: Session): void {
  s.broken = true;
  try {
    if (!s.conn.destroyed) s.conn.quit();
  } catch {
    // a half-closed socket: close() below tears it down
  }
  s.conn.close();
}

/** Whether the server's EHLO offered SMTPUTF8 (undefined when not knowable). */
function offersSmtpUtf8(conn: SMTPConnection): boolean | undefined {
  // nodemailer keeps the parsed extensions in a private field; read it
  // defensively so a library change degrades to "unknown", not a crash.
  const ext = (conn as unknown as { _supportedExtensions?: unknown })._supportedExtensions;
  return Array.isArray(ext) ? ext.includes('SMTPUTF8') : undefined;
}

/**
 * One transaction (MAIL, RCPT…, DATA) with per-recipient results. The
 * message stream is opened by the caller for this attempt only.
 */
export function sendOnSession(s: Session, env: SendEnvelope, open: () => Readable): Promise<SendResult> {
  const failAll = (err: SmtpError, reusable: boolean): SendResult => ({
    accepted: new Map(),
    failed: new Map(env.to.map((r) => [r, err])),
    reusable,
  });
  if (env.smtpUtf8 && [env.from, ...env.to].some((a) => /[^\x00-\x7f]/.test(a)) && offersSmtpUtf8(s.conn) === false) {
    return Promise.resolve(failAll(localError(LOCAL_ERRORS.smtputf8, 'SMTPUTF8 is required, but was not offered by the remote host'), true));
  }
  let stream: Readable;
  try {
    stream = open();
  } catch (err) {
    return Promise.resolve(failAll(localError(LOCAL_ERRORS.source, `Cannot read queued message: ${(err as Error).message}`), true));
  }
  s.messages++;
  return new Promise((resolve) => {
    s.conn.send(
      {
        from: env.from === '' ? false : env.from,
        to: [...env.to],
        size: env.size,
        // Only declared when the server offers 8BITMIME; harmless for 7-bit
        // content, and we do not track the client's BODY= parameter.
        use8BitMime: true,
      },
      stream,
      (err, info) => {
        if (!err) {
          const accepted = new Map<string, string>();
          const failed = new Map<string, SmtpError>();
          for (const a of info.accepted) accepted.set(a, info.response);
          for (const e of (info.rejectedErrors ?? []) as SmtpError[]) if (e.recipient) failed.set(e.recipient, e);
          for (const r of info.rejected) if (!failed.has(r)) failed.set(r, localError('EENVELOPE', 'Recipient rejected'));
          return resolve({ accepted, failed, reusable: !s.broken });
        }
        const e = err as SmtpError;
        // Recipients refused at RCPT keep their own reply even when the
        // message then fails at DATA: nodemailer puts them on the error when
        // every recipient was refused, otherwise only on its (private)
        // current envelope.
        const own =
          e.rejectedErrors ??
          ((s.conn as unknown as { _envelope?: { rejectedErrors?: SmtpError[] } })._envelope?.rejectedErrors ?? []);
        const failed = new Map<string, SmtpError>();
        for (const r of own) if (r.recipient) failed.set(r.recipient, r);
        for (const r of env.to) if (!failed.has(r)) failed.set(r, e);
        // A refusal by the server leaves the session usable; anything else
        // (socket, timeout, stream error) does not.
        const reusable = !s.broken && (e.code === 'EENVELOPE' || e.code === 'EMESSAGE');
        if (!reusable) s.broken = true;
        resolve({ accepted: new Map(), failed, reusable });
      },
    );
  });
}
