/**
 * What the gateway does with a whole message at end of DATA, after the
 * policy engine's data decision and before Received:/DKIM (the session
 * calls `check` once; src/smtp/session.ts stays a conversation):
 *   1. content scan (content.yaml): rspamd's verdict within its deadline
 *      becomes a verdict here, per listener / role and per plan, named
 *      after its rule ("content.rspamd.reject", "content.rspamd.error");
 *      warnOnly logs and counts what it would have done and accepts;
 *      rspamd down or late takes onError (fail-open accept, or fail-closed
 *      tempfail 451 4.7.1); a spam verdict also raises containment's
 *      contentSpam signal for the sender (not in warnOnly);
 *   2. the sender token header (feedback.yaml senderToken) for mail of
 *      subscribers (submission, intercept), which complaint reports map back;
 *   3. the intercept address is noted for DNSBL polling.
 *
 * Talks to: rspamd (rspamd.ts), containment (external), the DNSBL poller.
 * Trusts: the session's facts; rspamd's answer only as a verdict source.
 */
import type { Account } from '../accounts/store';
import type { ExternalResult, ExternalSubject } from '../containment/external';
import { verdictValues, type ClientInfo, type Verdict, type VerdictAction } from '../envelope';
import type { Logger } from '../log';
import type { ActionSpec } from '../policy/action';
import type { ContentConfig, RspamdAction } from './config';
import { rspamdScan, type ScanResult } from './rspamd';

export interface EndOfDataInput {
  readonly listener: { readonly name: string; readonly role: string };
  readonly client: ClientInfo;
  readonly account?: Account;
  readonly mailFrom: string;
  readonly recipients: readonly string[];
  readonly queueId: string;
  readonly chunks: readonly Buffer[];
  readonly spillFile?: string;
  readonly size: number;
}

export interface EndOfDataResult {
  /** A refusal or hold (accept is no verdict). */
  readonly verdict?: Verdict;
  /** Header lines (CRLF-terminated) to add before signing. */
  readonly headers: string;
}

export interface ContentObserver {
  /** One scan: rspamd's action (or "error"/"skipped"), what the gateway did, how long it took. */
  scan?(result: { action: RspamdAction | 'error' | 'skipped'; outcome: VerdictAction | 'warn'; rule?: string; error?: string; ms: number; score?: number }): void;
}

export interface EndOfDataDeps {
  readonly content: () => ContentConfig | undefined;
  readonly planOf: (client: ClientInfo, account?: Account) => string | undefined;
  /** Containment's entry point (Containment.external). */
  readonly signal?: (who: ExternalSubject, signal: 'contentSpam') => Promise<ExternalResult>;
  /** The sender token header for a subscriber's message, or undefined. */
  readonly senderHeader?: (client: ClientInfo, queueId: string, recipients: readonly string[]) => string | undefined;
  /** A message from an intercept address (DNSBL polling keeps the active ones). */
  readonly interceptSeen?: (ip: string, listener: string) => void;
  readonly logger: Logger;
  readonly observer?: ContentObserver;
  /** Replace the scanner (never in the gateway: tests of this module alone). */
  readonly scan?: typeof rspamdScan;
}

const RULE = (what: string) => `content.rspamd.${what.replace(/ /g, '-')}`;
const REPLIES: Record<'reject' | 'tempfail', string> = { reject: 'content_rejected', tempfail: 'content_tempfail' };

export class EndOfData {
  constructor(private readonly deps: EndOfDataDeps) {}

  async check(i: EndOfDataInput): Promise<EndOfDataResult> {
    if (i.client.role === 'intercept') this.deps.interceptSeen?.(i.client.ip, i.listener.name);
    const verdict = await this.scan(i);
    const headers = verdict && verdict.action !== 'hold' ? '' : this.deps.senderHeader?.(i.client, i.queueId, i.recipients) ?? '';
    return { ...(verdict ? { verdict } : {}), headers };
  }

  /**
   * For a message judged without its body (Postfix's milter, src/postfix:
   * the body is only hashed; Postfix runs its own content milters): no
   * content scan; the sender token header and the intercept address noted,
   * as check() does.
   */
  unscanned(i: Pick<EndOfDataInput, 'listener' | 'client' | 'queueId' | 'recipients'>): string {
    if (i.client.role === 'intercept') this.deps.interceptSeen?.(i.client.ip, i.listener.name);
    return this.deps.senderHeader?.(i.client, i.queueId, i.recipients) ?? '';
  }

  private async scan(i: EndOfDataInput): Promise<Verdict | undefined> {
    const cfg = this.deps.content();
    if (!cfg || !(cfg.listeners.has(i.listener.name) || cfg.listeners.has(i.listener.role))) return undefined;
    if (i.size > cfg.rspamd.maxSize) {
      this.deps.observer?.scan?.({ action: 'skipped', outcome: 'accept', ms: 0 });
      return undefined;
    }
    const scan = this.deps.scan ?? rspamdScan;
    const r: ScanResult = await scan(cfg.rspamd.url, {
      chunks: i.chunks,
      ...(i.spillFile ? { spillFile: i.spillFile } : {}),
      size: i.size,
      ip: i.client.ip,
      ...(i.client.helo ? { helo: i.client.helo } : {}),
      mailFrom: i.mailFrom,
      recipients: i.recipients,
      ...(i.client.user ? { user: i.client.user } : {}),
      queueId: i.queueId,
    }, cfg.rspamd.timeoutMs);
    const role = i.listener.role as ClientInfo['role'];
    let spec: ActionSpec;
    let rule: string;
    if (r.ok) {
      const plan = this.deps.planOf(i.client, i.account);
      const table = (plan && cfg.plans.get(plan)) || cfg.actions;
      spec = table.get(r.action)?.get(i.listener.name, role) ?? { action: 'accept' };
      rule = RULE(r.action);
    } else {
      spec = cfg.onError.get(i.listener.name, role) ?? { action: 'accept' };
      rule = RULE('error');
    }
    const outcome: VerdictAction | 'warn' = cfg.warnOnly && spec.action !== 'accept' ? 'warn' : spec.action;
    this.deps.observer?.scan?.({ action: r.ok ? r.action : 'error', outcome, rule, ms: r.ms, ...(r.ok ? { score: r.score } : { error: r.error }) });
    const line = { evt: 'content', queueId: i.queueId, rule, outcome, ms: r.ms, ...(r.ok ? { score: r.score, required: r.required, symbols: r.symbols.slice(0, 8) } : { error: r.error, detail: r.detail }) };
    if (outcome === 'accept') this.deps.logger.debug(line, 'content scanned');
    else this.deps.logger.warn(line, r.ok ? 'content verdict' : 'content scan failed');
    if (r.ok && !cfg.warnOnly && cfg.signal.has(r.action)) await this.raise(i);
    if (outcome === 'accept' || outcome === 'warn') return undefined;
    const reply = spec.reply ?? (spec.action === 'reject' || spec.action === 'tempfail' ? (r.ok ? REPLIES[spec.action] : spec.action === 'tempfail' ? 'content_scan_unavailable' : REPLIES.reject) : undefined);
    const values = spec.action === 'hold' && r.ok ? { values: verdictValues({ score: r.score, required: r.required, symbols: r.symbols.slice(0, 20).join(' ') }) } : {};
    return { action: spec.action, stage: 'data', rule, ...(reply ? { reply } : {}), ...(spec.detail ? { detail: spec.detail } : {}), ...values };
  }

  private async raise(i: EndOfDataInput): Promise<void> {
    const who: ExternalSubject | undefined = i.client.role === 'submission' && i.client.user ? { account: i.client.user } : i.client.role === 'intercept' ? { ip: i.client.ip } : undefined;
    if (!who || !this.deps.signal) return;
    try {
      await this.deps.signal(who, 'contentSpam');
    } catch (err) {
      this.deps.logger.error({ evt: 'error', queueId: i.queueId, err: (err as Error).message }, 'containment signal failed');
    }
  }
}
