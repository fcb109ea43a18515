/**
 * /metrics of a multi-process gateway (process.workers > 1, node:cluster):
 * the primary serves one exposition, its own metrics (queue, retries,
 * reloads, process) merged with every worker's (connections, AUTH, policy,
 * acceptance, first delivery attempts, process) by prom-client's
 * AggregatorRegistry.aggregate: counters and histograms are summed, gauges
 * use their declared aggregator (sum unless the catalogue says max/min).
 *
 * The workers answer over the cluster IPC channel with prom-client's own
 * worker-side responder (AggregatorRegistry.setRegistries + its listener);
 * the primary asks with its own request ids and a deadline, so a worker
 * that is restarting costs its metrics for that scrape, never the scrape.
 *
 * Talks to: node:cluster workers (IPC), prom-client.
 */
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, type Registry } from 'prom-client';

const REQ = 'prom-client:getMetricsReq';
const RES = 'prom-client:getMetricsRes';

type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** In a worker: answer the primary's metrics requests with this registry. */
export function serveWorkerMetrics(registry: Registry): void {
  AggregatorRegistry.setRegistries([registry]);
  // The constructor installs prom-client's worker-side IPC responder (idempotent).
  new AggregatorRegistry();
}

let seq = 0;

/** In the primary: this registry's metrics merged with every connected worker's. */
export async function clusterMetrics(own: Registry, timeoutMs = 2000): Promise<{ contentType: string; body: string; workersMissing: number }> {
  const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && w.isConnected());
  const requestId = `smarthost-${process.pid}-${++seq}`;
  const responses: MetricsJson[] = [];
  let missing = workers.length;
  if (workers.length > 0) {
    await new Promise<void>((resolve) => {
      const onMessage = (_w: Worker, m: { type?: string; requestId?: string; metrics?: MetricsJson[]; error?: string }) => {
        if (m?.type !== RES || m.requestId !== requestId) return;
        if (!m.error && m.metrics) responses.push(...m.metrics);
        if (--missing === 0) finish();
      };
      const timer = setTimeout(() => finish(), timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        cluster.off('message', onMessage);
        resolve();
      };
      cluster.on('message', onMessage);
      for (const w of workers) {
        try {
          w.send({ type: REQ, requestId });
        } catch {
          missing--;
        }
      }
      if (missing <= 0) finish();
    });
  }
  const merged = AggregatorRegistry.aggregate([await own.getMetricsAsJSON(), ...responses]);
  return { contentType: own.contentType, body: await merged.metrics(), workersMissing: Math.max(0, missing) };
}
