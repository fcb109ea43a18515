/**
 * Policy files for the benchmark's "full" scenarios: the subscriber netblock
 * gate; the DNSBL and quota files follow the shipped defaults once the policy
 * engine reads them.
 */
export function BENCH_POLICY_FILES(_dnsServer: string): Record<string, string> {
  return {};
}
