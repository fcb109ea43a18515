/**
 * What senders' accepted mail went to, in the state store (so a fleet on
 * Redis, or a primary and its workers, see one picture): the console's
 * senders by volume and one sender's recent recipient domains.
 *
 * Recorded for every message the gateway accepted (250, held mail
 * included), per subject: the account on submission, the client address
 * (IPv6: its quota prefix) on intercept, as containment counts them.
 *   volume      recipients in the last hour (a sliding log), and the
 *               fleet-wide ranking of subjects by it
 *   domains     recipients per domain in the last 24 hours (a log per
 *               domain) and the subject's ranking of its domains
 *   recipients  the 200 addresses most recently written to (24 hours):
 *               shown only when the operator opens them (an audited action)
 * Per message: 3 store operations plus one per recipient domain.
 *
 * Talks to: the state store. Trusts: the session's facts (after policy).
 */
import { domainOf, type ClientInfo } from '../envelope';
import type { Logger } from '../log';
import type { DataFacts, PolicyHooks } from '../policy/types';
import { clientSubject, escapeId, keys, parseSubjectLabel, subjectLabel, type Subject } from '../state/keys';
import type { StateStore } from '../state/store';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** Subjects in the volume ranking, domains and addresses kept per subject. */
const RANKED_SUBJECTS = 1000;
const RANKED_DOMAINS = 200;
const RANKED_RECIPIENTS = 200;

export interface ActivityDeps {
  readonly store: StateStore;
  readonly logger: Logger;
  /** The counter subject of an intercept address (IPv6 by the policy's prefix). */
  readonly ipSubject: (ip: string) => string;
  readonly clock?: () => number;
  /**
   * Where the store is another process's (a worker's, src/cluster/ipc-store.ts):
   * hand the message over to run recordActivity there, in one message without
   * an answer, instead of five round trips, one after the other, per message.
   */
  readonly forward?: (s: Subject, recipients: readonly string[], now: number) => void;
}

/** One accepted message of subject `s` in the store: its volume, its domains, its recipients. */
export async function recordActivity(store: StateStore, s: Subject, recipients: readonly string[], now: number): Promise<void> {
  const volume = await store.record(keys.activity(s, 'r1h'), HOUR, recipients.length, now);
  await store.rank(keys.ranking('volume'), [[subjectLabel(s), volume]], HOUR, RANKED_SUBJECTS, now);
  const perDomain = new Map<string, number>();
  for (const r of recipients) {
    const d = domainOf(r);
    perDomain.set(d, (perDomain.get(d) ?? 0) + 1);
  }
  const domains: Array<[string, number]> = [];
  for (const [d, n] of perDomain) domains.push([d, await store.record(keys.activity(s, `d:${escapeId(d)}`), DAY, n, now)]);
  await store.rank(keys.activity(s, 'domains'), domains, DAY, RANKED_DOMAINS, now);
  await store.rank(keys.activity(s, 'rcpts'), recipients.map((r) => [r.toLowerCase(), now] as const), DAY, RANKED_RECIPIENTS, now);
}

export class SenderActivity {
  private readonly clock: () => number;

  constructor(private readonly deps: ActivityDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  subjectOf(client: Pick<ClientInfo, 'role' | 'ip' | 'user'>): Subject | undefined {
    return clientSubject(client, this.deps.ipSubject);
  }

  /**
   * The session's hooks, with every accepted message recorded after the
   * inner hooks' own `accepted`. The wrapper inherits everything else from
   * the hooks in force (Object.create: their methods run on their own state),
   * one wrapper per hooks object (a reload swaps it).
   */
  wrap(inner: () => PolicyHooks): () => PolicyHooks {
    const wrapped = new WeakMap<PolicyHooks, PolicyHooks>();
    return () => {
      const h = inner();
      let w = wrapped.get(h);
      if (!w) {
        const accepted = async (f: DataFacts): Promise<void> => {
          await h.accepted?.(f);
          await this.record(f.client, f.recipients).catch((err: Error) => this.deps.logger.error({ evt: 'error', err: err.message }, 'recording sender activity failed'));
        };
        w = Object.assign(Object.create(h) as PolicyHooks, { accepted });
        wrapped.set(h, w);
      }
      return w;
    };
  }

  async record(client: Pick<ClientInfo, 'role' | 'ip' | 'user'>, recipients: readonly string[]): Promise<void> {
    const s = this.subjectOf(client);
    if (!s || recipients.length === 0) return;
    if (this.deps.forward) this.deps.forward(s, recipients, this.clock());
    else await recordActivity(this.deps.store, s, recipients, this.clock());
  }

  /** The subjects with the most recipients accepted in the last hour (counted now), most first. */
  async topByVolume(n: number): Promise<Array<{ subject: Subject; recipients: number }>> {
    const now = this.clock();
    const ranked = await this.deps.store.top(keys.ranking('volume'), n, HOUR, now);
    const out = await Promise.all(
      ranked.map(async ([label]) => {
        const subject = parseSubjectLabel(label);
        return subject ? { subject, recipients: await this.deps.store.count(keys.activity(subject, 'r1h'), HOUR, now) } : undefined;
      }),
    );
    return out.filter((x): x is { subject: Subject; recipients: number } => x !== undefined && x.recipients > 0).sort((a, b) => b.recipients - a.recipients);
  }

  /** A subject's recipient domains of the last 24 hours and their recipients (counted now), most first. */
  async domains(s: Subject, n: number): Promise<Array<{ domain: string; recipients: number }>> {
    const now = this.clock();
    const ranked = await this.deps.store.top(keys.activity(s, 'domains'), n, DAY, now);
    const out = await Promise.all(ranked.map(async ([domain]) => ({ domain, recipients: await this.deps.store.count(keys.activity(s, `d:${escapeId(domain)}`), DAY, now) })));
    return out.filter((d) => d.recipients > 0).sort((a, b) => b.recipients - a.recipients || a.domain.localeCompare(b.domain));
  }

  /** The addresses a subject wrote to most recently (24 hours), newest first: for the operator who opens them. */
  async recipients(s: Subject, n: number): Promise<Array<{ address: string; at: number }>> {
    return (await this.deps.store.top(keys.activity(s, 'rcpts'), n, DAY, this.clock())).map(([address, at]) => ({ address, at }));
  }
}
