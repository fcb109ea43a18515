/**
 * SMTP TLS Reporting (RFC 8460): a daily aggregate report per policy domain
 * (the recipient domain whose MTA-STS policy or DANE records applied),
 * mailed to the addresses in its `_smtp._tls.<domain>` TXT record
 * (`v=TLSRPTv1; rua=mailto:…`; https: endpoints are not posted to).
 *
 * Talks to: the relay's DNS servers (TXT), and whatever `submit` the caller
 * gives it (app.ts: the spool, so reports are queued and retried like any
 * mail, with the null sender so they never bounce back). Trusts: nothing in
 * the TXT record beyond the mailto addresses it parses strictly.
 *
 * Counts live in memory per UTC day: a restart loses the day's counts so far
 * (a report is a statistic, not mail). A day is reported once it is over.
 */
import { gzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import type { RelayConfig } from './config';
import type { TlsPolicyEvent, TlsPolicyObserver } from './secure-transport';
import { rfc5322Date } from './dsn';

export interface TlsRptConfig {
  enabled: boolean;
  /** organization-name in reports. */
  orgName: string;
  /** contact-info in reports (an address or URL of the sending operator). */
  contact: string;
}

interface DayAggregate {
  day: string;
  domain: string;
  mechanism: TlsPolicyEvent['mechanism'];
  success: number;
  /** "result mx" → count */
  failures: Map<string, { result: string; mx?: string; count: number }>;
}

const DAY_MS = 86_400_000;
const dayOf = (ms: number): string => new Date(ms).toISOString().slice(0, 10);

/** The rua mailto: addresses of a TLSRPTv1 TXT record set (exactly one v=TLSRPTv1 record, RFC 8460 §3). */
export function parseRua(records: readonly string[]): string[] {
  const rpt = records.filter((r) => /^v=TLSRPTv1\s*(;|$)/.test(r));
  if (rpt.length !== 1) return [];
  const rua = /(?:^|;)\s*rua=([^;]*)/.exec(rpt[0]);
  if (!rua) return [];
  return rua[1]
    .split(',')
    .map((u) => u.trim())
    .filter((u) => /^mailto:[^@\s,;<>]+@[A-Za-z0-9.-]+$/i.test(u))
    .map((u) => decodeURIComponent(u.slice('mailto:'.length)));
}

export class TlsReportCollector implements TlsPolicyObserver {
  private readonly days = new Map<string, DayAggregate>();

  constructor(private readonly now: () => number = Date.now) {}

  onTlsPolicy(e: TlsPolicyEvent): void {
    const day = dayOf(this.now());
    const key = `${day} ${e.domain} ${e.mechanism}`;
    let agg = this.days.get(key);
    if (!agg) {
      agg = { day, domain: e.domain, mechanism: e.mechanism, success: 0, failures: new Map() };
      this.days.set(key, agg);
    }
    if (e.result === 'success') {
      agg.success++;
      return;
    }
    const fk = `${e.result} ${e.mx ?? ''}`;
    const f = agg.failures.get(fk) ?? { result: e.result, mx: e.mx, count: 0 };
    f.count++;
    agg.failures.set(fk, f);
  }

  /** Aggregates of days that are over, removed from the collector. */
  takeCompletedDays(): DayAggregate[] {
    const today = dayOf(this.now());
    const done = [...this.days.entries()].filter(([, a]) => a.day < today);
    for (const [k] of done) this.days.delete(k);
    return done.map(([, a]) => a);
  }
}

/** The RFC 8460 §4 JSON report for one domain and day. */
export function buildReportJson(agg: DayAggregate, cfg: TlsRptConfig, reportId: string): object {
  const start = `${agg.day}T00:00:00Z`;
  const end = new Date(Date.parse(start) + DAY_MS - 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const failed = [...agg.failures.values()];
  return {
    'organization-name': cfg.orgName,
    'date-range': { 'start-datetime': start, 'end-datetime': end },
    'contact-info': cfg.contact,
    'report-id': reportId,
    policies: [
      {
        policy: { 'policy-type': agg.mechanism === 'dane' ? 'tlsa' : 'sts', 'policy-domain': agg.domain },
        summary: {
          'total-successful-session-count': agg.success,
          'total-failure-session-count': failed.reduce((n, f) => n + f.count, 0),
        },
        'failure-details': failed.map((f) => ({
          'result-type': f.result,
          ...(f.mx ? { 'receiving-mx-hostname': f.mx } : {}),
          'failed-session-count': f.count,
        })),
      },
    ],
  };
}

/** The report mail (RFC 8460 §5.3): multipart/report; report-type="tlsrpt", the JSON gzipped. */
export function buildReportMessage(o: { hostname: string; to: string; domain: string; reportId: string; json: object; date: Date }): Buffer {
  const boundary = `tlsrpt-${randomBytes(8).toString('hex')}`;
  const gz = gzipSync(Buffer.from(JSON.stringify(o.json))).toString('base64').replace(/.{1,76}/g, '$&\r\n');
  const name = `${o.hostname}!${o.domain}!${o.reportId}.json.gz`;
  const lines = [
    `From: TLS reporting <noreply-smtp-tls-reporting@${o.hostname}>`,
    `To: <${o.to}>`,
    `Subject: Report Domain: ${o.domain} Submitter: ${o.hostname} Report-ID: <${o.reportId}>`,
    `Date: ${rfc5322Date(o.date)}`,
    `Message-ID: <${o.reportId}@${o.hostname}>`,
    `TLS-Report-Domain: ${o.domain}`,
    `TLS-Report-Submitter: ${o.hostname}`,
    'Auto-Submitted: auto-generated',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type="tlsrpt"; boundary="${boundary}"`,
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    '',
    `SMTP TLS report for ${o.domain} from ${o.hostname} (RFC 8460), attached.`,
    '',
    `--${boundary}`,
    `Content-Type: application/tlsrpt+gzip; name="${name}"`,
    'Content-Transfer-Encoding: base64',
    `Content-Disposition: attachment; filename="${name}"`,
    '',
    gz.trimEnd(),
    '',
    `--${boundary}--`,
    '',
  ];
  return Buffer.from(lines.join('\r\n'));
}

export interface TlsReporterOptions {
  cfg: TlsRptConfig;
  dns: RelayConfig['dns'];
  hostname: string;
  collector: TlsReportCollector;
  /** Queue one report for one address (null sender). */
  submit: (to: string, message: Buffer) => Promise<void>;
  now?: () => number;
}

/** Sends the reports of finished days; call it periodically (app.ts: hourly). */
export class TlsReporter {
  private readonly txt: Resolver;

  constructor(private readonly o: TlsReporterOptions) {
    this.txt = new Resolver({ timeout: o.dns.timeoutMs, tries: o.dns.tries });
    if (o.dns.servers.length > 0) this.txt.setServers(o.dns.servers);
  }

  /** Reports sent (one per address). Domains without a TLSRPTv1 record get none. */
  async run(): Promise<number> {
    let sent = 0;
    for (const agg of this.o.collector.takeCompletedDays()) {
      const rua = await this.txt
        .resolveTxt(`_smtp._tls.${agg.domain}`)
        .then((rs) => parseRua(rs.map((chunks) => chunks.join(''))))
        .catch(() => []);
      const reportId = `${agg.day}.${agg.domain}.${randomBytes(4).toString('hex')}`;
      const json = buildReportJson(agg, this.o.cfg, reportId);
      for (const to of rua) {
        await this.o.submit(to, buildReportMessage({ hostname: this.o.hostname, to, domain: agg.domain, reportId, json, date: new Date((this.o.now ?? Date.now)()) }));
        sent++;
      }
    }
    return sent;
  }

  cancel(): void {
    this.txt.cancel();
  }
}
