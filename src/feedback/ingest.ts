/**
 * Complaint feedback loops: the gateway's own report address.
 *
 * Receiving: a mailbox provider sends its ARF reports to the address of
 * feedback.yaml (fbl@<hostname> by default) on a public listener (an mx
 * listener by default). FeedbackHooks accepts RCPT to exactly that address
 * on those listeners (rule "feedback.address") and leaves every other
 * recipient to the policy engine, so the mx listener's relay gate still
 * refuses the rest: the address is local, never a relay. The message goes
 * through the spool like any other (the 250 rests on synced data) and the
 * queue manager hands it to FeedbackAgent, which consumes the report
 * locally instead of relaying it (Postfix: a local address piped to the
 * FBL processor). A temporary failure (DNS while verifying DKIM) defers it
 * and the queue retries.
 *
 * Consuming one report: parse it (arf.ts), authenticate it against the
 * configured providers (authenticate.ts), find the topmost sender token in
 * the original's header section (token.ts), and, when all of that holds,
 * pass one complaint about the subject to containment (its `external`
 * entry point). Everything else is counted by result and kept (keep.ts).
 *
 * Talks to: the spool (through the queue manager's delivery jobs), DNS,
 * containment, the filesystem (kept reports). Trusts: a report only after
 * authenticate.ts, a subject only from a token it sealed itself.
 */
import type { ExternalResult, ExternalSubject } from '../containment/external';
import type { RecipientOutcome, Verdict } from '../envelope';
import type { Logger } from '../log';
import type { AuthVerdict, ConnectDecision, ConnectFacts, ConnectionSlot, DataFacts, DisconnectFacts, PolicyHooks, RcptFacts, TransactionFacts } from '../policy/types';
import { internalDeferral } from '../relay/classify';
import type { DeliveryAgent, DeliveryJob } from '../relay/types';
import { parseArf, type ArfReport } from './arf';
import { authenticateReport, type DnsLookup } from './authenticate';
import type { FeedbackConfig } from './config';
import type { KeptReports } from './keep';
import type { SenderTokens } from './token';

export const FEEDBACK_RESULTS = ['counted', 'not_complaint', 'unmapped', 'unauthenticated', 'unknown_provider', 'not_report', 'retry'] as const;
export type FeedbackResult = (typeof FEEDBACK_RESULTS)[number];

export interface FeedbackObserver {
  /** One report consumed (or deferred: 'retry'); `provider` is a configured name or "none". */
  report?(provider: string, result: FeedbackResult): void;
}

export interface FeedbackDeps {
  readonly config: () => FeedbackConfig | undefined;
  readonly tokens: () => SenderTokens | undefined;
  readonly lookup: () => DnsLookup;
  readonly kept: () => KeptReports | undefined;
  /** Containment's entry point (Containment.external). */
  readonly complaint: (who: ExternalSubject) => Promise<ExternalResult>;
  readonly hostname: string;
  readonly logger: Logger;
  readonly observer?: FeedbackObserver;
}

export interface Consumed {
  readonly result: FeedbackResult;
  readonly provider?: string;
  readonly subject?: string;
  readonly response?: string;
  readonly detail?: string;
  readonly keptAt?: string;
  /** With 'retry': the RFC 3463 status the report's deferral carries. */
  readonly status?: string;
}

const isFeedbackRcpt = (cfg: FeedbackConfig | undefined, rcpt: string): boolean => Boolean(cfg?.addresses.has(rcpt.toLowerCase()));

/** The topmost token header of the original (the one this gateway prepended). */
function tokenOf(report: ArfReport, header: string): string | undefined {
  const name = header.toLowerCase();
  return report.originalHeaders?.find((h) => h.key === name)?.value;
}

export class Feedback {
  constructor(private readonly deps: FeedbackDeps) {}

  accepts(listener: { name: string; role: string }, rcpt: string): boolean {
    const cfg = this.deps.config();
    return Boolean(cfg && (cfg.listeners.has(listener.name) || cfg.listeners.has(listener.role)) && isFeedbackRcpt(cfg, rcpt));
  }

  isFeedbackAddress(rcpt: string): boolean {
    return isFeedbackRcpt(this.deps.config(), rcpt);
  }

  /** Consume one report: the whole message as spooled (our Received: on top names the client), its envelope sender. */
  async consume(message: Buffer, queueId: string, mailFrom: string): Promise<Consumed> {
    const cfg = this.deps.config();
    // 4.3.5, system incorrectly configured: the address is still routed here without its config.
    if (!cfg) return { result: 'retry', detail: 'feedback.yaml is no longer in force', status: '4.3.5' };
    const done = async (c: Consumed, keep?: string): Promise<Consumed> => {
      const keptAt = keep ? await this.deps.kept()?.keep(keep, queueId, message).catch((err: Error) => {
        this.deps.logger.error({ evt: 'feedback', queueId, err: err.message }, 'cannot keep report');
        return undefined;
      }) : undefined;
      this.deps.observer?.report?.(c.provider ?? 'none', c.result);
      const line = { evt: 'feedback', queueId, result: c.result, provider: c.provider, subject: c.subject, response: c.response, detail: c.detail, keptAt };
      if (c.result === 'counted') this.deps.logger.warn(line, 'complaint counted');
      else this.deps.logger.info(line, 'feedback report not counted');
      return { ...c, ...(keptAt ? { keptAt } : {}) };
    };
    let report: ArfReport;
    try {
      report = await parseArf(message);
    } catch (err) {
      return done({ result: 'not_report', detail: `MIME parser: ${(err as Error).message}` }, 'not_report');
    }
    const auth = await authenticateReport(message, report.from, cfg.providers, { mailFrom, mta: this.deps.hostname }, this.deps.lookup());
    if (!auth.ok) {
      // 4.4.3: DNS failed while verifying the report's signature.
      if (auth.reason === 'temporary') return { result: 'retry', provider: auth.provider?.name, detail: auth.detail, status: '4.4.3' };
      return done({ result: auth.reason, ...(auth.provider ? { provider: auth.provider.name } : {}), detail: auth.detail }, auth.reason);
    }
    const provider = auth.provider.name;
    const type = report.feedbackType ?? (auth.provider.bareOriginal && report.originalHeaders ? 'abuse' : undefined);
    if (!type) return done({ result: 'not_report', provider, detail: 'no message/feedback-report part' }, 'not_report');
    if (!cfg.complaintTypes.has(type)) return done({ result: 'not_complaint', provider, detail: `Feedback-Type: ${type}` });
    const token = tokenOf(report, cfg.token.header);
    const tokens = this.deps.tokens();
    const opened = token && tokens ? tokens.open(token) : undefined;
    if (!opened || 'invalid' in opened) {
      const why = !report.originalHeaders ? 'the original message is not attached' : !token ? `no ${cfg.token.header} header in the original` : !tokens ? 'sender tokens are off' : `token ${opened && 'invalid' in opened ? opened.invalid : 'unreadable'}`;
      return done({ result: 'unmapped', provider, detail: why }, 'unmapped');
    }
    const who: ExternalSubject = opened.kind === 'account' ? { account: opened.id } : { ip: opened.id };
    const r = await this.deps.complaint(who);
    return done({ result: 'counted', provider, subject: r.subject, response: r.response, detail: `Feedback-Type: ${type}, original queue id ${opened.queueId}, DKIM d=${auth.dkimDomain}, DMARC ${auth.dmarc}` });
  }

  /** The delivery agent with the report address consumed locally (never relayed). */
  agent(inner: DeliveryAgent): DeliveryAgent {
    return {
      deliver: async (job: DeliveryJob): Promise<RecipientOutcome[]> => {
        const mine = job.recipients.filter((r) => this.isFeedbackAddress(r));
        if (mine.length === 0) return inner.deliver(job);
        const rest = job.recipients.filter((r) => !this.isFeedbackAddress(r));
        const relayed = rest.length > 0 ? await inner.deliver({ ...job, recipients: rest }) : [];
        let outcome: (a: string) => RecipientOutcome;
        try {
          const message = await readAll(job.open());
          const c = await this.consume(message, job.id, job.mailFrom);
          outcome =
            c.result === 'retry'
              ? (a) => ({ address: a, kind: 'deferred', error: `feedback: ${c.detail ?? 'temporary failure'}`, statusCode: c.status ?? '4.3.0' })
              : (a) => ({ address: a, kind: 'delivered', remoteMta: 'feedback', response: `250 2.0.0 report ${c.result}` });
          if (c.result === 'retry') this.deps.observer?.report?.(c.provider ?? 'none', 'retry');
        } catch (err) {
          this.deps.logger.error({ evt: 'feedback', queueId: job.id, err: (err as Error).message }, 'feedback report failed');
          outcome = (a) => internalDeferral(a, `feedback: ${(err as Error).message}`);
        }
        return [...relayed, ...mine.map((a) => outcome(a))];
      },
      close: () => inner.close(),
    };
  }
}

async function readAll(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c);
  return Buffer.concat(parts);
}

/**
 * The policy hooks with the report address accepted at RCPT on the
 * feedback listeners; everything else (and every other stage) is the inner
 * engine's decision.
 */
export class FeedbackHooks implements PolicyHooks {
  constructor(
    private readonly inner: () => PolicyHooks,
    private readonly fb: Feedback,
  ) {}

  connect(f: ConnectFacts): Promise<ConnectDecision> {
    return this.inner().connect(f);
  }
  auth(f: Parameters<NonNullable<PolicyHooks['auth']>>[0]): Promise<AuthVerdict> {
    const i = this.inner();
    return i.auth ? i.auth(f) : Promise.resolve({ action: 'accept', stage: 'auth', rule: 'auth.none', countedAccount: false });
  }
  authGate(f: Parameters<NonNullable<PolicyHooks['authGate']>>[0]): ReturnType<NonNullable<PolicyHooks['authGate']>> {
    return this.inner().authGate?.(f);
  }
  mail(f: TransactionFacts): Promise<Verdict> {
    return this.inner().mail(f);
  }
  async rcpt(f: RcptFacts): Promise<Verdict> {
    if (this.fb.accepts({ name: f.client.listener, role: f.client.role }, f.rcpt)) return { action: 'accept', stage: 'rcpt', rule: 'feedback.address' };
    return this.inner().rcpt(f);
  }
  data(f: DataFacts): Promise<Verdict> {
    return this.inner().data(f);
  }
  signingAuthority(f: Parameters<PolicyHooks['signingAuthority']>[0]): ReturnType<PolicyHooks['signingAuthority']> {
    return this.inner().signingAuthority(f);
  }
  async accepted(f: DataFacts): Promise<void> {
    await this.inner().accepted?.(f);
  }
  disconnect(f: DisconnectFacts): void {
    this.inner().disconnect?.(f);
  }
  openSlot(f: { listener: string; ip: string }): Promise<ConnectionSlot> {
    return this.inner().openSlot(f);
  }
}
