/**
 * One listener's SMTP conversation, phase by phase (Haraka's hooks:
 * connect, auth, mail, rcpt, data): the connection's hooks (src/smtp/connection.ts) → policy →
 * replies from the table. At end of DATA: collect (line endings, headers,
 * size) → data policy → Received:/Date:/Message-ID: → DKIM → spool commit
 * (fsync) → only then 250 with the queue id.
 * Talks to: AccountStore, PolicyHooks, MessageSigner, Spool, the queue manager.
 * Trusts: nothing from the client; the listener config.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import type { Account, AccountStore } from '../accounts/store';
import type { ListenerConfig } from '../config/listener';
import type { Config } from '../config/schema';
import type { EndOfData } from '../content/end-of-data';
import type { MessageSigner } from '../dkim/types';
import { domainOf, type ClientInfo, type Envelope, type Verdict } from '../envelope';
import type { Logger } from '../log';
import type { UserHash } from '../user-hash';
import { AuthScheduler } from '../policy/auth-scheduler';
import type { AuthGate, ConnectionSlot, DataFacts, PolicyHooks } from '../policy/types';
import type { RoleHooks } from '../roles/index';
import type { Handoff } from '../spool/handoff';
import { selectEgressPool } from '../relay/egress';
import { QUARANTINE_RULE } from '../containment/containment';
import { newQueueId } from '../spool/queue-id';
import { SpoolError, type Spool } from '../spool/store';
import { collectMessage } from './collect';
import type { ConnectionHooks, SmtpAddress, SmtpAuth, SmtpSession } from './connection';
import type { MessageBody } from './message-body';
import { traitsOfMessage, type MessageTraits } from '../message-traits';
import { extractAddresses, parseHeaderBlock } from './headers';
import { isReplyName, REPLIES, SmtpReplyError, type ReplyName } from '../replies';
import { isStateUnavailable } from '../state/resilient';

export interface SessionObserver {
  connection?(listener: string, outcome: 'accepted' | 'refused'): void;
  auth?(listener: string, mechanism: string, result: 'ok' | 'fail' | 'suspended' | 'locked'): void;
  verdict?(v: Verdict): void;
  /** `client`: who sent it (role, netblock class) — for bounded labels only, never the IP or user. */
  accepted?(listener: string, size: number, held: boolean, client?: ClientInfo): void;
  rejected?(listener: string, stage: string, reply: string): void;
}

export interface SessionDeps {
  cfg: Config;
  accounts: AccountStore;
  policy: () => PolicyHooks;
  signer?: () => MessageSigner | undefined;
  spool: Spool;
  /** After the commit; `handoff` lets the queue manager skip re-reading a small message. */
  onCommitted: (id: string, held: boolean, handoff?: Handoff) => void;
  /**
   * The acceptance journal (src/spool/journal.ts), for a small message this
   * process tries at once: true when the message was made durable there and
   * handed to the queue manager; false when the caller commits a queue file.
   */
  journal?: (envelope: Envelope, data: readonly Buffer[], size: number) => Promise<boolean>;
  logger: Logger;
  /** Failed AUTH user names are logged as this keyed hash, never as text (src/user-hash.ts). */
  userHash?: UserHash;
  observer?: SessionObserver;
  bareNewline: 'normalise' | 'reject';
  /** Smart-host roles (src/roles): backup-MX recipient checks, POP-before-SMTP, rewriting. */
  roles?: RoleHooks;
  /** The whole message after the data policy (src/content/end-of-data.ts: content scan, sender token). */
  endOfData?: Pick<EndOfData, 'check'>;
}

interface ConnState {
  client: ClientInfo;
  account?: Account;
  /**
   * A POP-before-SMTP grant stands in for AUTH: the policy sees an
   * authenticated submission client of the granted account (its quotas,
   * identity and state apply). `client` stays what the connection is, for
   * the connection counters released at close.
   */
  popClient?: ClientInfo;
  verdicts: Verdict[];
  /** The connect counted this address's open connections (given back at close). */
  countedConnection: boolean;
  /** The policy's auth hook counted the account's connection (AuthVerdict.countedAccount: a quota limits it); given back at close. */
  countedAccount: boolean;
}

const SPILL_AT = 1024 * 1024;

export class SessionHandlers implements ConnectionHooks {
  private readonly conns = new Map<string, ConnState>();
  /** Each session's connection slot (limits.maxConnectionsPerIp), given back at QUIT or close, whichever comes first. */
  private readonly slots = new Map<string, Promise<ConnectionSlot>>();
  /** Refusals for too many connections, logged once a minute per address (prefix). */
  private readonly refusalLog = new Map<string, { at: number; suppressed: number }>();
  /** AUTH attempts per address, in this process and listener (src/policy/auth-scheduler.ts). */
  private readonly authScheduler = new AuthScheduler();
  private readonly log: Logger;

  constructor(
    private readonly listener: ListenerConfig,
    private readonly deps: SessionDeps,
  ) {
    this.log = deps.logger.child({ listener: listener.name });
  }

  private refuse(v: Verdict, session: SmtpSession, detail?: string): SmtpReplyError {
    const name: ReplyName = v.reply && isReplyName(v.reply) ? v.reply : v.action === 'tempfail' ? 'policy_tempfail' : 'policy_reject';
    this.log.info({ evt: 'rejection', sid: session.id, ip: session.remoteAddress, stage: v.stage, rule: v.rule, reply: name }, 'refused');
    this.deps.observer?.rejected?.(this.listener.name, v.stage, name);
    return new SmtpReplyError(name, detail ?? v.detail);
  }

  /**
   * A socket on an implicit-TLS listener, at its accept: its slot is taken now, before the
   * handshake (SmtpServer closes it when false: over limits.maxConnectionsPerIp), and connect
   * finds it under the session's id. A state store that fails is connect's to answer (451).
   */
  async admit(sessionId: string, ip: string): Promise<boolean> {
    try {
      return await this.takeSlot(sessionId, ip);
    } catch {
      return true;
    }
  }

  /** A socket admitted that closed before its session began: its slot goes back. */
  abandon(sessionId: string): void {
    void this.releaseSlot(sessionId);
  }

  /**
   * The address's connection slot for this session, kept until QUIT or close (counted even
   * when refused, and given back like any other); false over limits.maxConnectionsPerIp,
   * the refusal counted and logged here, once per connection.
   */
  private async takeSlot(sessionId: string, ip: string): Promise<boolean> {
    const slotP = this.deps.policy().openSlot({ listener: this.listener.name, ip });
    this.slots.set(sessionId, slotP);
    const slot = await slotP;
    if (this.withinLimit(slot)) return true;
    this.deps.observer?.connection?.(this.listener.name, 'refused');
    this.logSlotRefusal(sessionId, ip, slot);
    return false;
  }

  private withinLimit(slot: ConnectionSlot): boolean {
    return slot.count <= this.deps.cfg.limits.maxConnectionsPerIp;
  }

  async connect(session: SmtpSession): Promise<SmtpReplyError | undefined> {
    const ip = session.remoteAddress;
    try {
      // Taken at the accept already on an implicit-TLS listener (admit, which reported a refusal).
      const admitted = this.slots.get(session.id);
      const within = admitted ? this.withinLimit(await admitted) : await this.takeSlot(session.id, ip);
      if (!within) return new SmtpReplyError('too_many_connections_ip');
      const d = await this.deps.policy().connect({ listener: this.listener, ip });
      this.deps.observer?.verdict?.(d.verdict);
      const client: ClientInfo = {
        listener: this.listener.name,
        role: this.listener.role,
        ip,
        tls: session.secure,
        netblockClass: d.netblockClass,
      };
      this.conns.set(session.id, { client, verdicts: [d.verdict], countedConnection: d.countedConnection, countedAccount: false });
      if (d.verdict.action === 'reject' || d.verdict.action === 'tempfail') {
        this.deps.observer?.connection?.(this.listener.name, 'refused');
        return this.refuse(d.verdict, session);
      }
      this.deps.observer?.connection?.(this.listener.name, 'accepted');
      this.log.debug({ evt: 'connect', sid: session.id, ip, cls: d.netblockClass }, 'connected');
      return undefined;
    } catch (err) {
      // Fail closed without the shared state (connection counting needs it): 451 4.3.0.
      if (isStateUnavailable(err)) return new SmtpReplyError('state_unavailable');
      this.log.error({ evt: 'error', sid: session.id, err }, 'connect check failed');
      return new SmtpReplyError('local_error');
    }
  }

  /**
   * QUIT: the slot goes back before the 221: a client that got its 221 often
   * connects again at once, and was counted twice (test/security/per-ip-limit).
   */
  quit(session: SmtpSession): Promise<void> {
    return this.releaseSlot(session.id);
  }

  private releaseSlot(sessionId: string): Promise<void> {
    const slot = this.slots.get(sessionId);
    if (!slot) return Promise.resolve();
    this.slots.delete(sessionId);
    return slot.then(
      (s) => s.release(),
      () => undefined, // never taken (the store failed): nothing to give back
    ).catch((err: Error) => this.log.error({ evt: 'error', sid: sessionId, err }, 'releasing the connection slot failed'));
  }

  /** The 421 (or the close, before a TLS handshake) for too many connections, with the address: at most one line a minute per address (prefix) and listener. */
  private logSlotRefusal(sessionId: string, ip: string, slot: ConnectionSlot): void {
    const now = Date.now();
    const seen = this.refusalLog.get(slot.subject);
    if (seen && now - seen.at < 60_000) {
      seen.suppressed++;
      return;
    }
    if (this.refusalLog.size >= 10_000) this.refusalLog.clear();
    this.refusalLog.set(slot.subject, { at: now, suppressed: 0 });
    const limit = this.deps.cfg.limits.maxConnectionsPerIp;
    const r = REPLIES.too_many_connections_ip;
    this.log.warn(
      { evt: 'connect_refused', sid: sessionId, ip, subject: slot.subject, open: slot.count - 1, limit, reply: 'too_many_connections_ip', code: `${r.code} ${r.enhanced}`, suppressedBefore: seen?.suppressed ?? 0 },
      'too many connections from this address',
    );
  }

  close(session: SmtpSession): void {
    void this.releaseSlot(session.id);
    const st = this.conns.get(session.id);
    if (st) this.deps.policy().disconnect?.({ client: st.client, countedConnection: st.countedConnection, countedAccount: st.countedAccount });
    this.conns.delete(session.id);
  }

  private state(session: SmtpSession): ConnState {
    let st = this.conns.get(session.id);
    if (!st) {
      // connect always runs first (src/smtp/connection.ts greets only after it); a guard.
      st = { client: { listener: this.listener.name, role: this.listener.role, ip: session.remoteAddress, tls: session.secure }, verdicts: [], countedConnection: false, countedAccount: false };
      this.conns.set(session.id, st);
    }
    return st;
  }

  /** AUTH, scheduled per address by the policy layer's AuthScheduler (brute force versus NAT). */
  async auth(auth: SmtpAuth, session: SmtpSession): Promise<SmtpReplyError | { user: string }> {
    const st = this.state(session);
    let gate: AuthGate | undefined;
    try {
      gate = this.deps.policy().authGate?.({ client: st.client, user: auth.username ?? '' });
    } catch {
      gate = undefined;
    }
    let result: SmtpReplyError | { user: string } | undefined;
    // The state in hand, not looked up again: a queued attempt may run after its client has
    // gone and close() dropped the entry, which a second lookup would create anew, for ever.
    await this.authScheduler.run(gate, st.client.ip, async () => {
      result = await this.authenticate(auth, session, st);
    });
    // Made only when needed: an Error captures a stack trace (~20 µs), once per AUTH otherwise.
    return result ?? new SmtpReplyError('auth_temp_failure');
  }

  private async authenticate(auth: SmtpAuth, session: SmtpSession, st: ConnState): Promise<SmtpReplyError | { user: string }> {
    const user = auth.username ?? '';
    const method = auth.method;
    try {
      const policy = this.deps.policy();
      if (policy.auth) {
        // Asked before the hash is computed: a locked-out client never reaches the account store.
        const pre = await policy.auth({ client: st.client, user, phase: 'before' });
        if (pre.action !== 'accept') {
          this.deps.observer?.auth?.(this.listener.name, method, 'locked');
          this.log.info({ evt: 'auth', sid: session.id, ip: session.remoteAddress, method, result: 'locked', ...this.typedUser(user) }, 'authentication refused before the password check');
          return this.refuse(pre, session);
        }
      }
      if (auth.authzid && auth.authzid.toLowerCase() !== user.toLowerCase()) {
        // RFC 4616 §2: acting as another identity is not offered; refused (and counted) as a failed login.
        if (policy.auth) await policy.auth({ client: st.client, user, phase: 'after', ok: false });
        this.deps.observer?.auth?.(this.listener.name, method, 'fail');
        this.log.info({ evt: 'auth', sid: session.id, ip: session.remoteAddress, method, result: 'fail', rule: 'smtp.auth-authzid', ...this.typedUser(user) }, 'authentication refused: authorization identity differs');
        return new SmtpReplyError('auth_failed');
      }
      const res = await this.deps.accounts.authenticate(user, auth.password ?? '');
      const after = policy.auth ? await policy.auth({ client: st.client, user, phase: 'after', ok: res.ok }) : undefined;
      if (!res.ok) {
        const result = res.reason === 'suspended' ? 'suspended' : 'fail';
        this.deps.observer?.auth?.(this.listener.name, method, result);
        this.log.info({ evt: 'auth', sid: session.id, ip: session.remoteAddress, method, result, ...this.typedUser(user) }, 'authentication failed');
        return new SmtpReplyError('auth_failed');
      }
      if (this.conns.get(session.id) !== st) {
        // The client left while the attempt waited in the queue or the hash ran: close() has
        // given back what it knew, and nothing will close this login, so what it counted goes
        // back now (else it would hold one of the account's connections until the TTL).
        if (after?.countedAccount) policy.disconnect?.({ client: { ...st.client, user }, countedConnection: false, countedAccount: true });
        return new SmtpReplyError('auth_temp_failure');
      }
      st.account = res.account;
      st.countedAccount = after?.countedAccount ?? false;
      st.client = { ...st.client, user: res.account.name, tls: session.secure };
      this.deps.observer?.auth?.(this.listener.name, method, 'ok');
      this.log.info({ evt: 'auth', sid: session.id, ip: session.remoteAddress, method, result: 'ok', user: res.account.name, cached: res.cached }, 'authenticated');
      return { user: res.account.name };
    } catch (err) {
      this.log.error({ evt: 'error', sid: session.id, err }, 'authentication error');
      return new SmtpReplyError('auth_temp_failure');
    }
  }

  /** What a client typed as its user name: people type passwords there, so only its keyed hash is logged. */
  private typedUser(user: string): { userHash?: string } {
    return user && this.deps.userHash ? { userHash: this.deps.userHash(user) } : {};
  }

  async mailFrom(address: SmtpAddress, session: SmtpSession): Promise<SmtpReplyError | undefined> {
    const st = this.state(session);
    st.client = { ...st.client, helo: session.helo, tls: session.secure };
    try {
      if (!st.account && !st.popClient && this.deps.roles?.popAccount) {
        const acc = await this.deps.roles.popAccount(this.listener, st.client.ip, address.address);
        if (acc) {
          st.popClient = { ...st.client, role: 'submission', user: acc.name };
          st.account = acc;
          this.log.info({ evt: 'auth', sid: session.id, ip: st.client.ip, method: 'pop-before-smtp', result: 'ok', user: acc.name }, 'POP-before-SMTP grant');
        }
      }
      if (st.popClient) st.popClient = { ...st.popClient, helo: session.helo, tls: session.secure };
      const v = await this.deps.policy().mail({ client: st.popClient ?? st.client, account: st.account, mailFrom: address.address, recipients: [] });
      this.deps.observer?.verdict?.(v);
      st.verdicts = st.verdicts.slice(0, 1).concat(v);
      if (v.action === 'reject' || v.action === 'tempfail') return this.refuse(v, session);
      return undefined;
    } catch (err) {
      this.log.error({ evt: 'error', sid: session.id, err }, 'mail check failed');
      return new SmtpReplyError('local_error');
    }
  }

  async rcptTo(address: SmtpAddress, session: SmtpSession): Promise<SmtpReplyError | undefined> {
    const st = this.state(session);
    const accepted = session.envelope.rcptTo.map((r) => r.address);
    if (accepted.length >= this.deps.cfg.limits.maxRecipients) return new SmtpReplyError('too_many_recipients');
    // Sender-specified routing (Postfix: allow_untrusted_routing = no) is refused for every
    // client: a relay must never resolve user%other@us or a!b@us into a second hop.
    if (isRoutedAddress(address)) return this.refuse({ action: 'reject', stage: 'rcpt', rule: 'smtp.routed-address', reply: 'routed_recipient' }, session);
    try {
      const mailFrom = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
      const v = await this.deps.policy().rcpt({ client: st.popClient ?? st.client, account: st.account, mailFrom, recipients: accepted, rcpt: address.address });
      this.deps.observer?.verdict?.(v);
      if (v.action === 'reject' || v.action === 'tempfail') return this.refuse(v, session);
      // Backup MX: recipient validation against the primary (list / callout).
      const rv = this.deps.roles?.rcpt ? await this.deps.roles.rcpt(this.listener, address.address) : undefined;
      if (rv && (rv.action === 'reject' || rv.action === 'tempfail')) return this.refuse(rv, session);
      if (v.action === 'hold') st.verdicts.push(v);
      return undefined;
    } catch (err) {
      this.log.error({ evt: 'error', sid: session.id, err }, 'rcpt check failed');
      return new SmtpReplyError('local_error');
    }
  }

  async data(stream: MessageBody, session: SmtpSession): Promise<SmtpReplyError | string> {
    const st = this.state(session);
    const id = newQueueId();
    const spillPath = this.deps.spool.tmpPath(`${id}.spill`);
    const cfg = this.deps.cfg;
    let timedOut = false;
    let spilled = false;
    const timer = setTimeout(() => {
      timedOut = true;
      stream.destroy(new Error('data timeout'));
    }, cfg.limits.dataTimeoutMs);
    try {
      const msg = await collectMessage(stream, {
        bareNewline: this.deps.bareNewline,
        maxSize: cfg.limits.maxMessageSize,
        spillAt: SPILL_AT,
        spillPath,
        maxHeaderBytes: 256 * 1024,
        maxHeaderFields: 1000,
        onSpill: () => (spilled = true),
      });
      // Over the limit on the wire, or once its bare newlines became CRLF (the size as stored).
      if (stream.sizeExceeded || msg.tooBig) return new SmtpReplyError('too_big');
      if (msg.bareNewline && this.deps.bareNewline === 'reject') return this.refuse({ action: 'reject', stage: 'data', rule: 'smtp.bare-newline', reply: 'bare_newline' }, session);
      if (msg.headersTooLarge) return this.refuse({ action: 'reject', stage: 'data', rule: 'smtp.header-limits', reply: 'too_big' }, session, '(header section too large)');

      let mailFrom = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
      let recipients = session.envelope.rcptTo.map((r) => r.address);
      let headerFrom = msg.headers.filter((h) => h.name === 'from').flatMap((h) => extractAddresses(h.value));
      const receivedCount = msg.headers.filter((h) => h.name === 'received').length;
      if (receivedCount >= cfg.limits.maxReceivedHeaders) {
        return this.refuse({ action: 'reject', stage: 'data', rule: 'smtp.loop-detect', reply: 'loop_detected' }, session, `(${receivedCount} Received headers)`);
      }
      // Traits (fingerprint, links) are taken when containment first reads them, once: a gateway
      // without containment never pays for them (≈50 µs for 4 KB, ≈1.2 ms for 64 KB of body).
      let traits: MessageTraits | undefined;
      const facts: DataFacts = {
        client: st.popClient ?? st.client,
        account: st.account,
        mailFrom,
        recipients,
        size: msg.size,
        headerFrom,
        receivedCount,
        get traits() {
          return (traits ??= traitsOfMessage(msg.headers, msg.chunks));
        },
      };
      const v = await this.deps.policy().data(facts);
      this.deps.observer?.verdict?.(v);
      if (v.action === 'reject' || v.action === 'tempfail') return this.refuse(v, session);
      const eod = await this.deps.endOfData?.check({ listener: this.listener, client: facts.client, account: st.account, mailFrom, recipients, queueId: id, chunks: msg.chunks, spillFile: msg.spillFile, size: msg.size });
      if (eod?.verdict && (eod.verdict.action === 'reject' || eod.verdict.action === 'tempfail')) return this.refuse(eod.verdict, session);
      const hold = v.action === 'hold' ? v : (eod?.verdict ?? st.verdicts.find((x) => x.action === 'hold'));

      // Address rewriting (canonical sender, aliases): after the policy judged what the client sent, before Received:/DKIM.
      const rw = this.deps.roles?.rewrite?.(this.listener, mailFrom, recipients, msg.chunks);
      if (rw?.changed) {
        mailFrom = rw.mailFrom;
        recipients = rw.recipients;
        // Header fields rewritten: the first chunk is now the whole header block.
        if (rw.chunks !== msg.chunks) headerFrom = parseHeaderBlock(rw.chunks[0]!).filter((h) => h.name === 'from').flatMap((h) => extractAddresses(h.value));
        msg.chunks = rw.chunks;
        msg.size += rw.sizeDelta;
      }

      const now = Date.now();
      const client = st.popClient ?? st.client;
      let prefix = receivedHeader(cfg.hostname, session, client, id, recipients, now) + (eod?.headers ?? '');
      if (client.role === 'submission') {
        // RFC 6409 §8: a submission server may add missing Date and Message-ID.
        if (!msg.headers.some((h) => h.name === 'date')) prefix += `Date: ${rfc5322Date(now)}\r\n`;
        if (!msg.headers.some((h) => h.name === 'message-id')) prefix += `Message-ID: <${id}.${randomBytes(6).toString('hex')}@${cfg.hostname}>\r\n`;
      }
      let prefixBuf = Buffer.from(prefix);
      const signer = this.deps.signer?.();
      let dkim: { dkim: string; dkimRule: string } | undefined;
      if (signer) {
        const headerFromDomain = headerFrom[0] ? domainOf(headerFrom[0]) : undefined;
        // Who this client is decides what it may be signed as (policy data), never the header From alone.
        const authority = this.deps.policy().signingAuthority({ client, account: st.account, popGrant: st.popClient !== undefined });
        // A large message's tail is streamed from its spill file, never read whole.
        const spill = msg.spillFile;
        const rest = spill ? () => createReadStream(spill, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer> : undefined;
        const signed = await signer.sign([prefixBuf, ...msg.chunks], { headerFromDomain, authority }, rest);
        if (signed.kind === 'refuse') {
          this.log.info({ evt: 'dkim', sid: session.id, queueId: id, dkimRule: signed.rule, reason: signed.reason }, 'unsigned mail refused');
          return this.refuse({ action: 'reject', stage: 'data', rule: 'dkim.unsigned-policy', reply: 'unsigned_refused' }, session);
        }
        dkim = signed.kind === 'signed' ? { dkim: signed.domain, dkimRule: signed.rule } : { dkim: 'none', dkimRule: `${signed.rule}: ${signed.reason}` };
        if (signed.kind === 'signed') prefixBuf = Buffer.concat([Buffer.from(signed.headers), prefixBuf]);
      }
      // Decided once, here, and kept with the message: every attempt (also after a restart) leaves from this pool.
      // A suspicious sender's message (containment's quarantine verdict, an accept) leaves from the quarantine pool.
      const quarantinedBy = v.action === 'accept' && v.rule === QUARANTINE_RULE ? v.rule : undefined;
      const egress = selectEgressPool(cfg.relay.poolSelection, { plan: st.account?.plan, netblockClass: client.netblockClass, ...(quarantinedBy ? { quarantinedBy } : {}) });
      const envelope: Envelope = {
        id,
        receivedAt: now,
        client,
        mailFrom,
        recipients,
        size: msg.size,
        smtpUtf8: Boolean(session.envelope.smtpUtf8),
        verdicts: [...st.verdicts, v, ...(eod?.verdict ? [eod.verdict] : [])],
        ...(hold ? { holdReason: hold.rule } : {}),
        ...(egress ? { egress } : {}),
      };
      const data = [prefixBuf, ...msg.chunks];
      const size = prefixBuf.length + msg.size;
      const journaled = !hold && !msg.spillFile && this.deps.journal ? await this.deps.journal(envelope, data, size) : false;
      if (!journaled) {
        await this.deps.spool.commit(envelope, { prefix: prefixBuf, chunks: msg.chunks, spillFile: msg.spillFile }, hold ? 'hold' : 'incoming');
        this.deps.onCommitted(id, Boolean(hold), msg.spillFile ? undefined : { envelope, data, size });
      }
      this.deps.policy().accepted?.(facts)?.catch((err: Error) => this.log.error({ evt: 'error', err }, 'quota accounting failed'));
      this.deps.observer?.accepted?.(this.listener.name, msg.size, Boolean(hold), client);
      this.log.info(
        { evt: 'reception', sid: session.id, queueId: id, ip: st.client.ip, user: st.client.user, from: mailFrom, rcpts: recipients.length, size: msg.size, held: Boolean(hold), ...dkim, ...(egress ? { pool: egress.pool, poolRule: egress.rule } : {}) },
        'message accepted',
      );
      const r = REPLIES.accepted;
      return `${r.enhanced} ${r.text} ${id}`;
    } catch (err) {
      // 421: the connection closes; a client still trickling the message is cut off.
      if (timedOut) return new SmtpReplyError('data_timeout');
      if (err instanceof SpoolError) {
        this.log.error({ evt: 'error', sid: session.id, code: err.code, err: err.message }, 'spool write failed');
        // A full disk: 452 4.3.1; any other storage failure (EIO): 451 4.3.0. Either way a retry later.
        return new SmtpReplyError(err.isStorageFull ? 'storage_full' : 'local_error');
      }
      // The client went away mid-DATA (the connection fails the body with ECONNECTION):
      // its behaviour, not a gateway error; nothing was accepted and no one is left to answer.
      if ((err as NodeJS.ErrnoException).code === 'ECONNECTION') {
        this.log.info({ evt: 'rejection', sid: session.id, ip: session.remoteAddress, stage: 'data', reply: 'none' }, 'client disconnected during DATA');
        return new SmtpReplyError('local_error');
      }
      this.log.error({ evt: 'error', sid: session.id, err }, 'data handling failed');
      return new SmtpReplyError('local_error');
    } finally {
      clearTimeout(timer);
      if (spilled) await fsp.unlink(spillPath).catch(() => undefined);
    }
  }
}

/** A source route (flagged by address-command.ts), %-hack, bang path or quoted local part with @. */
function isRoutedAddress(a: SmtpAddress & { sourceRoute?: boolean }): boolean {
  if (a.sourceRoute) return true;
  const at = a.address.lastIndexOf('@');
  const local = at >= 0 ? a.address.slice(0, at) : a.address;
  return /[%!@]/.test(local);
}

function receivedHeader(hostname: string, session: SmtpSession, client: ClientInfo, id: string, recipients: string[], now: number): string {
  // RFC 3848 protocol names: ESMTP + S (TLS) + A (authenticated).
  const proto = `ESMTP${session.secure ? 'S' : ''}${client.user ? 'A' : ''}`;
  const helo = (session.helo || 'unknown').replace(/[^\x21-\x7e]/g, '');
  const tls = session.secure && session.tlsOptions ? ` (using ${session.tlsOptions.version ?? 'TLS'} with cipher ${session.tlsOptions.name ?? 'unknown'})` : '';
  const forClause = recipients.length === 1 ? `\r\n\tfor <${recipients[0]}>` : '';
  return `Received: from ${helo} ([${client.ip}])\r\n\tby ${hostname} (smarthost) with ${proto} id ${id}${tls}${forClause};\r\n\t${rfc5322Date(now)}\r\n`;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

export function rfc5322Date(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}
