/**
 * `npm run simulate`: the containment simulation (src/sim/simulate.ts) at
 * full size, printed as a table and as JSON (--json). Options:
 *   --seed N  --accounts N  --hosts N  --warmup DAYS  --days DAYS
 */
import { simulate, type PolicyReport } from '../src/sim/simulate';

function arg(name: string): number | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : undefined;
}

async function main(): Promise<void> {
  const opts = {
    ...(arg('seed') !== undefined ? { seed: arg('seed')! } : {}),
    ...(arg('accounts') !== undefined ? { accounts: arg('accounts')! } : {}),
    ...(arg('hosts') !== undefined ? { interceptHosts: arg('hosts')! } : {}),
    ...(arg('warmup') !== undefined ? { warmupDays: arg('warmup')! } : {}),
    ...(arg('days') !== undefined ? { measureDays: arg('days')! } : {}),
  };
  const r = await simulate(opts);
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(r, null, 2));
    return;
  }
  const pct = (x: number) => `${(x * 100).toFixed(3)}%`;
  const row = (p: PolicyReport) => [
    p.name.padEnd(8),
    `${p.spamLeft}/${p.spamMessages} left (${pct(p.spamContainedRate)} contained)`,
    `per incident median ${p.leftPerIncident.median} p95 ${p.leftPerIncident.p95} max ${p.leftPerIncident.max}`,
    `detection median ${p.detection.median} p95 ${p.detection.p95} undetected ${p.detection.undetected}`,
    `legit delayed ${p.legitDelayed} refused ${p.legitRefused} of ${p.legitMessages} (${pct(p.legitDelayedRate)})`,
  ].join(' | ');
  console.log(`seed ${r.options.seed}, ${r.options.accounts} accounts + ${r.options.interceptHosts} intercept hosts, ${r.options.warmupDays}d warm-up + ${r.options.measureDays}d measured, ${r.ms} ms`);
  console.log(`population ${JSON.stringify(r.population)}; incidents ${JSON.stringify(r.incidents)}`);
  console.log(row(r.static));
  console.log(row(r.dynamic));
  console.log(`detection median by style (static)  ${JSON.stringify(r.static.detectionByStyle)}`);
  console.log(`detection median by style (dynamic) ${JSON.stringify(r.dynamic.detectionByStyle)}`);
  console.log(`containment events ${JSON.stringify(r.dynamic.events)}`);
  console.log(`events on legitimate senders (kind:response:signal) ${JSON.stringify(r.dynamic.falsePositives)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
