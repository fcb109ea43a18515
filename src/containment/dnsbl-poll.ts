/**
 * DNSBL polling of active intercept addresses. The connect check looks an
 * address up once per connection; an infected subscriber that gets listed
 * an hour later (the CBL sees its bot traffic elsewhere) keeps sending
 * through connections it already has or opens while the negative answer is
 * cached. So every address that sent through an intercept listener within
 * `poll.activeFor` is looked up again every `poll.every` (dnsbl.yaml), and
 * a change raises containment's dnsblListed signal (listed) or clears it
 * (delisted).
 *
 * "Listed" means what the connect check means: a listed code whose meaning
 * has a non-accept action on the listener the address used (the PBL, which
 * lists our own dynamic ranges, is `ignore` and never counts). A lookup
 * error or timeout changes nothing.
 *
 * Bounded: at most `maxAddresses` tracked (the least recently seen are
 * forgotten first) and at most `perSecond` lookups a second; lookups go
 * through the policy's DNSBL client and its cache, so DNS TTLs hold and a
 * poll costs no query while an answer is cached.
 *
 * Talks to: the policy engine's DNSBL client, containment (external).
 * Trusts: the DNSBL client's reading of answers (127.255.255.x are errors).
 */
import { actionFor } from '../policy/dnsbl';
import type { PolicyEngine } from '../policy/engine';
import type { Logger } from '../log';

interface Active {
  listener: string;
  lastSeen: number;
  lastChecked: number;
  listed: boolean;
}

export interface PollObserver {
  change?(to: 'listed' | 'delisted'): void;
}

export class DnsblPoller {
  private readonly active = new Map<string, Active>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    private readonly deps: {
      readonly policy: () => PolicyEngine;
      /** Containment: the address is listed (true) or no longer (false). */
      readonly signal: (ip: string, listed: boolean) => Promise<unknown>;
      readonly logger: Logger;
      readonly clock?: () => number;
      readonly observer?: PollObserver;
      /** How often the poller wakes up (default 1 s; the rate limit is per second of this). */
      readonly tickMs?: number;
    },
  ) {}

  private now(): number {
    return (this.deps.clock ?? Date.now)();
  }

  /** Addresses tracked right now (the metric gauge). */
  get size(): number {
    return this.active.size;
  }

  /** An intercept message from `ip` on `listener`. */
  seen(ip: string, listener: string): void {
    const poll = this.deps.policy().policy.dnsbl.poll;
    if (!poll.enabled) return;
    const now = this.now();
    const prev = this.active.get(ip);
    this.active.delete(ip);
    this.active.set(ip, { listener, lastSeen: now, lastChecked: prev?.lastChecked ?? now, listed: prev?.listed ?? false });
    while (this.active.size > poll.maxAddresses) this.active.delete(this.active.keys().next().value as string);
  }

  start(): void {
    const tick = this.deps.tickMs ?? 1000;
    this.timer = setInterval(() => void this.tick(tick), tick);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One round: forget idle addresses, look up the ones due (at most perSecond × tick). */
  async tick(tickMs = 1000): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const engine = this.deps.policy();
      const { poll, zones } = engine.policy.dnsbl;
      if (!poll.enabled || zones.length === 0) return;
      const now = this.now();
      const budget = Math.max(1, Math.floor((poll.perSecond * tickMs) / 1000));
      const due: Array<[string, Active]> = [];
      for (const [ip, a] of this.active) {
        if (now - a.lastSeen > poll.activeForMs) {
          this.active.delete(ip);
          continue;
        }
        if (due.length < budget && now - a.lastChecked >= poll.everyMs) due.push([ip, a]);
      }
      await Promise.all(due.map(([ip, a]) => this.check(engine, ip, a, now)));
    } catch (err) {
      this.deps.logger.error({ evt: 'error', err: (err as Error).message }, 'DNSBL poll failed');
    } finally {
      this.running = false;
    }
  }

  private async check(engine: PolicyEngine, ip: string, a: Active, now: number): Promise<void> {
    a.lastChecked = now;
    const zones = engine.policy.dnsbl.zones;
    const answers = await engine.dnsbl.check(ip, zones);
    if (answers.some((x) => x.result === 'error' || x.result === 'timeout')) {
      if (!answers.some((x) => x.result === 'listed')) return;
    }
    const listedIn = answers.flatMap((x, i) => (x.result === 'listed' ? x.meanings.filter((m) => actionFor(zones[i]!, m, a.listener, 'intercept').action !== 'accept').map((m) => `${x.zone}.${m}`) : []));
    const listed = listedIn.length > 0;
    if (listed === a.listed) return;
    a.listed = listed;
    this.deps.observer?.change?.(listed ? 'listed' : 'delisted');
    this.deps.logger.warn({ evt: 'dnsbl-poll', ip, listed, in: listedIn }, listed ? 'active intercept address became listed' : 'active intercept address delisted');
    try {
      await this.deps.signal(ip, listed);
    } catch (err) {
      this.deps.logger.error({ evt: 'error', ip, err: (err as Error).message }, 'containment signal failed');
    }
  }
}
