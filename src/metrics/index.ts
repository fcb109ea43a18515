/**
 * The gateway's metrics, as app.ts wires them: one catalogue per process,
 * the observers it hands to each stage, and the /metrics provider for the
 * admin listener, which depends on the process's role:
 *   single   this process's registry;
 *   primary  its registry merged with every worker's (src/metrics/cluster.ts);
 *   worker   no admin listener: answers the primary over cluster IPC.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/schema';
import type { PolicyObserver } from '../policy/types';
import { MetricsCatalogue } from './catalogue';
import { clusterMetrics, serveWorkerMetrics } from './cluster';

export { MetricsCatalogue, safeLabel, BoundedLabel, OTHER, PREFIX } from './catalogue';
export { spoolWriteProbe } from './health';

export type ProcessRole = 'single' | 'primary' | 'worker';

export interface GatewayMetrics {
  readonly catalogue: MetricsCatalogue;
  /** The PolicyObserver to give PolicyRuntime; `zones` lists the DNSBL zones in force (series start at 0). */
  policyObserver(zones: () => Iterable<string>): PolicyObserver;
  /** The /metrics body for this process's role. */
  render(): Promise<{ contentType: string; body: string }>;
}

function packageVersion(): string {
  for (const p of [path.join(__dirname, '..', '..', 'package.json'), path.join(__dirname, '..', '..', '..', 'package.json')]) {
    try {
      const v = (JSON.parse(readFileSync(p, 'utf8')) as { version?: string }).version;
      if (v) return v;
    } catch {
      // try the next layout (src/ or dist/src/)
    }
  }
  return 'unknown';
}

export function createGatewayMetrics(cfg: Config, role: ProcessRole = 'single'): GatewayMetrics {
  const catalogue = new MetricsCatalogue({
    domains: cfg.metrics?.domains ?? [],
    listeners: role === 'primary' ? [] : cfg.listeners,
    version: packageVersion(),
    shapingProviders: cfg.relay.shaping?.providers.map((p) => p.name),
    pools: [...cfg.relay.pools.keys()],
  });
  if (role === 'worker') serveWorkerMetrics(catalogue.registry);
  return {
    catalogue,
    policyObserver(zones) {
      const inner = catalogue.policy;
      const known = () => {
        try {
          catalogue.knownZones(zones());
        } catch {
          // no policy yet (the first load is still running): the reload will tell us
        }
      };
      return {
        ...inner,
        reload: (result) => {
          inner.reload?.(result);
          if (result === 'ok') known();
        },
      };
    },
    async render() {
      if (role === 'primary') {
        const m = await clusterMetrics(catalogue.registry);
        return { contentType: m.contentType, body: m.body };
      }
      return catalogue.render();
    },
  };
}
