/**
 * Backup MX: what an `mx` listener adds to the policy engine's built-in
 * relay gate (relay.mx-domains: only rules.yaml relayDomains, else 550 5.7.1).
 *
 * - Recipient validation at RCPT, so nothing is accepted that the primary
 *   would refuse (no backscatter): the static list first (a domain the list
 *   has entries for is decided by it), then a cached RCPT callout to the
 *   primary. Unknown → 550 5.1.1; callout impossible and nothing cached →
 *   451 (or accept, by config).
 * - Next hop: the primary is the domain's relay.routes entry (its own retry
 *   schedule: frequent probes, long lifetime); never an MX lookup, which
 *   would find us. The loop guard (a DeliveryAgent wrapper) bounces, 5.4.6,
 *   any recipient whose next hop is this gateway by name, or a backup domain
 *   left without a route.
 * Talks to: the primary (callouts), the map file. Trusts: relay.routes.
 */
import { domainOf, type RecipientOutcome, type Verdict } from '../envelope';
import type { Logger } from '../log';
import type { RelayConfig } from '../relay/config';
import { internalDeferral } from '../relay/classify';
import { routeFor } from '../relay/routes';
import type { DeliveryAgent, DeliveryJob } from '../relay/types';
import { CalloutCache } from './callout';
import type { BackupMxConfig } from './config';
import { MapFile } from './maps';

export class BackupMx {
  private readonly list?: MapFile;
  private readonly callouts: CalloutCache;
  readonly domains: Set<string>;

  constructor(
    private readonly cfg: BackupMxConfig,
    private readonly relay: RelayConfig,
    private readonly opts: { hostname: string; logger: Logger },
  ) {
    this.domains = new Set(cfg.domains);
    if (cfg.recipientsFile) this.list = new MapFile(cfg.recipientsFile, opts.logger, true);
    this.callouts = new CalloutCache({ helo: relay.heloName ?? opts.hostname, ...cfg.callout });
    for (const d of cfg.domains) {
      const plan = routeFor(relay, d);
      if (plan.kind !== 'relay' || plan.via !== 'route') opts.logger.error({ evt: 'config', domain: d }, 'backup MX domain has no relay.routes entry (its primary): its mail will bounce as a loop');
    }
  }

  /** Re-read the recipient list now (app.reload / SIGHUP); it is also re-read when it changes. */
  reload(): void {
    this.list?.refresh(true);
  }

  /** RCPT on an mx listener, after the policy accepted it. undefined = no objection. */
  async rcpt(rcpt: string): Promise<Verdict | undefined> {
    const domain = domainOf(rcpt);
    const v = (action: 'reject' | 'tempfail', rule: string, reply: string, detail?: string): Verdict => ({ action, stage: 'rcpt', rule, reply, ...(detail ? { detail } : {}) });
    if (!this.domains.has(domain)) return v('reject', 'backup-mx.domain', 'recipient_relay_denied');
    for (const step of this.cfg.verify) {
      if (step === 'list' && this.list) {
        if (this.list.lookup(rcpt)) return undefined;
        // The list speaks for the domains it has entries for; others go on to the callout.
        if (this.list.coversDomain(domain) || !this.cfg.verify.includes('callout')) return v('reject', 'backup-mx.list', 'unknown_recipient');
      }
      if (step === 'callout') {
        const plan = routeFor(this.relay, domain);
        if (plan.kind !== 'relay') return v('tempfail', 'backup-mx.callout', 'local_error', '(no primary configured)');
        const r = await this.callouts.check({ host: plan.hop.host, port: plan.hop.port }, rcpt);
        this.opts.logger.debug({ evt: 'callout', rcpt, answer: r.answer, cached: r.cached, reply: r.reply }, 'recipient callout');
        if (r.answer === 'exists') return undefined;
        if (r.answer === 'unknown') return v('reject', 'backup-mx.callout', 'unknown_recipient');
        if (this.cfg.callout.onFailure === 'accept') return undefined;
        return v('tempfail', 'backup-mx.callout', 'recipient_unverified');
      }
    }
    return undefined;
  }
}

/** Names that mean this gateway as a next hop. */
export function localNames(hostname: string, relay: RelayConfig, extra: readonly string[] = []): Set<string> {
  return new Set([hostname, relay.heloName ?? hostname, ...extra].map((n) => n.toLowerCase().replace(/\.$/, '')));
}

/**
 * The loop guard: recipients whose next hop is this gateway (a route or
 * relayhost naming us), or backup-MX domains with no route (an MX lookup
 * would come back to us), are bounced 5.4.6 instead of delivered.
 */
export function loopGuard(agent: DeliveryAgent, relay: RelayConfig, opts: { names: Set<string>; backupDomains: ReadonlySet<string>; logger: Logger }): DeliveryAgent {
  const looping = (address: string): string | undefined => {
    const domain = domainOf(address);
    const plan = routeFor(relay, domain);
    if (plan.kind === 'relay' && opts.names.has(plan.hop.host.toLowerCase())) return `mail for ${domain} loops back to myself (next hop ${plan.hop.host})`;
    if (plan.kind === 'mx' && opts.backupDomains.has(domain)) return `mail for ${domain} loops back to myself (backup MX domain without a route to its primary)`;
    return undefined;
  };
  return {
    async deliver(job: DeliveryJob): Promise<RecipientOutcome[]> {
      let bounced: Map<string, RecipientOutcome> | undefined;
      for (const a of job.recipients) {
        const why = looping(a);
        if (why) {
          opts.logger.warn({ evt: 'bounce', queueId: job.id, rcpt: a, status: '5.4.6', response: why }, 'mail loop');
          (bounced ??= new Map()).set(a, { address: a, kind: 'bounced', error: why, statusCode: '5.4.6' });
        }
      }
      // Nothing loops (every delivery but a misrouted one): the job goes on as it is.
      if (!bounced) return agent.deliver(job);
      const rest = job.recipients.filter((a) => !bounced.has(a));
      const delivered = rest.length > 0 ? await agent.deliver({ ...job, recipients: rest }) : [];
      const byAddr = new Map(delivered.map((o) => [o.address, o]));
      return job.recipients.map((a) => bounced.get(a) ?? byAddr.get(a) ?? internalDeferral(a, 'internal: no outcome'));
    },
    close: () => agent.close(),
  };
}
