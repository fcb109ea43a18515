/**
 * Wiring containment and the feeds around it into the gateway (app.ts):
 *   - containment.yaml → a Containment, the policy hooks wrapped
 *     (ContainedHooks), relay outcomes fed back (a remote 5xx per
 *     recipient), the abuse desk's webhook;
 *   - feedback.yaml → the complaint address (FeedbackHooks at RCPT, the
 *     delivery agent consuming reports locally) and the sender token;
 *   - content.yaml → the end-of-DATA scan (EndOfData, which the session
 *     calls) with rspamd;
 *   - dnsbl.yaml poll → the DNSBL poller of active intercept addresses.
 * The three files are PolicyRuntime companions: validated with the policy
 * files at start and on every reload (SIGHUP, `smarthost reload`, admin
 * reload), an invalid one refuses the whole reload and the last good set
 * stays in force. A reload builds a new Containment over the same state
 * store, so signals, scores and sticky responses carry over.
 *
 * With no containment.yaml, or `enabled: false`, the hooks are left as they
 * are and nothing is recorded; the feeds still run (their signals are then
 * ignored by containment, and counted by their own metrics).
 *
 * Talks to: containment, the feeds, the queue manager (as an observer).
 */
import type { AccountStore } from '../accounts/store';
import type { ClientInfo } from '../envelope';
import type { Logger } from '../log';
import { EndOfData, type ContentObserver } from '../content/end-of-data';
import { loadContent, type ContentConfig } from '../content/config';
import { dnsLookup, type DnsLookup } from '../feedback/authenticate';
import path from 'node:path';
import { ConfigError } from '../config/validate';
import { FEEDBACK_FILE, loadFeedback, type FeedbackConfig } from '../feedback/config';
import { Feedback, FeedbackHooks, type FeedbackObserver } from '../feedback/ingest';
import { ImapIntake } from '../feedback/imap-intake';
import { readFileSync } from 'node:fs';
import { KeptReports } from '../feedback/keep';
import { SenderTokens } from '../feedback/token';
import { prefixOf } from '../policy/ip';
import type { PolicyEngine } from '../policy/engine';
import { planFor } from '../policy/quotas';
import type { PolicyRuntime } from '../policy/runtime';
import type { PolicyHooks } from '../policy/types';
import type { DeliveryAgent } from '../relay/types';
import type { QueueObserver } from '../spool/qmgr';
import type { StateStore } from '../state/store';
import { loadContainment, type ContainmentConfig } from './config';
import { ContainedHooks, Containment, type ContainmentEvent, type ContainmentObserver } from './containment';
import { DnsblPoller, type PollObserver } from './dnsbl-poll';
import type { ExternalResult, ExternalSignal, ExternalSubject } from './external';
import { WebhookNotifier } from './notifier';

export interface ContainmentWiring {
  /** The Containment in force (a reload replaces it). */
  readonly containment: Containment;
  /** The hooks sessions ask: the engine's, with the feedback address and containment after each decision. */
  wrap(inner: () => PolicyHooks): () => PolicyHooks;
  /** Feed for qmgr.observe: recipients refused by remote servers. */
  readonly queueObserver: QueueObserver;
  /** The end-of-DATA stage the sessions call (content scan, sender token, intercept addresses). */
  readonly endOfData: EndOfData;
  /** The delivery agent with the complaint address consumed locally. */
  agent(inner: DeliveryAgent): DeliveryAgent;
  /** Subjects containment responded to in this process (bounded), newest first. */
  recent(): readonly RecentSubject[];
  readonly poller: DnsblPoller;
  readonly feedback: Feedback;
  /** Complaint reports from feedback.yaml's IMAP mailbox (polled every interval once started). */
  readonly imapIntake: ImapIntake;
  start(): void;
  stop(): Promise<void>;
}

export interface RecentSubject {
  readonly subject: string;
  readonly response: string;
  readonly score: number;
  readonly fired: readonly string[];
  readonly at: string;
}

export interface WiringObservers extends ContainmentObserver, FeedbackObserver, ContentObserver, PollObserver {
  /** A signal fed in from outside the SMTP conversation. */
  external?(signal: ExternalSignal): void;
}

const RECENT = 1000;

export function wireContainment(deps: {
  readonly runtime: PolicyRuntime;
  readonly store: StateStore;
  readonly logger: Logger;
  readonly accounts: AccountStore;
  readonly hostname: string;
  readonly baseDir: string;
  readonly listeners: readonly { name: string; role: string }[];
  readonly clock?: () => number;
  readonly observer?: WiringObservers;
}): ContainmentWiring {
  const policy = (): PolicyEngine => deps.runtime.current();
  const planOf = (client: ClientInfo, account?: import('../accounts/store').Account): string | undefined => {
    const p = policy().policy;
    if (client.role === 'submission') {
      const a = account ?? (client.user ? deps.accounts.get(client.user) : undefined);
      return a ? planFor(p.quotas, { account: a }) : undefined;
    }
    return planFor(p.quotas, { cls: p.netblocks.match(client.ip)?.cls ?? '' });
  };
  const recent = new Map<string, RecentSubject>();
  const remember = (e: ContainmentEvent) => {
    recent.delete(e.subject);
    recent.set(e.subject, { subject: e.subject, response: e.response, score: e.score, fired: e.fired, at: e.at });
    if (recent.size > RECENT) recent.delete(recent.keys().next().value as string);
  };
  const observer: ContainmentObserver = {
    event: (e) => {
      remember(e);
      deps.observer?.event?.(e);
    },
    contained: (r, s) => deps.observer?.contained?.(r, s),
  };

  // One Containment per version of containment.yaml, over the same store (signals carry over).
  let current: { c: Containment; hooks?: ContainedHooks; notifier?: WebhookNotifier } | undefined;
  let wrappedInner: (() => PolicyHooks) | undefined;
  const install = (cfg: ContainmentConfig) => {
    current?.notifier?.stop();
    const notifier = cfg.webhook ? new WebhookNotifier({ ...cfg.webhook, logger: deps.logger }) : undefined;
    const c = new Containment(cfg, {
      store: deps.store,
      logger: deps.logger,
      ...(deps.clock ? { clock: deps.clock } : {}),
      accounts: deps.accounts,
      ...(notifier ? { notifier } : {}),
      observer,
      planOf,
      ipSubject: (ip) => prefixOf(ip, policy().policy.quotas.ipv6Prefix) ?? ip,
    });
    current = { c, ...(notifier ? { notifier } : {}), ...(wrappedInner ? { hooks: new ContainedHooks(wrappedInner, c) } : {}) };
  };
  deps.runtime.attach({ load: loadContainment, apply: install });
  const cur = (): Containment => current!.c;
  const external = async (who: ExternalSubject, signal: ExternalSignal, n = 1): Promise<ExternalResult> => {
    deps.observer?.external?.(signal);
    return cur().external(who, signal, n);
  };

  // ---- feedback.yaml: the complaint address and the sender token ----
  let fb: { cfg: FeedbackConfig; tokens?: SenderTokens; lookup: DnsLookup; kept: KeptReports; imapPassword?: string } | undefined;
  deps.runtime.attach({
    load: (dir) => {
      const cfg = loadFeedback(dir, { hostname: deps.hostname, baseDir: deps.baseDir, listeners: deps.listeners });
      if (!cfg) return undefined;
      let tokens: SenderTokens | undefined;
      if (cfg.token.enabled) {
        try {
          tokens = SenderTokens.fromFile(cfg.token.keyFile, cfg.token.maxAgeMs, deps.clock);
        } catch (err) {
          throw new ConfigError(path.join(dir, FEEDBACK_FILE), 'senderToken.keyFile', (err as Error).message);
        }
      }
      let imapPassword: string | undefined;
      if (cfg.imap) {
        try {
          imapPassword = readFileSync(cfg.imap.passwordFile, 'utf8').trim();
        } catch (err) {
          throw new ConfigError(path.join(dir, FEEDBACK_FILE), 'imap.passwordFile', (err as Error).message);
        }
      }
      return { cfg, ...(tokens ? { tokens } : {}), lookup: dnsLookup(cfg.dns.servers, cfg.dns.timeoutMs), kept: new KeptReports(cfg.keep.dir, cfg.keep.max), ...(imapPassword !== undefined ? { imapPassword } : {}) };
    },
    apply: (v) => {
      fb = v;
    },
  });
  const feedback = new Feedback({
    config: () => fb?.cfg,
    tokens: () => fb?.tokens,
    lookup: () => fb!.lookup,
    kept: () => fb?.kept,
    complaint: (who) => external(who, 'complaint'),
    hostname: deps.hostname,
    logger: deps.logger,
    ...(deps.observer ? { observer: deps.observer } : {}),
  });

  const imapIntake = new ImapIntake({
    mailbox: () => (fb?.cfg.imap && fb.imapPassword !== undefined ? { box: fb.cfg.imap, password: fb.imapPassword } : undefined),
    consume: (message, id, mailFrom) => feedback.consume(message, id, mailFrom),
    logger: deps.logger,
  });

  // ---- content.yaml and the end of DATA ----
  let content: ContentConfig | undefined;
  deps.runtime.attach({ load: (dir) => loadContent(dir, deps.listeners), apply: (v) => (content = v) });
  const poller = new DnsblPoller({
    policy,
    signal: (ip, listed) => external({ ip }, 'dnsblListed', listed ? 1 : 0),
    logger: deps.logger,
    ...(deps.clock ? { clock: deps.clock } : {}),
    ...(deps.observer ? { observer: deps.observer } : {}),
  });
  const endOfData = new EndOfData({
    content: () => content,
    planOf,
    signal: (who, signal) => external(who, signal),
    senderHeader: (client, queueId, recipients) => {
      const t = fb?.tokens;
      if (!t || (client.role !== 'submission' && client.role !== 'intercept')) return undefined;
      // Reports to our own complaint address are not subscribers' mail.
      if (recipients.length > 0 && recipients.every((r) => feedback.isFeedbackAddress(r))) return undefined;
      const subject = client.role === 'submission' && client.user ? { kind: 'account' as const, id: client.user.toLowerCase() } : client.role === 'intercept' ? { kind: 'ip' as const, id: client.ip } : undefined;
      return subject ? `${fb!.cfg.token.header}: ${t.seal(subject, queueId)}\r\n` : undefined;
    },
    interceptSeen: (ip, listener) => poller.seen(ip, listener),
    logger: deps.logger,
    ...(deps.observer ? { observer: deps.observer } : {}),
  });

  return {
    get containment() {
      return cur();
    },
    wrap: (inner) => {
      const withFeedback = new FeedbackHooks(inner, feedback);
      wrappedInner = () => withFeedback;
      current = { ...current!, hooks: new ContainedHooks(wrappedInner, current!.c) };
      return () => (current!.c.enabled && current!.hooks ? current!.hooks : withFeedback);
    },
    queueObserver: {
      outcome: (e) => {
        if (!cur().enabled || e.outcome.kind !== 'bounced' || e.envelope.isBounce) return;
        cur().relayBounced(e.envelope.client, 1).catch((err: Error) => deps.logger.error({ evt: 'error', err }, 'containment feedback failed'));
      },
    },
    endOfData,
    agent: (inner) => feedback.agent(inner),
    recent: () => [...recent.values()].reverse(),
    poller,
    feedback,
    imapIntake,
    start: () => {
      poller.start();
      imapIntake.start();
    },
    stop: async () => {
      poller.stop();
      await imapIntake.stop();
      current?.notifier?.stop();
    },
  };
}
