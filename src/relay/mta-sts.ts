/**
 * MTA-STS (RFC 8461): whether a recipient domain asks for authenticated TLS
 * to its MX hosts, and which MX names it vouches for.
 *
 * Talks to: the relay's DNS servers (the `_mta-sts.<domain>` TXT record,
 * node:dns Resolver) and the domain's policy host over HTTPS
 * (`https://mta-sts.<domain>/.well-known/mta-sts.txt`; its name is resolved
 * through the relay's own resolver, its certificate must verify for that
 * name against Node's roots or `relay.mtaSts.ca`). Trusts: nothing it reads —
 * the TXT record and the policy are parsed strictly, the body is capped.
 *
 * Caching (RFC 8461 §3.3, §5.1): a fetched policy is kept for its max_age.
 * Every lookup reads the TXT record; the policy is fetched again only when
 * the record's id differs from the cached policy's (or nothing is cached).
 * When the TXT record is gone, the lookup fails, or the fetch fails, a
 * cached, unexpired policy stays in force — an attacker who blocks DNS or
 * HTTPS cannot switch enforcement off. With nothing cached, such a domain is
 * treated as having no policy (the RFC's rule: no downgrade of availability
 * for domains that never had one), and the fetch failure is reported.
 * Concurrent lookups of one domain share one fetch.
 */
import https from 'node:https';
import { Resolver } from 'node:dns/promises';
import { lookupVia, type DnsConfig, type MxResolver } from './mx';

export type StsMode = 'enforce' | 'testing' | 'none';

export interface StsPolicy {
  readonly mode: StsMode;
  /** mx patterns: exact names or "*.example.com" (one leftmost label). */
  readonly mx: readonly string[];
  readonly maxAgeS: number;
  /** The TXT record's id when the policy was fetched. */
  readonly id: string;
}

/** What a lookup found; `fetchError` names a failure worth reporting (TLS-RPT result types). */
export interface StsLookup {
  readonly policy?: StsPolicy;
  readonly fetchError?: 'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid';
}

export interface MtaStsConfig {
  enabled: boolean;
  /** Port of the policy host (443; tests use a high port). */
  httpsPort: number;
  /** CA certificates (PEM) to trust instead of Node's roots, for policy hosts and MX hosts under enforce. */
  ca?: string;
  caFile?: string;
  fetchTimeoutMs: number;
}

/** RFC 8461 §3.2: max_age is at most 31557600 s (about a year). */
const MAX_AGE_LIMIT_S = 31_557_600;
/** RFC 8461 §3.3: policy bodies are small; 64 KiB is the RFC's suggested limit. */
const MAX_BODY = 64 * 1024;

/** Parse a policy body; undefined when it is not a valid STSv1 policy. */
export function parsePolicy(body: string): Omit<StsPolicy, 'id'> | undefined {
  const fields = new Map<string, string[]>();
  for (const line of body.split(/\r?\n/)) {
    if (line.trim() === '') continue;
    const m = /^([A-Za-z0-9_]+):[ \t]*(.*?)[ \t]*$/.exec(line);
    if (!m) return undefined;
    const key = m[1].toLowerCase();
    fields.set(key, [...(fields.get(key) ?? []), m[2]]);
  }
  if (fields.get('version')?.[0] !== 'STSv1') return undefined;
  const mode = fields.get('mode')?.[0];
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') return undefined;
  const maxAge = fields.get('max_age')?.[0];
  if (!maxAge || !/^\d{1,10}$/.test(maxAge)) return undefined;
  const mx = (fields.get('mx') ?? []).map((p) => p.toLowerCase().replace(/\.$/, ''));
  if (mode !== 'none' && mx.length === 0) return undefined;
  if (mx.some((p) => !/^(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)+$/.test(p))) return undefined;
  return { mode, mx, maxAgeS: Math.min(Number(maxAge), MAX_AGE_LIMIT_S) };
}

/** RFC 8461 §4.1: an exact name, or "*.suffix" standing for exactly one leftmost label. */
export function mxMatches(patterns: readonly string[], rawHost: string): boolean {
  const host = rawHost.toLowerCase().replace(/\.$/, '');
  return patterns.some((p) => {
    if (!p.startsWith('*.')) return p === host;
    const dot = host.indexOf('.');
    return dot > 0 && host.slice(dot + 1) === p.slice(2);
  });
}

type TxtResult = { kind: 'record'; id: string } | { kind: 'none' };

/** The `_mta-sts` TXT record: exactly one record starting with v=STSv1 and an id (RFC 8461 §3.1). */
export function parseTxt(records: readonly string[]): TxtResult {
  const sts = records.filter((r) => /^v=STSv1(;|$)/.test(r));
  if (sts.length !== 1) return { kind: 'none' };
  const id = /(?:^|;)\s*id=([A-Za-z0-9]{1,32})\s*(?:;|$)/.exec(sts[0]);
  return id ? { kind: 'record', id: id[1] } : { kind: 'none' };
}

interface Cached {
  policy: StsPolicy;
  expires: number;
}

export class MtaStsPolicies {
  private readonly txt: Resolver;
  private readonly cache = new Map<string, Cached>();
  private readonly inflight = new Map<string, Promise<StsLookup>>();

  constructor(
    private readonly cfg: MtaStsConfig,
    dns: DnsConfig,
    private readonly hosts: MxResolver,
    private readonly now: () => number = Date.now,
  ) {
    this.txt = new Resolver({ timeout: dns.timeoutMs, tries: dns.tries });
    if (dns.servers.length > 0) this.txt.setServers(dns.servers);
  }

  /** The policy in force for a recipient domain (none when `policy` is absent). */
  lookup(rawDomain: string): Promise<StsLookup> {
    const domain = rawDomain.toLowerCase().replace(/\.$/, '');
    const running = this.inflight.get(domain);
    if (running) return running;
    const p = this.refresh(domain).finally(() => this.inflight.delete(domain));
    this.inflight.set(domain, p);
    return p;
  }

  cancel(): void {
    this.txt.cancel();
  }

  private async refresh(domain: string): Promise<StsLookup> {
    const hit = this.cache.get(domain);
    const cached = hit && hit.expires > this.now() ? hit.policy : undefined;
    if (hit && !cached) this.cache.delete(domain);
    const txt = await this.readTxt(domain);
    // No record (or no answer): a cached policy stays in force until it expires.
    if (txt.kind === 'none') return { policy: cached };
    if (cached && cached.id === txt.id) return { policy: cached };
    const fetched = await this.fetch(domain);
    if (!fetched.ok) return { policy: cached, fetchError: fetched.error };
    const policy: StsPolicy = { ...fetched.policy, id: txt.id };
    this.cache.set(domain, { policy, expires: this.now() + policy.maxAgeS * 1000 });
    return { policy };
  }

  private async readTxt(domain: string): Promise<TxtResult> {
    try {
      const records = await this.txt.resolveTxt(`_mta-sts.${domain}`);
      return parseTxt(records.map((chunks) => chunks.join('')));
    } catch {
      return { kind: 'none' };
    }
  }

  private fetch(domain: string): Promise<{ ok: true; policy: Omit<StsPolicy, 'id'> } | { ok: false; error: NonNullable<StsLookup['fetchError']> }> {
    const host = `mta-sts.${domain}`;
    // The policy host's name goes through the relay's resolver, like every other name we deliver to.
    const lookup = lookupVia(this.hosts);
    return new Promise((resolve) => {
      let done = false;
      const finish = (r: Awaited<ReturnType<MtaStsPolicies['fetch']>>): void => {
        if (done) return;
        done = true;
        resolve(r);
      };
      const req = https.get(
        {
          host,
          port: this.cfg.httpsPort,
          path: '/.well-known/mta-sts.txt',
          servername: host,
          lookup,
          // Redirects are not followed (RFC 8461 §3.3): https.get never does.
          ...(this.cfg.ca !== undefined ? { ca: this.cfg.ca } : {}),
          timeout: this.cfg.fetchTimeoutMs,
          agent: false,
        },
        (res) => {
          const type = String(res.headers['content-type'] ?? '');
          if (res.statusCode !== 200 || !/^text\/plain\b/i.test(type)) {
            res.resume();
            return finish({ ok: false, error: 'sts-policy-fetch-error' });
          }
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_BODY) {
              req.destroy();
              return finish({ ok: false, error: 'sts-policy-invalid' });
            }
            chunks.push(c);
          });
          res.on('end', () => {
            const policy = parsePolicy(Buffer.concat(chunks).toString('utf8'));
            finish(policy ? { ok: true, policy } : { ok: false, error: 'sts-policy-invalid' });
          });
          res.on('error', () => finish({ ok: false, error: 'sts-policy-fetch-error' }));
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (err) => {
        const code = String((err as NodeJS.ErrnoException).code ?? '');
        const webpki = /CERT|SELF_SIGNED|UNABLE_TO_|ALTNAME/.test(code);
        finish({ ok: false, error: webpki ? 'sts-webpki-invalid' : 'sts-policy-fetch-error' });
      });
    });
  }
}
