/**
 * The delivery agent: how mail leaves. Takes one DeliveryJob from the queue
 * manager and returns one RecipientOutcome per recipient; never throws for
 * delivery problems.
 *
 * For each job: recipients are grouped by next hop (routes.ts), each group
 * (at most 100 recipients per transaction, the minimum RFC 5321 §4.5.3.1.8
 * makes servers accept) is delivered concurrently with the others:
 *   resolve (mx.ts) → lease (pool.ts, may wait) → reuse an idle session after
 *   RSET, or open one (client.ts), trying MX hosts/addresses in order and
 *   falling back to the next on connection or set-up failure (refused,
 *   timeout, 4xx/5xx greeting, TLS, AUTH) → one transaction → classify each
 *   recipient's reply (classify.ts) → release the session to the pool.
 *
 * Bounded effort per attempt: at most 2 addresses per host and 5 addresses in
 * all (Postfix's smtp_mx_address_limit). An opportunistic STARTTLS whose
 * handshake fails is retried once in plaintext on the same address (Postfix
 * `may` does the same), except when credentials would be sent. `required`
 * and `verify` never fall back: a failed handshake or (verify) a certificate
 * that is untrusted or not valid for the host name defers the recipients.
 *
 * MX delivery honours the recipient domain's MTA-STS policy (mta-sts.ts,
 * secure-transport.ts) and its MX hosts' DANE TLSA records (dane.ts) when
 * relay.mtaSts / relay.dane are on: DANE decides for a host with secure
 * TLSA records, MTA-STS enforce restricts the MX names and demands verify;
 * either way a failure defers, never falls back to plaintext.
 *
 * Egress pools (egress.ts): a job leaves from the pool recorded at
 * acceptance (quarantine when released from hold): its EHLO name, its
 * addresses round-robin per new session, sessions pooled per (pool,
 * destination) under the pool's own per-destination limit.
 *
 * Traffic shaping (providers.ts, shaping.ts), when relay.shaping is on:
 * the destination's MX host names (or relay host) name its provider; before
 * the lease the provider's group (per egress pool) admits the transaction,
 * makes it wait a moment for its rate, or defers it with `retryAt`
 * (suspended, rate or connections exhausted) without connecting. Leases
 * count against the provider's maxConnections across its domains and its
 * sessions close after its messagesPerConnection. A deferral whose reply
 * matches the provider's throttle patterns suspends the group and gets
 * `retryAt` too.
 *
 * At start, each relayhost/route that sends AUTH credentials without
 * `tls: verify` is logged once as a warning (evt config): the credentials
 * go to whoever answers, unauthenticated.
 *
 * Failures of the relayhost/route host name lookup are always deferred (a
 * configuration problem must not bounce mail); only the recipient domain's
 * own DNS answers can bounce.
 *
 * Logging: one line per recipient per attempt, evt delivery /
 * transient_failure / bounce, with the queue id, relay host[ip]:port, reply,
 * its RFC 3463 status (every deferral has one: classify.ts), total delay and
 * its breakdown (dns, pool wait, connection set-up, transfer; ms) — Postfix's
 * delays=a/b/c/d. Credentials are never put in log fields.
 */
import { isIP } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log';
import type { StateStore } from '../state/store';
import { domainOf, type RecipientOutcome } from '../envelope';
import type { RelayConfig } from './config';
import type { DeliveryAgent, DeliveryJob } from './types';
import { classifyDnsFailure, classifyError, classifyReply, describeError, enhancedStatus, failureStatus, internalDeferral, isTlsFailure, LOCAL_ERRORS, outcomeEvent } from './classify';
import { closeSession, localError, openSession, resetSession, sendOnSession, type Session, type SessionSettings, type SmtpError, type Target } from './client';
import { createMxResolver, type MxResolver } from './mx';
import { ConnectionPool, type Lease } from './pool';
import { routeFor, type NextHopPlan } from './routes';
import type { EgressPool } from './egress';
import { MtaStsPolicies } from './mta-sts';
import { DaneResolver, type TlsaLookup } from './dane';
import { Shaper, type ShapedOutcome, type ShapingGroup, type ShapingObserver } from './shaping';
import { stsSecurity, tlsResultOfError, tlsResultOfSession, type MxSecurity, type TlsPolicyObserver, type TlsResult } from './secure-transport';

const MAX_RCPTS_PER_TRANSACTION = 100;
const MAX_ADDRESSES_PER_HOST = 2;
const MAX_ADDRESSES = 5;

export interface DeliveryAgentOptions {
  /** Gateway host name: EHLO name unless relay.heloName is set. */
  hostname: string;
  logger: Logger;
  /** For tests: a resolver other than the one built from cfg.dns. */
  resolver?: MxResolver;
  /** MTA-STS outcomes (metrics; TLS-RPT). */
  tlsObserver?: TlsPolicyObserver;
  /** Shaping outcomes and suspensions per provider (metrics). */
  shapingObserver?: ShapingObserver;
  /** The gateway's state store: providers' rates and suspensions shared through it (relay.shaping.shared). */
  state?: StateStore;
}

export function createDeliveryAgent(cfg: RelayConfig, opts: DeliveryAgentOptions): DeliveryAgent {
  return new SmtpDeliveryAgent(cfg, opts);
}

interface Timing {
  start: number;
  dns: number;
  wait: number;
  conn: number;
  done: number;
}

interface AttemptLog {
  relay?: string;
  tls?: boolean;
  reused?: boolean;
  /** Addresses tried before the one used (or all of them), with why they failed. */
  skipped: string[];
  /** Egress pool, and the source address of a session opened for this attempt. */
  pool?: string;
  source?: string;
  /** Shaping provider (or other) of the destination. */
  provider?: string;
  /** The reply (or error) that made connection set-up fail, for throttle matching. */
  setupReply?: string;
}

interface Hold {
  readonly lease: Lease;
  session?: Session;
  released: boolean;
}

type Targets =
  | { ok: true; targets: Target[]; poolKey: string; hosts: string[] }
  | { ok: false; outcome: (address: string) => RecipientOutcome };

export class SmtpDeliveryAgent implements DeliveryAgent {
  private readonly dns: MxResolver;
  private readonly sts?: MtaStsPolicies;
  private readonly dane?: DaneResolver;
  private readonly pool: ConnectionPool;
  /** Provider shaping; undefined when relay.shaping is off. */
  readonly shaper?: Shaper;
  private readonly settings: SessionSettings;
  private readonly running = new Set<Promise<unknown>>();
  /** Per egress pool: how many sessions it opened (round-robin over its addresses). */
  private readonly opened = new Map<string, number>();
  private closed = false;

  constructor(
    private readonly cfg: RelayConfig,
    private readonly opts: DeliveryAgentOptions,
  ) {
    this.dns = opts.resolver ?? createMxResolver(cfg.dns);
    if (cfg.mtaSts?.enabled) this.sts = new MtaStsPolicies(cfg.mtaSts, cfg.dns, this.dns);
    if (cfg.dane?.enabled) this.dane = new DaneResolver(cfg.dane);
    if (cfg.shaping?.enabled) this.shaper = new Shaper(cfg.shaping, opts.shapingObserver, Date.now, opts.state && { store: opts.state, logger: opts.logger });
    this.pool = new ConnectionPool({
      perDestination: cfg.concurrencyPerDestination,
      total: cfg.maxConnections,
      idleMs: cfg.poolIdleMs,
      maxMessagesPerConnection: cfg.maxMessagesPerConnection,
    });
    this.settings = {
      name: cfg.heloName ?? opts.hostname,
      localAddress: cfg.sourceAddress,
      connectTimeoutMs: cfg.connectTimeoutMs,
      greetingTimeoutMs: cfg.greetingTimeoutMs,
      socketTimeoutMs: cfg.socketTimeoutMs,
      dataTimeoutMs: cfg.dataTimeoutMs,
      minDataRate: cfg.minDataRate,
      dataDoneTimeoutMs: cfg.dataDoneTimeoutMs,
    };
    this.warnUnverifiedAuth();
  }

  /** Credentials sent to a peer whose certificate is not checked: say so once, at start. */
  private warnUnverifiedAuth(): void {
    const hops = [
      ...(this.cfg.relayhost ? [{ key: 'relay.relayhost', hop: this.cfg.relayhost }] : []),
      ...[...this.cfg.routes].map(([domain, hop]) => ({ key: `relay.routes.${domain}`, hop })),
    ];
    for (const { key, hop } of hops) {
      if (!hop.auth || hop.tls === 'verify') continue;
      // Neither the user name nor the password goes into log fields.
      this.opts.logger.warn(
        { evt: 'config', key, relay: `${hop.host}:${hop.port}`, tls: hop.tls },
        'AUTH credentials are sent to a next hop whose TLS certificate is not verified; set tlsLevel: verify (and ca: if needed)',
      );
    }
  }

  deliver(job: DeliveryJob): Promise<RecipientOutcome[]> {
    if (this.closed) {
      return Promise.resolve(job.recipients.map((address) => shutdownOutcome(address)));
    }
    const p = this.deliverJob(job);
    this.running.add(p);
    p.finally(() => this.running.delete(p)).catch(() => undefined);
    return p;
  }

  /**
   * Stop taking work (new and queued-for-a-lease jobs are deferred), close
   * idle sessions, and wait for transactions in flight — bounded by the
   * socket timeout for each reply (dataDoneTimeout for the one to the
   * message's end) and by dataTimeout / minDataRate for the
   * message body; cutting them would risk duplicate deliveries.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.pool.close();
    await Promise.allSettled([...this.running]);
  }

  private async deliverJob(job: DeliveryJob): Promise<RecipientOutcome[]> {
    const byAddress = new Map<string, RecipientOutcome>();
    const groups = new Map<string, { plan: NextHopPlan; rcpts: string[] }>();
    for (const address of new Set(job.recipients)) {
      const domain = domainOf(address);
      if (domain === '') {
        byAddress.set(address, { address, kind: 'bounced', error: 'Recipient address has no domain', statusCode: '5.1.3' });
        continue;
      }
      const plan = routeFor(this.cfg, domain);
      // MX destinations are per domain; relay destinations collect every domain they serve.
      const g = groups.get(plan.key) ?? { plan, rcpts: [] };
      g.rcpts.push(address);
      groups.set(plan.key, g);
    }
    const chunks: Array<{ plan: NextHopPlan; rcpts: string[] }> = [];
    for (const g of groups.values()) {
      for (let i = 0; i < g.rcpts.length; i += MAX_RCPTS_PER_TRANSACTION) {
        chunks.push({ plan: g.plan, rcpts: g.rcpts.slice(i, i + MAX_RCPTS_PER_TRANSACTION) });
      }
    }
    const results = await Promise.all(chunks.map((c) => this.deliverChunkSafely(job, c.plan, c.rcpts)));
    for (const list of results) for (const o of list) byAddress.set(o.address, o);
    return job.recipients.map((a) => byAddress.get(a) ?? internalDeferral(a, 'internal: no outcome'));
  }

  /** A bug must not turn into a rejected deliver(): it defers the recipients instead. */
  private async deliverChunkSafely(job: DeliveryJob, plan: NextHopPlan, rcpts: string[]): Promise<RecipientOutcome[]> {
    try {
      return await this.deliverChunk(job, plan, rcpts);
    } catch (err) {
      this.opts.logger.error({ evt: 'error', queueId: job.id, err }, 'internal error during delivery');
      return rcpts.map((address) => internalDeferral(address, `Internal error: ${(err as Error).message}`));
    }
  }

  private async deliverChunk(job: DeliveryJob, plan: NextHopPlan, rcpts: string[]): Promise<RecipientOutcome[]> {
    const t: Timing = { start: Date.now(), dns: 0, wait: 0, conn: 0, done: 0 };
    const log: AttemptLog = { skipped: [] };
    const finish = (outcomes: RecipientOutcome[]): RecipientOutcome[] => {
      t.done = Date.now();
      for (const o of outcomes) this.logOutcome(job, plan, o, t, log);
      return outcomes;
    };

    const egress = this.egressFor(job);
    log.pool = egress?.name;
    const found = await this.targets(plan, egress);
    t.dns = Date.now();
    if (!found.ok) return finish(rcpts.map(found.outcome));

    const group = this.shaper?.groupFor(found.hosts, found.poolKey, egress?.name);
    if (!group) return finish(await this.leaseAndTransact(job, rcpts, found, t, log, egress));
    log.provider = group.provider;
    const admission = await this.shaper!.admit(group);
    if (!admission.ok) {
      t.wait = Date.now();
      return finish(this.shaped(group, rcpts.map((address) => shapedDeferral(address, group, admission)), 'shaped'));
    }
    try {
      return finish(await this.afterReplies(group, await this.leaseAndTransact(job, rcpts, found, t, log, egress, group), log));
    } finally {
      this.shaper!.done(group);
    }
  }

  /** Wait for a lease (the group's limits too), run the transaction, give the lease back. */
  private async leaseAndTransact(job: DeliveryJob, rcpts: string[], found: Extract<Targets, { ok: true }>, t: Timing, log: AttemptLog, egress: EgressPool | undefined, group?: ShapingGroup): Promise<RecipientOutcome[]> {
    const groupLimit = group && this.shaper!.connectionLimit(group);
    const shape = group && { ...(groupLimit !== undefined ? { group: { key: group.key, limit: groupLimit } } : {}), maxMessages: this.shaper!.messagesPerConnection(group) };
    // Sessions are pooled per (egress pool, destination): a reused session left from the same addresses.
    const lease = egress
      ? await this.pool.acquire(`${egress.name}|${found.poolKey}`, egress.maxConnectionsPerDestination, shape)
      : await this.pool.acquire(found.poolKey, undefined, shape);
    t.wait = Date.now();
    if (!lease) return rcpts.map((a) => shutdownOutcome(a));
    // What the attempt holds, so a throw (a bug) still gives the lease back and closes the session.
    const hold: Hold = { lease, released: false };
    try {
      // Suspended while this message waited for its lease: no connection is opened.
      const suspended = group && this.shaper!.suspension(group);
      if (group && suspended) {
        hold.released = true;
        this.pool.release(lease, lease.idle, lease.idle !== undefined);
        return this.shaped(group, rcpts.map((address) => shapedDeferral(address, group, suspended)), 'shaped');
      }
      return await this.transact(job, rcpts, found.targets, hold, t, log, egress, group);
    } finally {
      if (!hold.released) this.pool.release(lease, hold.session, false);
    }
  }

  /**
   * What the provider answered, for shaping: a deferral whose reply matches
   * a throttle pattern suspends the group and is retried when the
   * suspension ends (retryAt: not a failed attempt); every outcome is counted.
   */
  private async afterReplies(group: ShapingGroup, outcomes: RecipientOutcome[], log: AttemptLog): Promise<RecipientOutcome[]> {
    const shaper = this.shaper!;
    const throttle = outcomes.find((o) => o.kind === 'deferred' && shaper.isThrottle(group, log.setupReply ?? o.error));
    let retryAt: number | undefined;
    if (throttle) {
      const s = await shaper.throttled(group);
      retryAt = s.retryAt;
      if (s.fresh) {
        this.opts.logger.warn(
          { evt: 'shaping', provider: group.provider, pool: group.pool, reply: log.setupReply ?? (throttle as { error: string }).error, until: new Date(s.until).toISOString() },
          'provider throttled: suspending its queue for this pool',
        );
      }
    }
    return outcomes.map((o) => {
      if (o.kind !== 'deferred' || retryAt === undefined || !shaper.isThrottle(group, log.setupReply ?? o.error)) {
        shaper.outcome(group, o.kind);
        return o;
      }
      shaper.outcome(group, 'throttled');
      return { ...o, retryAt };
    });
  }

  /** Outcomes deferred by shaping itself (nothing was sent), counted. */
  private shaped(group: ShapingGroup, outcomes: RecipientOutcome[], kind: ShapedOutcome): RecipientOutcome[] {
    for (let i = 0; i < outcomes.length; i++) this.shaper!.outcome(group, kind);
    return outcomes;
  }

  /** Get a session (reused after RSET, or opened with fallback), run one transaction, release the lease. */
  private async transact(job: DeliveryJob, rcpts: string[], targets: Target[], hold: Hold, t: Timing, log: AttemptLog, egress: EgressPool | undefined, group?: ShapingGroup): Promise<RecipientOutcome[]> {
    const release = (s: Session | undefined, reusable: boolean): void => {
      hold.released = true;
      this.pool.release(hold.lease, s, reusable);
    };
    let session: Session | undefined;
    const idle = hold.lease.idle;
    if (idle) {
      if (await resetSession(idle)) session = idle;
      else closeSession(idle);
    }
    log.reused = session !== undefined;
    hold.session = session;
    let lastErr: { target: Target; err: SmtpError } | undefined;
    if (!session) {
      const settings = this.settingsFor(egress);
      log.source = settings.localAddress;
      for (const target of targets) {
        const r = await this.open(target, settings);
        if (r.ok) {
          session = r.session;
          hold.session = session;
          break;
        }
        lastErr = { target, err: r.err };
        log.skipped.push(`${relayName(target)}: ${describeError(r.err)}`);
      }
    }
    t.conn = Date.now();
    const tried = session?.target ?? lastErr?.target;
    if (tried?.policy) {
      const result: TlsResult | undefined = session ? tlsResultOfSession(session) : lastErr && tlsResultOfError(lastErr.err);
      if (result) this.reportTls(tried.policy, result, tried.host);
    }
    if (!session) {
      release(undefined, false);
      const err = lastErr ?? { target: targets[0], err: localError('ECONNECTION', 'No address to connect to') };
      log.relay = relayName(err.target);
      log.setupReply = describeError(err.err);
      // The text names the relay instead of quoting the reply; the status is read from the reply first.
      const wrapped = { ...err.err, message: `${relayName(err.target)}: ${describeError(err.err)}`, response: undefined, status: failureStatus(err.err) };
      return rcpts.map((a) => classifyError(a, wrapped, err.target.host));
    }
    log.relay = relayName(session.target);
    log.tls = session.secure;
    if (group) {
      // The rate's turn (and no suspension since) is taken with the session ready, so the turns are the sends.
      const turn = await this.shaper!.beforeSend(group);
      if (!turn.ok) {
        release(session, true);
        return this.shaped(group, rcpts.map((address) => shapedDeferral(address, group, turn)), 'shaped');
      }
      if (turn.waitMs > 0) await sleep(turn.waitMs);
    }

    const res = await sendOnSession(
      session,
      { from: job.mailFrom, to: rcpts, size: job.size, smtpUtf8: job.smtpUtf8 },
      job.open,
    );
    release(session, res.reusable);
    const remote = session.target.host;
    return rcpts.map((a) => {
      const reply = res.accepted.get(a);
      if (reply !== undefined) return classifyReply(a, reply, remote);
      const err = res.failed.get(a) ?? localError('EPROTOCOL', 'Recipient missing from the server reply');
      return classifyError(a, err, remote);
    });
  }

  /** Open a session; an opportunistic TLS handshake failure gets one plaintext retry. */
  private async open(target: Target, settings: SessionSettings): Promise<{ ok: true; session: Session } | { ok: false; err: SmtpError }> {
    const r = await openSession(target, settings);
    if (r.ok || target.tls !== 'opportunistic' || target.auth || !isTlsFailure(r.err)) return r;
    return openSession({ ...target, tls: 'none' }, settings);
  }

  /**
   * The egress pool a job leaves from: quarantine for mail released from
   * hold (when configured), else the pool recorded at acceptance. A pool
   * since removed from the config falls back to the default pool (or none).
   */
  private egressFor(job: DeliveryJob): EgressPool | undefined {
    const sel = this.cfg.poolSelection;
    const name = job.released && sel?.quarantine ? sel.quarantine : job.pool;
    return (name !== undefined ? this.cfg.pools.get(name) : undefined) ?? (sel?.default !== undefined ? this.cfg.pools.get(sel.default) : undefined);
  }

  /** Session settings for a new session: the pool's EHLO name and its next source address. */
  private settingsFor(egress: EgressPool | undefined): SessionSettings {
    if (!egress) return this.settings;
    const n = this.opened.get(egress.name) ?? 0;
    this.opened.set(egress.name, n + 1);
    return { ...this.settings, name: egress.heloName, localAddress: egress.addresses[n % egress.addresses.length] };
  }

  /** The ordered addresses to try for a next hop, or the DNS outcome for its recipients. */
  private async targets(plan: NextHopPlan, egress: EgressPool | undefined): Promise<Targets> {
    const usable = (addresses: readonly string[]): string[] => this.usable(addresses, egress?.addresses[0] ?? this.cfg.sourceAddress);
    if (plan.kind === 'relay') {
      const { hop } = plan;
      const res = await this.dns.resolveHost(hop.host);
      if (!res.ok) {
        // A relayhost/route that does not resolve is a configuration problem (Postfix: 4.3.5), never a bounce.
        const statusCode = res.permanent ? '4.3.5' : res.status;
        return { ok: false, outcome: (address) => ({ address, kind: 'deferred', error: `${plan.via} ${hop.host}: ${res.message}`, statusCode }) };
      }
      const addresses = usable(res.addresses).slice(0, MAX_ADDRESSES);
      if (addresses.length === 0) return { ok: false, outcome: (a) => noFamily(a, hop.host) };
      return { ok: true, poolKey: plan.key, hosts: [hop.host], targets: addresses.map((ip) => ({ host: hop.host, ip, port: hop.port, tls: hop.tls, ca: hop.ca, auth: hop.auth })) };
    }
    const [mx, security, secureMx] = await Promise.all([
      this.dns.resolveMx(plan.domain),
      this.mxSecurity(plan.domain),
      this.dane?.secureMxNames(plan.domain),
    ]);
    if (!mx.ok) return { ok: false, outcome: (address) => classifyDnsFailure(address, mx) };
    const enforce = security?.mode === 'enforce';
    const dane = await this.daneRecords(plan, mx.hosts.map((h) => h.name), secureMx);
    const targets: Target[] = [];
    const refused: string[] = [];
    for (const h of mx.hosts) {
      const tlsa = dane.get(h.name);
      // DANE takes precedence over MTA-STS for a host with secure TLSA records (RFC 8461 §2).
      if (tlsa?.kind === 'failed') {
        refused.push(h.name);
        continue;
      }
      if (tlsa?.kind === 'dane') {
        const policy = { domain: plan.domain, mechanism: 'dane' as const, mode: 'enforce' as const };
        for (const ip of usable(h.addresses).slice(0, MAX_ADDRESSES_PER_HOST)) {
          if (targets.length < MAX_ADDRESSES) targets.push({ host: h.name, ip, port: plan.port, tls: 'required', dane: tlsa.usable, policy });
        }
        continue;
      }
      if (security && !security.allows(h.name)) {
        refused.push(h.name);
        this.reportTls(security, 'validation-failure', h.name);
        // enforce: a host the policy does not list is never connected to.
        if (enforce) continue;
      }
      for (const ip of usable(h.addresses).slice(0, MAX_ADDRESSES_PER_HOST)) {
        if (targets.length >= MAX_ADDRESSES) break;
        // enforce: verify against the policy's trust store; testing: check the same way, without refusing.
        const level = enforce ? { tls: 'verify' as const, ca: this.cfg.mtaSts?.ca } : security ? { tls: plan.tls, ca: this.cfg.mtaSts?.ca ?? plan.ca, observe: true } : { tls: plan.tls, ca: plan.ca };
        targets.push({ host: h.name, ip, port: plan.port, ...level, ...(security ? { policy: security } : {}) });
      }
    }
    if (targets.length === 0 && refused.length > 0) {
      const why = `4.7.5 No usable MX host of ${plan.domain}: ${refused.map((n) => `${n} (${dane.get(n)?.kind === 'failed' ? 'DANE TLSA lookup failed' : 'not in the MTA-STS policy'})`).join(', ')}`;
      return { ok: false, outcome: (address) => ({ address, kind: 'deferred', error: why, statusCode: '4.7.5' }) };
    }
    if (targets.length === 0) return { ok: false, outcome: (a) => noFamily(a, plan.domain) };
    // Sessions opened under DANE or a policy (verified for it) are pooled apart from the others.
    const key = [dane.size > 0 ? 'dane' : '', security?.key ?? ''].filter(Boolean).join('+');
    return { ok: true, targets, hosts: mx.hosts.map((h) => h.name), poolKey: key ? `${plan.key}:${key}` : plan.key };
  }

  /**
   * TLSA records of the MX hosts, when DANE is on and the MX RRset is
   * secure (RFC 7672 §2.2.1); a failed lookup is reported and makes the
   * host unusable.
   */
  private async daneRecords(plan: { domain: string; port: number }, hosts: string[], secureMx: ReadonlySet<string> | undefined): Promise<Map<string, TlsaLookup>> {
    const out = new Map<string, TlsaLookup>();
    if (!this.dane || !secureMx) return out;
    const dane = this.dane;
    const trusted = hosts.filter((h) => secureMx.has(h));
    const found = await Promise.all(trusted.map((h) => dane.tlsa(h, plan.port)));
    trusted.forEach((h, i) => {
      if (found[i].kind === 'none') return;
      out.set(h, found[i]);
      if (found[i].kind === 'failed') this.reportTls({ domain: plan.domain, mechanism: 'dane', mode: 'enforce' }, 'dnssec-invalid', h);
    });
    return out;
  }

  /** The recipient domain's MTA-STS policy in force (undefined: none, or MTA-STS off); fetch failures are reported. */
  private async mxSecurity(domain: string): Promise<MxSecurity | undefined> {
    if (!this.sts) return undefined;
    const found = await this.sts.lookup(domain);
    const security = stsSecurity(domain, found);
    if (found.fetchError) {
      const mode = security?.mode ?? 'testing';
      this.reportTls({ mechanism: 'mta-sts', mode, domain }, found.fetchError);
    }
    return security;
  }

  private reportTls(sec: Pick<MxSecurity, 'mechanism' | 'mode' | 'domain'>, result: TlsResult, mx?: string): void {
    const e = { domain: sec.domain, mechanism: sec.mechanism, mode: sec.mode, result, mx };
    if (result !== 'success') this.opts.logger.warn({ evt: 'tls_policy', ...e }, `${sec.mechanism} ${sec.mode}: ${result}`);
    this.opts.tlsObserver?.onTlsPolicy(e);
  }

  /** With a source address configured (relay.sourceAddress or the egress pool's), only addresses of its family can be reached. */
  private usable(addresses: readonly string[], source: string | undefined): string[] {
    const family = source ? isIP(source) : 0;
    return family === 0 ? [...addresses] : addresses.filter((a) => isIP(a) === family);
  }

  private logOutcome(job: DeliveryJob, plan: NextHopPlan, o: RecipientOutcome, t: Timing, a: AttemptLog): void {
    const evt = outcomeEvent(o);
    const since = (from: number, to: number): number => (to && from ? Math.max(0, to - from) : 0);
    const fields = {
      evt,
      queueId: job.id,
      rcpt: o.address,
      via: plan.kind === 'mx' ? 'mx' : plan.via,
      relay: a.relay ?? 'none',
      tls: a.tls,
      reused: a.reused,
      pool: a.pool,
      source: a.source,
      provider: a.provider,
      retryAt: o.kind === 'deferred' && o.retryAt !== undefined ? new Date(o.retryAt).toISOString() : undefined,
      status: o.kind === 'delivered' ? enhancedStatus(o.response, 250) : o.statusCode,
      response: o.kind === 'delivered' ? o.response : o.error,
      delay: since(t.start, t.done),
      delays: { dns: since(t.start, t.dns), wait: since(t.dns, t.wait), conn: since(t.wait, t.conn), xfer: since(t.conn, t.done) },
      skipped: a.skipped.length > 0 ? a.skipped : undefined,
    };
    const msg = o.kind === 'delivered' ? 'delivered' : o.kind === 'deferred' ? 'delivery deferred' : 'recipient bounced';
    if (o.kind === 'delivered') this.opts.logger.info(fields, msg);
    else this.opts.logger.warn(fields, msg);
  }
}

function relayName(t: Target): string {
  return t.host === t.ip ? `[${t.ip}]:${t.port}` : `${t.host}[${t.ip}]:${t.port}`;
}

function shutdownOutcome(address: string): RecipientOutcome {
  return classifyError(address, localError(LOCAL_ERRORS.shutdown, 'Delivery agent is shutting down'));
}

/** A recipient deferred by shaping (nothing sent): retried at the time the shaper gave. */
function shapedDeferral(address: string, group: ShapingGroup, why: { reason: string; retryAt: number }): RecipientOutcome {
  return { address, kind: 'deferred', error: `4.7.0 ${group.provider} (pool ${group.pool}): ${why.reason}`, statusCode: '4.7.0', retryAt: why.retryAt };
}

/** 4.4.4, unable to route: every address is of the family the source address cannot reach. */
function noFamily(address: string, name: string): RecipientOutcome {
  return { address, kind: 'deferred', error: `No address of ${name} is reachable from the configured source address`, statusCode: '4.4.4' };
}
