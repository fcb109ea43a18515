/**
 * The metric catalogue: every metric the gateway exports is declared here,
 * once, with its help text (KumoMTA's rule). The pipeline only calls the
 * observer interfaces it already has (SessionObserver, PolicyObserver,
 * QueueObserver, DkimSigner.onSigned); this file turns those calls into
 * prom-client metrics on its own Registry (never the global one), plus
 * Node's process metrics (collectDefaultMetrics, prefix smarthost_).
 *
 * Label values are bounded, always: listener names and reply names come
 * from the config and the reply table, rule ids / zones / limits / netblock
 * classes from the policy files (each label also capped at a number of
 * distinct values, the rest "other"), domains only from `metrics.domains`.
 * A value that looks like an address or an IP is never used (→ "other"):
 * no user, address or IP ever becomes a label.
 *
 * Talks to: prom-client; the queue manager and spool on scrape (collect()).
 * Trusts: nothing it is given as a label value.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { domainOf, VIAS, type ClientInfo, type QueueState, type Verdict, type Via } from '../envelope';
import { SIGNALS } from '../containment/config';
import { EXTERNAL_SIGNALS } from '../containment/external';
import type { WiringObservers } from '../containment/wire';
import { RSPAMD_ACTIONS } from '../content/config';
import { FEEDBACK_RESULTS } from '../feedback/ingest';
import { normalizeDomain } from '../dkim/config';
import type { OnSigned } from '../dkim/sign';
import type { PolicyObserver } from '../policy/types';
import type { SessionObserver } from '../smtp/session';
import { REPLIES } from '../replies';
import type { QueueObserver, QueueManager } from '../spool/qmgr';
import type { Spool } from '../spool/store';
import { storageHealth } from '../spool/storage-faults';
import { TLS_MECHANISMS, TLS_MODES, TLS_RESULTS, type TlsPolicyObserver } from '../relay/secure-transport';
import { NO_POOL, SHAPED_OUTCOMES, type GroupSnapshot, type ShapingObserver } from '../relay/shaping';

export const PREFIX = 'smarthost_';
export const OTHER = 'other';

/** Safe as a label value: short, a plain token, not an address, not an IP. */
const TOKEN = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$/;
const DOTTED_QUAD = /\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}/;

export function safeLabel(v: string | undefined): string {
  if (!v || !TOKEN.test(v) || DOTTED_QUAD.test(v)) return OTHER;
  return v;
}

/**
 * A deferral's enhanced status as a label value: a class-4 code whose
 * subject is one RFC 3463 defines (0–7) and whose detail is at most 30
 * (IANA's registry of enhanced status codes has none higher), else "other".
 * The code comes from the remote server's reply: this bounds the series to
 * 8 × 31 + 1 whatever it writes.
 */
const DEFERRAL_STATUS = /^4\.[0-7]\.(?:[12]?\d|30)$/;

export function deferralStatusLabel(status: string): string {
  return DEFERRAL_STATUS.test(status) ? status : OTHER;
}

/**
 * One label's value space: an explicit allow list when the values are known
 * in advance, otherwise the first `max` safe values seen; anything else is
 * "other". Protects Prometheus from a policy file (or a bug) that would
 * otherwise create unbounded series.
 */
export class BoundedLabel {
  private readonly seen = new Set<string>();
  constructor(
    private readonly max: number,
    private readonly allowed?: ReadonlySet<string>,
  ) {}
  map(v: string | undefined): string {
    const s = safeLabel(v);
    if (s === OTHER) return OTHER;
    if (this.allowed) return this.allowed.has(s) ? s : OTHER;
    if (this.seen.has(s)) return s;
    if (this.seen.size >= this.max) return OTHER;
    this.seen.add(s);
    return s;
  }
}

export interface CatalogueOptions {
  /** Domains allowed as a `domain` label (config `metrics.domains`). */
  domains: readonly string[];
  /** Listener names (config), to start their series at zero. */
  listeners?: ReadonlyArray<{ name: string; role: string }>;
  version?: string;
  /** Process metrics (off in unit tests that build many catalogues). */
  defaultMetrics?: boolean;
  /** Shaping provider names (relay.shaping) and egress pool names (relay.pools): the provider/pool label values. */
  shapingProviders?: readonly string[];
  pools?: readonly string[];
}

const SECONDS_FAST = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const SIZE_BYTES = [1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864];
const DELIVERY_SECONDS = [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400, 86400, 432000];
const AUTH_MECHANISMS = new Set(['PLAIN', 'LOGIN', 'XOAUTH2', 'CRAM-MD5', 'pop-before-smtp']);
const DELIVERY_RESULTS = ['delivered', 'deferred', 'bounced'] as const;
const STAGES = new Set(['connect', 'auth', 'mail', 'rcpt', 'data']);
const ACTIONS = new Set(['accept', 'tempfail', 'reject', 'hold']);
const REPLY_NAMES = new Set(Object.keys(REPLIES));
const CONTAINMENT_RESPONSES = ['throttle', 'hold', 'suspend'];
const CONTAINMENT_STAGES = ['connect', 'mail', 'data'];
/** containment_actions_total's responses: quarantine is no response of a subject, only a verdict on a message. */
const CONTAINMENT_ACTIONS = [...CONTAINMENT_RESPONSES, 'quarantine'];
const SCORE_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16];
/** rspamd's actions as label values ("add header" → "add_header"), plus what is not a verdict. */
const CONTENT_ACTIONS = [...RSPAMD_ACTIONS.map((a) => a.replace(/ /g, '_')), 'error', 'skipped'];
const CONTENT_OUTCOMES = ['accept', 'hold', 'tempfail', 'reject', 'warn'];
const CONTENT_ERRORS = ['timeout', 'unavailable', 'bad_answer'];
const oneOf = (v: string, allowed: readonly string[]): string => (allowed.includes(v) ? v : OTHER);

export class MetricsCatalogue {
  readonly registry = new Registry();
  private readonly domains: BoundedLabel;
  private readonly listenerNames = new BoundedLabel(32);
  private readonly rules = new BoundedLabel(500);
  private readonly zones = new BoundedLabel(32);
  private readonly limits = new BoundedLabel(64);
  private readonly classes = new BoundedLabel(32);
  private readonly replies = new BoundedLabel(REPLY_NAMES.size, REPLY_NAMES);
  private readonly stages = new BoundedLabel(STAGES.size, STAGES);
  private readonly actions = new BoundedLabel(ACTIONS.size, ACTIONS);
  private readonly mechanisms = new BoundedLabel(8, AUTH_MECHANISMS);
  private readonly algorithms = new BoundedLabel(8);
  private readonly providers = new BoundedLabel(32);

  // ---- SMTP reception -------------------------------------------------------
  readonly connections: Counter<'listener' | 'outcome'>;
  readonly authAttempts: Counter<'listener' | 'mechanism' | 'result'>;
  readonly messagesAccepted: Counter<'listener'>;
  readonly messageSize: Histogram<'listener'>;
  readonly messagesHeld: Counter<'listener'>;
  readonly refusals: Counter<'listener' | 'stage' | 'reply'>;
  readonly interceptMessages: Counter<'netblock_class'>;
  // ---- policy --------------------------------------------------------------
  readonly verdicts: Counter<'stage' | 'rule' | 'action' | 'via'>;
  readonly dnsblLookups: Counter<'zone' | 'result'>;
  readonly dnsblLatency: Histogram<'zone'>;
  readonly quotaHits: Counter<'limit'>;
  readonly policyReloads: Counter<'result'>;
  // ---- admin actions (console and API) --------------------------------------
  readonly adminActions: Counter<'action' | 'token'>;
  readonly policyReloadSuccess: Gauge;
  // ---- accounts and containment --------------------------------------------
  readonly accountsSuspended: Gauge;
  readonly containmentResponses: Counter<'response'>;
  readonly containmentActions: Counter<'response' | 'stage'>;
  readonly containmentScore: Histogram;
  readonly containmentSignalsFired: Counter<'signal'>;
  readonly containmentExternal: Counter<'signal'>;
  // ---- feeds: complaints, content scanning, DNSBL polling --------------------
  readonly feedbackReports: Counter<'provider' | 'result'>;
  readonly contentScans: Counter<'action' | 'outcome'>;
  readonly contentScanErrors: Counter<'error'>;
  readonly contentScanLatency: Histogram;
  readonly dnsblPollChanges: Counter<'change'>;
  readonly dnsblPollAddresses: Gauge;
  // ---- queue and delivery --------------------------------------------------
  readonly queueMessages: Gauge<'state'>;
  readonly queueOldestAge: Gauge;
  readonly deliveryAttempts: Counter<'result' | 'domain'>;
  readonly deliveryDeferrals: Counter<'status'>;
  readonly deliveryLatency: Histogram<'domain'>;
  readonly expirations: Counter;
  readonly outboundTlsPolicy: Counter<'mechanism' | 'mode' | 'result' | 'domain'>;
  // ---- provider shaping (src/relay/shaping.ts) ----------------------------------
  readonly providerOutcomes: Counter<'provider' | 'pool' | 'outcome'>;
  readonly providerSuspensions: Counter<'provider' | 'pool'>;
  readonly providerSuspended: Gauge<'provider' | 'pool'>;
  readonly providerLimitFactor: Gauge<'provider' | 'pool'>;
  readonly providerRate: Gauge<'provider' | 'pool'>;
  // ---- spool storage (src/spool/storage-faults.ts) -------------------------------
  readonly storageErrors: Counter<'file' | 'op' | 'code'>;
  readonly storageDegraded: Gauge;
  readonly journalSkippedBytes: Counter;
  // ---- DKIM ----------------------------------------------------------------
  readonly dkimSignatures: Counter<'domain' | 'algorithm' | 'result'>;
  // ---- process state -------------------------------------------------------
  readonly stateDegraded: Gauge;
  readonly buildInfo: Gauge<'version' | 'node_version'>;

  private queueSource: { qmgr: QueueManager; spool: Spool } | undefined;
  private degradedSource: (() => boolean) | undefined;
  private suspendedSource: (() => number) | undefined;
  private polledSource: (() => number) | undefined;
  private shapingSource: (() => GroupSnapshot[]) | undefined;
  private readonly shapingProviderLabel: BoundedLabel;
  private readonly poolLabel: BoundedLabel;

  constructor(opts: CatalogueOptions) {
    const r = this.registry;
    this.domains = new BoundedLabel(opts.domains.length, new Set(opts.domains.map((d) => normalizeDomain(d))));
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: r, prefix: PREFIX });

    this.connections = new Counter({
      name: `${PREFIX}connections_total`,
      help: 'SMTP connections by listener and outcome (accepted: greeted with 220; refused: turned away at connect by a limit or the connect policy).',
      labelNames: ['listener', 'outcome'],
      registers: [r],
    });
    this.authAttempts = new Counter({
      name: `${PREFIX}auth_attempts_total`,
      help: 'SMTP AUTH attempts by listener, mechanism and result (ok, fail: wrong credentials, suspended: account suspended, locked: refused by the auth-failure lockout before the password was checked).',
      labelNames: ['listener', 'mechanism', 'result'],
      registers: [r],
    });
    this.messagesAccepted = new Counter({
      name: `${PREFIX}messages_accepted_total`,
      help: 'Messages committed to the spool and acknowledged with 250, by listener (held messages included).',
      labelNames: ['listener'],
      registers: [r],
    });
    this.messageSize = new Histogram({
      name: `${PREFIX}message_size_bytes`,
      help: 'Size of accepted messages as received (before DKIM and trace headers), by listener.',
      labelNames: ['listener'],
      buckets: SIZE_BYTES,
      registers: [r],
    });
    this.messagesHeld = new Counter({
      name: `${PREFIX}messages_held_total`,
      help: 'Accepted messages put in the hold queue by policy (a quota with onExceed: hold, a DNSBL hold), by listener.',
      labelNames: ['listener'],
      registers: [r],
    });
    this.refusals = new Counter({
      name: `${PREFIX}refusals_total`,
      help: 'SMTP refusals (4xx/5xx from policy) by listener, stage and reply name (src/replies.ts).',
      labelNames: ['listener', 'stage', 'reply'],
      registers: [r],
    });
    this.interceptMessages = new Counter({
      name: `${PREFIX}intercept_messages_total`,
      help: 'Messages accepted on intercept listeners (redirected port 25), by the netblock class of the subscriber ("none" outside every netblock, "other" past the label limit).',
      labelNames: ['netblock_class'],
      registers: [r],
    });

    this.adminActions = new Counter({
      name: `${PREFIX}admin_actions_total`,
      help: 'Actions written to the admin audit log, by action (console: release, delete, release-legitimate, suspend, ...; API: the route, e.g. "POST /api/queue/:id/:op") and token (operator; read: an attempt refused to the read-only token).',
      labelNames: ['action', 'token'],
      registers: [r],
    });

    this.verdicts = new Counter({
      name: `${PREFIX}policy_verdicts_total`,
      help: 'Live policy decisions by stage, rule id (from the policy files, or <stage>.default), action (accept, reject, tempfail, hold) and via (native: a smarthost listener; policy-service or milter: asked by Postfix).',
      labelNames: ['stage', 'rule', 'action', 'via'],
      registers: [r],
    });
    this.dnsblLookups = new Counter({
      name: `${PREFIX}dnsbl_lookups_total`,
      help: 'DNSBL queries sent (cache hits excluded) by zone and result (listed, clean, error, timeout).',
      labelNames: ['zone', 'result'],
      registers: [r],
    });
    this.dnsblLatency = new Histogram({
      name: `${PREFIX}dnsbl_lookup_duration_seconds`,
      help: 'DNSBL query latency by zone (timeouts included, at the deadline).',
      labelNames: ['zone'],
      buckets: SECONDS_FAST,
      registers: [r],
    });
    this.quotaHits = new Counter({
      name: `${PREFIX}quota_hits_total`,
      help: 'Volume limits that refused or held mail, by limit name (quotas.yaml).',
      labelNames: ['limit'],
      registers: [r],
    });
    this.policyReloads = new Counter({
      name: `${PREFIX}policy_reloads_total`,
      help: 'Policy reload attempts by result (ok; error: the new files were refused and the previous policy stays in force).',
      labelNames: ['result'],
      registers: [r],
    });
    this.policyReloadSuccess = new Gauge({
      name: `${PREFIX}policy_last_reload_success`,
      help: '1 when the policy files on disk are the policy in force (last load or reload succeeded), 0 after a refused reload.',
      registers: [r],
      aggregator: 'min',
    });

    this.accountsSuspended = new Gauge({
      name: `${PREFIX}accounts_suspended`,
      help: 'Accounts suspended right now (the accounts file, plus fleet-wide suspensions in fleet mode), read at scrape time.',
      registers: [r],
      aggregator: 'max',
      collect: () => {
        if (!this.suspendedSource) return;
        try {
          this.accountsSuspended.set(this.suspendedSource());
        } catch {
          // keep the last value: an unreadable accounts file is reported elsewhere
        }
      },
    });
    this.containmentResponses = new Counter({
      name: `${PREFIX}containment_responses_total`,
      help: 'Subjects (an account, or an intercept address) that containment moved to a new response (throttle, hold, suspend): one per subject and response until it lapses.',
      labelNames: ['response'],
      registers: [r],
    });
    this.containmentActions = new Counter({
      name: `${PREFIX}containment_actions_total`,
      help: 'Transactions throttled, held or refused by containment, by response and SMTP stage (connect, mail, data); response quarantine: messages of a suspicious sender (score at responses.quarantine, under every response) accepted to leave from relay.poolSelection.quarantine.',
      labelNames: ['response', 'stage'],
      registers: [r],
    });

    this.containmentScore = new Histogram({
      name: `${PREFIX}containment_score`,
      help: 'Containment score of a subject when it reached a new response (the sum of the weights of its fired signals, containment.yaml).',
      buckets: SCORE_BUCKETS,
      registers: [r],
    });
    this.containmentSignalsFired = new Counter({
      name: `${PREFIX}containment_signals_fired_total`,
      help: 'Signals that had fired when a subject reached a new response, by signal name (containment.yaml weights): which behaviour contains subjects.',
      labelNames: ['signal'],
      registers: [r],
    });
    this.containmentExternal = new Counter({
      name: `${PREFIX}containment_external_signals_total`,
      help: 'Signals fed to containment from outside the SMTP conversation: complaint (an authenticated, mapped ARF report), contentSpam (an rspamd spam verdict), dnsblListed (a DNSBL listing change of an active intercept address).',
      labelNames: ['signal'],
      registers: [r],
    });
    this.feedbackReports = new Counter({
      name: `${PREFIX}feedback_reports_total`,
      help: 'Complaint reports (ARF) received at the feedback address, by provider (feedback.yaml; "none" when no provider matched) and result: counted (authenticated and mapped: a containment signal), not_complaint, unmapped (kept), unauthenticated (kept), unknown_provider (kept), not_report (kept), retry (DNS trouble: deferred).',
      labelNames: ['provider', 'result'],
      registers: [r],
    });
    this.contentScans = new Counter({
      name: `${PREFIX}content_scans_total`,
      help: 'Messages scanned by rspamd at end of DATA, by rspamd action (no_action, greylist, add_header, rewrite_subject, soft_reject, reject; error: no usable answer in time; skipped: over maxSize) and what the gateway did (accept, hold, tempfail, reject; warn: warnOnly would have acted).',
      labelNames: ['action', 'outcome'],
      registers: [r],
    });
    this.contentScanErrors = new Counter({
      name: `${PREFIX}content_scan_errors_total`,
      help: 'rspamd scans without a usable answer, by error (timeout: the deadline passed; unavailable: no connection; bad_answer): onError (fail-open or fail-closed) applied.',
      labelNames: ['error'],
      registers: [r],
    });
    this.contentScanLatency = new Histogram({
      name: `${PREFIX}content_scan_duration_seconds`,
      help: 'rspamd scan latency at end of DATA, answers and errors (a timeout at the deadline).',
      buckets: SECONDS_FAST,
      registers: [r],
    });
    this.dnsblPollChanges = new Counter({
      name: `${PREFIX}dnsbl_poll_changes_total`,
      help: 'DNSBL listing changes found by polling the active intercept addresses (listed, delisted).',
      labelNames: ['change'],
      registers: [r],
    });
    this.dnsblPollAddresses = new Gauge({
      name: `${PREFIX}dnsbl_poll_addresses`,
      help: 'Intercept addresses currently tracked for DNSBL polling (sent mail within dnsbl.yaml poll.activeFor; bounded by poll.maxAddresses).',
      registers: [r],
      collect: () => {
        if (this.polledSource) this.dnsblPollAddresses.set(this.polledSource());
      },
    });

    this.shapingProviderLabel = new BoundedLabel(0, new Set((opts.shapingProviders ?? []).map((p) => safeLabel(p))));
    this.poolLabel = new BoundedLabel(0, new Set([NO_POOL, ...(opts.pools ?? [])].map((p) => safeLabel(p))));
    this.providerOutcomes = new Counter({
      name: `${PREFIX}provider_outcomes_total`,
      help: 'Recipients per mailbox provider (relay.shaping providers, else "other") and egress pool (else "none"), by outcome: delivered, bounced, deferred (a 4xx from the provider), throttled (a 4xx matching the provider\'s throttle replies: the provider is suspended for the pool), shaped (deferred by the gateway\'s own shaping, not sent).',
      labelNames: ['provider', 'pool', 'outcome'],
      registers: [r],
    });
    this.providerSuspensions = new Counter({
      name: `${PREFIX}provider_suspensions_total`,
      help: 'Suspensions of a provider for an egress pool after a throttle reply.',
      labelNames: ['provider', 'pool'],
      registers: [r],
    });
    const shapingGauge = (name: string, help: string, value: (g: GroupSnapshot) => number | undefined, combine: (a: number, b: number) => number): Gauge<'provider' | 'pool'> => {
      const gauge: Gauge<'provider' | 'pool'> = new Gauge({
        name: `${PREFIX}${name}`,
        help,
        labelNames: ['provider', 'pool'],
        registers: [r],
        collect: () => {
          if (!this.shapingSource) return;
          gauge.reset();
          const seen = new Map<string, { labels: { provider: string; pool: string }; v: number }>();
          for (const g of this.shapingSource()) {
            const v = value(g);
            if (v === undefined) continue;
            const labels = { provider: this.shapingProviderLabel.map(g.provider), pool: this.poolLabel.map(g.pool) };
            const key = `${labels.provider}|${labels.pool}`;
            const had = seen.get(key);
            seen.set(key, { labels, v: had ? combine(had.v, v) : v });
          }
          for (const { labels, v } of seen.values()) gauge.set(labels, v);
        },
      });
      return gauge;
    };
    this.providerSuspended = shapingGauge('provider_suspended', 'Shaping groups suspended now after a throttle reply, per provider and egress pool (1 or 0 for a named provider; for "other", how many destinations).', (g) => (g.suspended ? 1 : 0), (a, b) => a + b);
    this.providerLimitFactor = shapingGauge('provider_limit_factor', 'Fraction of the configured connections and rate in force for a provider and egress pool (1: all; halved by each throttle reply, regained a tenth per recover interval); for "other", the lowest.', (g) => g.factor, Math.min);
    this.providerRate = shapingGauge('provider_rate_limit', 'Messages per second in force for a provider and egress pool, where a rate is configured (after adaptive cuts); for "other", the lowest.', (g) => g.ratePerSecond, Math.min);

    this.queueMessages = new Gauge({
      name: `${PREFIX}queue_messages`,
      help: 'Messages in the queue by state (incoming, active, deferred, hold), read from the queue manager at scrape time.',
      labelNames: ['state'],
      registers: [r],
      collect: async () => this.collectQueue(),
    });
    this.queueOldestAge = new Gauge({
      name: `${PREFIX}queue_oldest_message_age_seconds`,
      help: 'Age of the oldest message waiting in incoming, deferred or hold (0 when the queue is empty).',
      registers: [r],
      aggregator: 'max',
      collect: async () => {
        if (!this.queueSource) return;
        const ms = await this.queueSource.qmgr.oldestAgeMs().catch(() => 0);
        this.queueOldestAge.set(ms / 1000);
      },
    });
    this.deliveryAttempts = new Counter({
      name: `${PREFIX}delivery_attempts_total`,
      help: 'Delivery attempt outcomes per recipient by result (delivered, deferred, bounced) and destination domain (metrics.domains, else "other").',
      labelNames: ['result', 'domain'],
      registers: [r],
    });
    this.deliveryDeferrals = new Counter({
      name: `${PREFIX}delivery_deferrals_total`,
      help: 'Deferred recipients by the deferral\'s enhanced status code (4.4.1 no connection, 4.4.2 connection lost, 4.4.3 DNS, 4.7.1 greylisted, 4.7.4/4.7.5 TLS…; the log line\'s status), else "other".',
      labelNames: ['status'],
      registers: [r],
    });
    this.deliveryLatency = new Histogram({
      name: `${PREFIX}delivery_duration_seconds`,
      help: 'Time from acceptance (the 250) to delivery, per delivered recipient, by destination domain (metrics.domains, else "other").',
      labelNames: ['domain'],
      buckets: DELIVERY_SECONDS,
      registers: [r],
    });
    this.expirations = new Counter({
      name: `${PREFIX}expired_recipients_total`,
      help: 'Recipients bounced because their message outlived its maximum queue lifetime.',
      registers: [r],
    });
    this.outboundTlsPolicy = new Counter({
      name: `${PREFIX}outbound_tls_policy_total`,
      help: 'Delivery attempts (and policy fetches) under a recipient domain\'s MTA-STS policy or DANE TLSA records, by mechanism (mta-sts, dane), mode (enforce, testing), TLS-RPT result type (success, starttls-not-supported, certificate-*, validation-failure, sts-*) and domain (metrics.domains, else "other").',
      labelNames: ['mechanism', 'mode', 'result', 'domain'],
      registers: [r],
    });

    this.dkimSignatures = new Counter({
      name: `${PREFIX}dkim_signatures_total`,
      help: 'DKIM signatures made, by signing domain (metrics.domains, else "other"), algorithm and result (ok, error).',
      labelNames: ['domain', 'algorithm', 'result'],
      registers: [r],
    });

    this.storageErrors = new Counter({
      name: `${PREFIX}spool_storage_errors_total`,
      help: 'Failed writes and syncs of spool files, by file (journal: a journal segment, queue: a queue file), op (write, sync) and error code (ENOSPC, EDQUOT, EIO, EROFS, other). The message concerned got a 4xx.',
      labelNames: ['file', 'op', 'code'],
      registers: [r],
    });
    this.storageDegraded = new Gauge({
      name: `${PREFIX}spool_storage_degraded`,
      help: 'Whether spool writes are failing: 1 from a failed spool write or sync until a write and sync succeed again (/readyz is red meanwhile), else 0.',
      registers: [r],
      aggregator: 'max',
      collect: () => this.storageDegraded.set(storageHealth.current() ? 1 : 0),
    });
    this.journalSkippedBytes = new Counter({
      name: `${PREFIX}spool_journal_skipped_bytes_total`,
      help: 'Bytes of acceptance-journal segments that recovery read past because they formed no valid record (a write cut by a crash or a failed write).',
      registers: [r],
    });

    this.stateDegraded = new Gauge({
      name: `${PREFIX}state_degraded`,
      help: '1 while the shared state store (Redis) is unreachable and the gateway runs degraded, else 0.',
      registers: [r],
      aggregator: 'max',
      collect: () => {
        if (this.degradedSource) this.stateDegraded.set(this.degradedSource() ? 1 : 0);
      },
    });
    this.buildInfo = new Gauge({
      name: `${PREFIX}build_info`,
      help: 'Always 1; the labels say which smarthost and Node.js versions run.',
      labelNames: ['version', 'node_version'],
      registers: [r],
      aggregator: 'max',
    });
    this.buildInfo.set({ version: safeLabel(opts.version ?? 'unknown'), node_version: process.versions.node }, 1);
    this.stateDegraded.set(0);
    this.policyReloadSuccess.set(1);

    // Series that alerts and ratios divide by start at zero, so a rate is 0 rather than absent.
    for (const result of ['ok', 'error']) this.policyReloads.inc({ result }, 0);
    for (const result of DELIVERY_RESULTS) for (const domain of [...opts.domains, OTHER]) this.deliveryAttempts.inc({ result, domain: this.domains.map(domain) }, 0);
    this.expirations.inc(0);
    this.journalSkippedBytes.inc(0);
    // The outbound-TLS alert compares enforce-mode failures: its series exist before the first one.
    for (const mechanism of ['mta-sts', 'dane']) for (const result of ['success', 'validation-failure']) this.outboundTlsPolicy.inc({ mechanism, mode: 'enforce', result, domain: OTHER }, 0);
    for (const file of ['journal', 'queue']) for (const op of ['write', 'sync']) this.storageErrors.inc({ file, op, code: 'ENOSPC' }, 0);
    for (const response of CONTAINMENT_RESPONSES) this.containmentResponses.inc({ response }, 0);
    // The stages where each response acts (src/containment/containment.ts verdict()).
    for (const [response, stage] of [['throttle', 'mail'], ['throttle', 'data'], ['hold', 'data'], ['quarantine', 'data'], ['suspend', 'connect'], ['suspend', 'mail']] as const) {
      this.containmentActions.inc({ response, stage }, 0);
    }
    for (const signal of EXTERNAL_SIGNALS) this.containmentExternal.inc({ signal }, 0);
    for (const signal of SIGNALS) this.containmentSignalsFired.inc({ signal }, 0);
    for (const result of FEEDBACK_RESULTS) this.feedbackReports.inc({ provider: 'none', result }, 0);
    for (const outcome of CONTENT_OUTCOMES) this.contentScans.inc({ action: 'reject', outcome }, 0);
    for (const error of CONTENT_ERRORS) this.contentScanErrors.inc({ error }, 0);
    for (const change of ['listed', 'delisted']) this.dnsblPollChanges.inc({ change }, 0);
    this.dnsblPollAddresses.set(0);
    // The provider-deferral alert divides by these: every configured provider and pool starts at zero.
    for (const provider of [...(opts.shapingProviders ?? []), OTHER]) {
      for (const pool of [NO_POOL, ...(opts.pools ?? [])]) {
        const labels = { provider: this.shapingProviderLabel.map(provider), pool: this.poolLabel.map(pool) };
        for (const outcome of SHAPED_OUTCOMES) this.providerOutcomes.inc({ ...labels, outcome }, 0);
        this.providerSuspensions.inc(labels, 0);
      }
    }
    for (const l of opts.listeners ?? []) {
      const listener = this.listenerNames.map(l.name);
      for (const outcome of ['accepted', 'refused']) this.connections.inc({ listener, outcome }, 0);
      this.messagesAccepted.inc({ listener }, 0);
      this.messagesHeld.inc({ listener }, 0);
      if (l.role === 'submission') {
        for (const mechanism of ['PLAIN', 'LOGIN']) for (const result of ['ok', 'fail', 'suspended', 'locked']) this.authAttempts.inc({ listener, mechanism, result }, 0);
      }
    }
  }

  /** The queue gauges read the queue manager (and the hold directory) on every scrape. */
  bindQueue(qmgr: QueueManager, spool: Spool): void {
    this.queueSource = { qmgr, spool };
  }

  private async collectQueue(): Promise<void> {
    if (!this.queueSource) return;
    const d = this.queueSource.qmgr.depth();
    const hold = await this.queueSource.spool.list('hold').then((l) => l.length, () => 0);
    const depth: Record<QueueState, number> = { ...d, hold };
    for (const [state, n] of Object.entries(depth)) this.queueMessages.set({ state }, n);
  }

  domainLabel(domain: string | undefined): string {
    // The configured list is lower-case A-labels (metrics/config.ts): compare like with like.
    return this.domains.map(domain ? normalizeDomain(domain) : undefined);
  }

  /** smarthost_state_degraded: set by the state store's health (Redis up / down). */
  setDegraded(degraded: boolean): void {
    this.stateDegraded.set(degraded ? 1 : 0);
  }

  /** Or read it on every scrape (the state runtime's degraded()). */
  watchDegraded(source: () => boolean): void {
    this.degradedSource = source;
  }

  /** smarthost_accounts_suspended: read on every scrape (a count over the account store). */
  watchSuspended(source: () => number): void {
    this.suspendedSource = source;
    this.accountsSuspended.set(0);
  }

  /** Known DNSBL zones: start their lookup series at zero (error-ratio alerts then have a denominator). */
  knownZones(zones: Iterable<string>): void {
    for (const z of zones) {
      const zone = this.zones.map(z);
      for (const result of ['listed', 'clean', 'error', 'timeout']) this.dnsblLookups.inc({ zone, result }, 0);
    }
  }

  readonly session: SessionObserver = {
    connection: (listener, outcome) => this.connections.inc({ listener: this.listenerNames.map(listener), outcome }),
    auth: (listener, mechanism, result) =>
      this.authAttempts.inc({ listener: this.listenerNames.map(listener), mechanism: this.mechanisms.map(mechanism), result }),
    // Verdicts are counted from the policy engine's own report (PolicyObserver), once.
    accepted: (listener, size, held, client?: ClientInfo) => {
      const l = this.listenerNames.map(listener);
      this.messagesAccepted.inc({ listener: l });
      this.messageSize.observe({ listener: l }, size);
      if (held) this.messagesHeld.inc({ listener: l });
      if (client?.role === 'intercept') this.interceptMessages.inc({ netblock_class: this.classes.map(client.netblockClass ?? 'none') });
    },
    rejected: (listener, stage, reply) =>
      this.refusals.inc({ listener: this.listenerNames.map(listener), stage: this.stages.map(stage), reply: this.replies.map(reply) }),
  };

  readonly policy: PolicyObserver = {
    verdict: (v: Verdict, via?: Via) =>
      this.verdicts.inc({ stage: this.stages.map(v.stage), rule: this.rules.map(v.rule), action: this.actions.map(v.action), via: via && VIAS.includes(via) ? via : 'native' }),
    dnsblLookup: (z, result, ms) => {
      const zone = this.zones.map(z);
      this.dnsblLookups.inc({ zone, result });
      this.dnsblLatency.observe({ zone }, ms / 1000);
    },
    quotaHit: (limit) => this.quotaHits.inc({ limit: this.limits.map(limit) }),
    reload: (result) => {
      this.policyReloads.inc({ result });
      this.policyReloadSuccess.set(result === 'ok' ? 1 : 0);
    },
  };

  readonly queue: QueueObserver = {
    outcome: (e) => {
      const domain = this.domainLabel(domainOf(e.outcome.address));
      this.deliveryAttempts.inc({ result: e.outcome.kind, domain });
      if (e.outcome.kind === 'deferred') this.deliveryDeferrals.inc({ status: deferralStatusLabel(e.outcome.statusCode) });
      if (e.outcome.kind === 'delivered') this.deliveryLatency.observe({ domain }, Math.max(0, e.delayMs) / 1000);
    },
    expired: (_id, recipients) => this.expirations.inc(recipients),
  };

  /** smarthost_dnsbl_poll_addresses: read on every scrape. */
  watchPolled(source: () => number): void {
    this.polledSource = source;
  }

  /**
   * For wireContainment({ observer }): containment and its feeds. Bounded
   * labels only: response, stage, signal, provider name, rspamd action;
   * never the subject, account or IP.
   */
  readonly feeds: WiringObservers = {
    event: (e) => {
      this.containmentResponses.inc({ response: oneOf(e.response, CONTAINMENT_RESPONSES) });
      this.containmentScore.observe(e.score);
      for (const signal of e.fired) this.containmentSignalsFired.inc({ signal: oneOf(signal, SIGNALS) });
    },
    contained: (response, stage) => this.containmentActions.inc({ response: oneOf(response, CONTAINMENT_ACTIONS), stage: oneOf(stage, CONTAINMENT_STAGES) }),
    external: (signal) => this.containmentExternal.inc({ signal: oneOf(signal, EXTERNAL_SIGNALS) }),
    report: (provider, result) => this.feedbackReports.inc({ provider: provider === 'none' ? 'none' : this.providers.map(provider), result: oneOf(result, FEEDBACK_RESULTS) }),
    scan: (s) => {
      this.contentScans.inc({ action: oneOf(s.action.replace(/ /g, '_'), CONTENT_ACTIONS), outcome: oneOf(s.outcome, CONTENT_OUTCOMES) });
      if (s.error) this.contentScanErrors.inc({ error: oneOf(s.error, CONTENT_ERRORS) });
      if (s.action !== 'skipped') this.contentScanLatency.observe(s.ms / 1000);
      // The content check is a data-stage policy decision like the engine's: counted with its rule.
      if (s.rule) this.policy.verdict?.({ stage: 'data', rule: s.rule, action: s.outcome === 'warn' ? 'accept' : s.outcome });
    },
    change: (to) => this.dnsblPollChanges.inc({ change: to }),
  };

  /** For createDeliveryAgent({ tlsObserver }): closed sets only; the domain only when listed in metrics.domains. */
  readonly outboundTls: TlsPolicyObserver = {
    onTlsPolicy: (e) =>
      this.outboundTlsPolicy.inc({
        mechanism: oneOf(e.mechanism, TLS_MECHANISMS),
        mode: oneOf(e.mode, TLS_MODES),
        result: oneOf(e.result, TLS_RESULTS),
        domain: this.domainLabel(e.domain),
      }),
  };

  /** For createDeliveryAgent({ shapingObserver }): provider and pool labels from the config only. */
  readonly shaping: ShapingObserver = {
    onShapedOutcome: (provider, pool, outcome) =>
      this.providerOutcomes.inc({ provider: this.shapingProviderLabel.map(provider), pool: this.poolLabel.map(pool), outcome: SHAPED_OUTCOMES.includes(outcome) ? outcome : 'deferred' }),
    onSuspension: (provider, pool) => this.providerSuspensions.inc({ provider: this.shapingProviderLabel.map(provider), pool: this.poolLabel.map(pool) }),
  };

  /** The provider gauges read the delivery agent's shaping groups on every scrape. */
  watchShaping(source: () => GroupSnapshot[]): void {
    this.shapingSource = source;
  }

  readonly onSigned: OnSigned = (domain, algorithm, result) =>
    this.dkimSignatures.inc({ domain: this.domainLabel(domain), algorithm: this.algorithms.map(algorithm), result });

  /** The exposition of this process alone. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
