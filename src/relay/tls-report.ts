/**
 * SMTP TLS Reporting (RFC 8460): a daily aggregate report per policy domain
 * (the recipient domain whose MTA-STS policy or DANE records applied),
 * sent to the rua of its `_smtp._tls.<domain>` TXT record
 * (`v=TLSRPTv1; rua=mailto:…,https://…`): mailed to each mailto: address and
 * POSTed to each https: endpoint (tls-report-https.ts).
 *
 * Talks to: the relay's DNS servers (TXT), whatever `submit` the caller
 * gives it (app.ts: the spool, so mailed reports are queued and retried like
 * any mail, with the null sender so they never bounce back), and the https
 * endpoints. Trusts: nothing in the TXT record beyond the mailto addresses
 * and https URLs it parses strictly.
 *
 * A POST that fails in a way worth retrying (network, certificate, timeout,
 * 5xx/408/429) is kept in memory and tried again at the next runs, at most
 * MAX_POST_ATTEMPTS times in all; a 3xx (never followed) or another 4xx is
 * not retried. Failures are logged (`evt: tls_report`) with the endpoint's
 * host only: a URL's path or query may carry the receiver's token.
 *
 * Counts live in memory per UTC day: a restart loses the day's counts so far
 * (a report is a statistic, not mail). A day is reported once it is over.
 */
import { gzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import type { Logger } from '../log';
import { createMxResolver, type DnsConfig, type MxResolver } from './mx';
import { postReport } from './tls-report-https';
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

/** At most this many rua URIs of one record are used (a record cannot make us send hundreds of reports). */
const MAX_RUA = 10;
/** Attempts per https endpoint and report: the first at the run that made it, the rest at the next runs. */
export const MAX_POST_ATTEMPTS = 3;
/** Failed POSTs waiting for the next run; beyond this the oldest is dropped (memory stays bounded). */
const MAX_PENDING_POSTS = 1000;
/** One POST, from DNS to response, must be over within this. */
const POST_TIMEOUT_MS = 30_000;

export interface Rua {
  readonly mailto: string[];
  readonly https: URL[];
}

/** An https: rua: an absolute https URL without credentials. */
function httpsRua(u: string): URL | undefined {
  if (!/^https:\/\/[^\s<>"]+$/i.test(u)) return undefined;
  try {
    const url = new URL(u);
    return url.protocol === 'https:' && url.username === '' && url.password === '' && url.hostname !== '' ? url : undefined;
  } catch {
    return undefined;
  }
}

/** The rua mailto: addresses and https: URLs of a TLSRPTv1 TXT record set (exactly one v=TLSRPTv1 record, RFC 8460 §3). */
export function parseRua(records: readonly string[]): Rua {
  const out: Rua = { mailto: [], https: [] };
  const rpt = records.filter((r) => /^v=TLSRPTv1\s*(;|$)/.test(r));
  if (rpt.length !== 1) return out;
  const rua = /(?:^|;)\s*rua=([^;]*)/.exec(rpt[0]);
  if (!rua) return out;
  for (const u of rua[1].split(',').map((x) => x.trim()).slice(0, MAX_RUA)) {
    if (/^mailto:[^@\s,;<>]+@[A-Za-z0-9.-]+$/i.test(u)) out.mailto.push(decodeURIComponent(u.slice('mailto:'.length)));
    const url = httpsRua(u);
    if (url) out.https.push(url);
  }
  return out;
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

/** The report as sent (RFC 8460 §5.3): the JSON, gzipped. */
export function gzipReport(json: object): Buffer {
  return gzipSync(Buffer.from(JSON.stringify(json)));
}

/** The report mail (RFC 8460 §5.3): multipart/report; report-type="tlsrpt", the gzipped JSON attached. */
export function buildReportMessage(o: { hostname: string; to: string; domain: string; reportId: string; gz: Buffer; date: Date }): Buffer {
  const boundary = `tlsrpt-${randomBytes(8).toString('hex')}`;
  const gz = o.gz.toString('base64').replace(/.{1,76}/g, '$&\r\n');
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
  dns: DnsConfig;
  hostname: string;
  collector: TlsReportCollector;
  /** Queue one report for one address (null sender). */
  submit: (to: string, message: Buffer) => Promise<void>;
  logger: Logger;
  /** CA certificates (PEM) trusted for https endpoints instead of Node's roots (app.ts: relay.mtaSts.ca). */
  ca?: string;
  /** Deadline of one POST (default 30 s). */
  postTimeoutMs?: number;
  now?: () => number;
}

interface PendingPost {
  readonly url: URL;
  readonly gz: Buffer;
  readonly domain: string;
  readonly reportId: string;
  attempts: number;
}

/** Sends the reports of finished days and retries failed POSTs; call it periodically (app.ts: hourly). */
export class TlsReporter {
  private readonly txt: Resolver;
  private readonly hosts: MxResolver;
  /** POSTs that failed and will be tried again at the next run, oldest first. */
  private pending: PendingPost[] = [];
  private running = false;

  constructor(private readonly o: TlsReporterOptions) {
    this.txt = new Resolver({ timeout: o.dns.timeoutMs, tries: o.dns.tries });
    if (o.dns.servers.length > 0) this.txt.setServers(o.dns.servers);
    this.hosts = createMxResolver(o.dns);
  }

  /**
   * Reports sent: one per mailto: address queued, one per https: endpoint
   * that accepted (2xx), retries included. Domains without a TLSRPTv1 record
   * get none. A run while another is still going does nothing.
   */
  async run(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    try {
      const posts: PendingPost[] = [];
      let sent = 0;
      for (const agg of this.o.collector.takeCompletedDays()) {
        const rua = await this.txt
          .resolveTxt(`_smtp._tls.${agg.domain}`)
          .then((rs) => parseRua(rs.map((chunks) => chunks.join(''))))
          .catch((): Rua => ({ mailto: [], https: [] }));
        const reportId = `${agg.day}.${agg.domain}.${randomBytes(4).toString('hex')}`;
        const gz = gzipReport(buildReportJson(agg, this.o.cfg, reportId));
        for (const to of rua.mailto) {
          await this.o.submit(to, buildReportMessage({ hostname: this.o.hostname, to, domain: agg.domain, reportId, gz, date: new Date((this.o.now ?? Date.now)()) }));
          sent++;
        }
        for (const url of rua.https) posts.push({ url, gz, domain: agg.domain, reportId, attempts: 0 });
      }
      // Retries first, oldest first; taken only now, so a failed mail submission above keeps them.
      const due = [...this.pending, ...posts];
      this.pending = [];
      for (const p of due) if (await this.post(p)) sent++;
      return sent;
    } finally {
      this.running = false;
    }
  }

  /** Failed POSTs waiting for the next run. */
  pendingPosts(): number {
    return this.pending.length;
  }

  cancel(): void {
    this.txt.cancel();
    this.hosts.cancel();
  }

  /** One attempt; a retryable failure with attempts left goes back to `pending`. */
  private async post(p: PendingPost): Promise<boolean> {
    p.attempts++;
    const r = await postReport(p.url, p.gz, { hosts: this.hosts, ca: this.o.ca, timeoutMs: this.o.postTimeoutMs ?? POST_TIMEOUT_MS });
    const where = { evt: 'tls_report', domain: p.domain, reportId: p.reportId, endpoint: p.url.host, attempt: p.attempts };
    if (r.ok) {
      this.o.logger.info({ ...where, status: r.status }, `TLS report for ${p.domain} accepted by ${p.url.host}`);
      return true;
    }
    const retry = r.retry && p.attempts < MAX_POST_ATTEMPTS;
    this.o.logger.warn({ ...where, result: r.reason, retry }, `TLS report for ${p.domain} not accepted by ${p.url.host}: ${r.reason}${retry ? ' (retried at the next run)' : ''}`);
    if (retry) {
      this.pending.push(p);
      if (this.pending.length > MAX_PENDING_POSTS) {
        const dropped = this.pending.shift()!;
        this.o.logger.warn({ evt: 'tls_report', domain: dropped.domain, reportId: dropped.reportId, endpoint: dropped.url.host, result: 'dropped' }, 'too many TLS reports waiting for a retry; the oldest is dropped');
      }
    }
    return false;
  }
}
