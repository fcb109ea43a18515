/**
 * `npm run simulate`: the containment evaluation (src/sim/simulate.ts) over
 * the seed set at full size, printed as the per-profile table (containment
 * beside the static limits) and the events on legitimate senders; --json
 * prints the reports. Options:
 *   --seeds 1,2,3  --instances N  --legit-instances N  --background N  --hosts N  --warmup DAYS  --days DAYS
 *   --containment FILE   a containment.yaml in place of policies/containment.yaml
 */
import { SEEDS, simulate, table, type SimOptions, type SimReport } from '../src/sim/simulate';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const num = (name: string) => (arg(name) !== undefined ? Number(arg(name)) : undefined);
  const opts: Partial<SimOptions> = {
    ...(num('instances') !== undefined ? { instances: num('instances')! } : {}),
    ...(num('legit-instances') !== undefined ? { legitimateInstances: num('legit-instances')! } : {}),
    ...(num('background') !== undefined ? { background: num('background')! } : {}),
    ...(num('hosts') !== undefined ? { hosts: num('hosts')! } : {}),
    ...(num('warmup') !== undefined ? { warmupDays: num('warmup')! } : {}),
    ...(num('days') !== undefined ? { measureDays: num('days')! } : {}),
  };
  const seeds = arg('seeds') ? arg('seeds')!.split(',').map(Number) : SEEDS;
  const reports: SimReport[] = [];
  for (const seed of seeds) {
    const r = await simulate({ ...opts, seed }, arg('containment'));
    reports.push(r);
    if (!process.argv.includes('--json')) console.error(`seed ${seed}: ${r.messages} messages, ${r.ms} ms`);
  }
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(reports, null, 2));
    return;
  }
  console.log(table(reports));
  const fp: Record<string, number> = {};
  for (const r of reports) for (const [k, v] of Object.entries(r.dynamic.falsePositives)) fp[k] = (fp[k] ?? 0) + v;
  console.log(`\ncontainment events on legitimate and background senders (profile:response:signal): ${JSON.stringify(fp)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
