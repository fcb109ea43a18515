/**
 * Wiring containment into the gateway (app.ts): the containment.yaml of the
 * policy directory, the policy hooks wrapped (ContainedHooks), relay
 * outcomes fed back (a remote 5xx per recipient), the abuse desk's webhook.
 * With no containment.yaml, or `enabled: false`, the hooks are left as they
 * are and nothing is recorded.
 *
 * Talks to: containment, the queue manager (as an observer).
 */
import type { AccountStore } from '../accounts/store';
import type { Logger } from '../log';
import { prefixOf } from '../policy/ip';
import type { PolicyEngine } from '../policy/engine';
import { planFor } from '../policy/quotas';
import type { PolicyHooks } from '../policy/types';
import type { QueueObserver } from '../spool/qmgr';
import type { StateStore } from '../state/store';
import { loadContainment } from './config';
import { ContainedHooks, Containment, type ContainmentObserver } from './containment';
import { WebhookNotifier } from './notifier';

export interface ContainmentWiring {
  readonly containment: Containment;
  /** The hooks sessions ask: the engine's, with containment after each decision. */
  wrap(inner: () => PolicyHooks): () => PolicyHooks;
  /** Feed for qmgr.observe: recipients refused by remote servers. */
  readonly queueObserver: QueueObserver;
  stop(): Promise<void>;
}

export function wireContainment(deps: {
  readonly dir: string;
  readonly store: StateStore;
  readonly logger: Logger;
  readonly accounts: AccountStore;
  readonly policy: () => PolicyEngine;
  readonly clock?: () => number;
  readonly observer?: ContainmentObserver;
}): ContainmentWiring {
  const cfg = loadContainment(deps.dir);
  const notifier = cfg.webhook ? new WebhookNotifier({ ...cfg.webhook, logger: deps.logger }) : undefined;
  const containment = new Containment(cfg, {
    store: deps.store,
    logger: deps.logger,
    ...(deps.clock ? { clock: deps.clock } : {}),
    accounts: deps.accounts,
    ...(notifier ? { notifier } : {}),
    ...(deps.observer ? { observer: deps.observer } : {}),
    planOf: (client, account) => {
      const p = deps.policy().policy;
      if (client.role === 'submission') {
        const a = account ?? (client.user ? deps.accounts.get(client.user) : undefined);
        return a ? planFor(p.quotas, { account: a }) : undefined;
      }
      return planFor(p.quotas, { cls: p.netblocks.match(client.ip)?.cls ?? '' });
    },
    ipSubject: (ip) => prefixOf(ip, deps.policy().policy.quotas.ipv6Prefix) ?? ip,
  });
  return {
    containment,
    wrap: (inner) => {
      if (!cfg.enabled) return inner;
      const hooks = new ContainedHooks(inner, containment);
      return () => hooks;
    },
    queueObserver: {
      outcome: (e) => {
        if (!cfg.enabled || e.outcome.kind !== 'bounced' || e.envelope.isBounce) return;
        containment.relayBounced(e.envelope.client, 1).catch((err: Error) => deps.logger.error({ evt: 'error', err }, 'containment feedback failed'));
      },
    },
    stop: async () => {
      notifier?.stop();
    },
  };
}
