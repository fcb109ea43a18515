/**
 * Policy files for the benchmark's "full" scenarios: the shipped DNSBL
 * configuration (Spamhaus ZEN meanings and actions) with its resolver
 * pointed at the benchmark's local DNS server and loopback clients queried
 * (they are private addresses, skipped by default), and quotas high enough
 * not to bite (but counted).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

const SHIPPED = path.resolve(__dirname, '../../policies');

export function BENCH_POLICY_FILES(dnsServer: string): Record<string, string> {
  const dnsbl = readFileSync(path.join(SHIPPED, 'dnsbl.yaml'), 'utf8')
    .replace(/^(\s*)servers: \[\]/m, `$1servers: ["${dnsServer}"]`)
    .replace(/^queryPrivate: false/m, 'queryPrivate: true');
  if (!dnsbl.includes(dnsServer) || !/^queryPrivate: true/m.test(dnsbl)) {
    throw new Error('policies/dnsbl.yaml changed shape: update bench/policy-fixture.ts');
  }
  // Real limits, set too high to bite: every counter is still read and
  // written (across processes through the primary), as in production.
  const quotas = `
plans:
  bench:
    messagesPerHour: 100000000
    recipientsPerHour: 100000000
    recipientsPerDay: 1000000000
    recipientsPerMessage: 100
    concurrentConnections: 100000
defaultPlan: bench
classPlans:
  residential-dynamic: bench
defaultClassPlan: bench
`;
  return { 'dnsbl.yaml': dnsbl, 'quotas.yaml': quotas };
}
