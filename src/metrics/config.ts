/**
 * The `metrics:` section of the config: which destination / signing domains
 * may appear as a `domain` label (a short, operator-kept list; every other
 * domain is counted as "other", so label cardinality stays bounded).
 *
 *   metrics:
 *     domains: [gmail.com, outlook.com, isp.example]   # at most 50
 */
import { At, obj, strList } from '../config/validate';
import { normalizeDomain } from '../dkim/config';

export interface MetricsConfig {
  /** Lower-case A-label domains allowed as label values; the rest become "other". */
  domains: string[];
}

export const METRICS_KEYS = ['domains'] as const;
export const MAX_LABELLED_DOMAINS = 50;

export function parseMetricsConfig(v: unknown, at: At): MetricsConfig {
  const o = obj(v, at, METRICS_KEYS);
  const dAt = at.child('domains');
  const domains = strList(o.domains, dAt).map((d, i) => {
    const n = normalizeDomain(d);
    if (!n) dAt.child(i).fail(`not a domain name: "${d}"`);
    return n;
  });
  if (domains.length > MAX_LABELLED_DOMAINS) dAt.fail(`at most ${MAX_LABELLED_DOMAINS} domains (each one is a label value on several metrics)`);
  return { domains: [...new Set(domains)] };
}
