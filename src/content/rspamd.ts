/**
 * An rspamd client over its HTTP protocol: POST /checkv2 with the message
 * as the body and the envelope as request headers (IP, Helo, From, Rcpt,
 * User, Queue-Id), one answer in JSON (action, score, required_score,
 * symbols). Every scan has a hard deadline (AbortSignal): a slow or absent
 * rspamd becomes an error value, never a hung SMTP session. A spilled
 * message's tail is streamed from its spill file, never read whole.
 *
 * Talks to: rspamd's normal worker over HTTP. Trusts: nothing in the
 * answer beyond its shape (an unknown action is an error).
 */
import { createReadStream } from 'node:fs';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { RSPAMD_ACTIONS, type RspamdAction } from './config';

export interface ScanRequest {
  readonly chunks: readonly Buffer[];
  readonly spillFile?: string;
  readonly size: number;
  readonly ip: string;
  readonly helo?: string;
  readonly mailFrom: string;
  readonly recipients: readonly string[];
  readonly user?: string;
  readonly queueId: string;
}

export type ScanResult =
  | { readonly ok: true; readonly action: RspamdAction; readonly score: number; readonly required: number; readonly symbols: readonly string[]; readonly ms: number }
  | { readonly ok: false; readonly error: 'timeout' | 'unavailable' | 'bad_answer'; readonly detail: string; readonly ms: number };

/** Header values must be one line of visible ASCII (addresses are, after SMTP; SMTPUTF8 ones are percent-encoded). */
const headerValue = (v: string): string => v.replace(/[^\x20-\x7e]/g, (c) => encodeURIComponent(c));

export async function rspamdScan(baseUrl: string, req: ScanRequest, timeoutMs: number): Promise<ScanResult> {
  const t0 = performance.now();
  const ms = () => Math.round((performance.now() - t0) * 10) / 10;
  const url = new URL('/checkv2', baseUrl);
  const headers: http.OutgoingHttpHeaders = {
    'content-length': req.size,
    ip: req.ip,
    from: headerValue(req.mailFrom),
    rcpt: req.recipients.map(headerValue),
    'queue-id': req.queueId,
    ...(req.helo ? { helo: headerValue(req.helo) } : {}),
    ...(req.user ? { user: headerValue(req.user) } : {}),
  };
  const signal = AbortSignal.timeout(timeoutMs);
  return new Promise<ScanResult>((resolve) => {
    let settled = false;
    const finish = (r: ScanResult) => {
      if (!settled) {
        settled = true;
        resolve(r);
      }
    };
    const httpReq = http.request(url, { method: 'POST', headers, signal }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', (err) => finish({ ok: false, error: signal.aborted ? 'timeout' : 'unavailable', detail: err.message, ms: ms() }));
      res.on('end', () => {
        if (res.statusCode !== 200) return finish({ ok: false, error: 'bad_answer', detail: `HTTP ${res.statusCode}`, ms: ms() });
        finish(parseAnswer(Buffer.concat(parts).toString('utf8'), ms()));
      });
    });
    httpReq.on('error', (err: NodeJS.ErrnoException) => {
      finish({ ok: false, error: signal.aborted ? 'timeout' : 'unavailable', detail: signal.aborted ? `no answer in ${timeoutMs} ms` : (err.code ?? err.message), ms: ms() });
    });
    void (async () => {
      try {
        for (const c of req.chunks) if (!httpReq.write(c)) await new Promise((r) => httpReq.once('drain', r));
        if (req.spillFile) {
          for await (const c of createReadStream(req.spillFile, { highWaterMark: 256 * 1024 })) if (!httpReq.write(c)) await new Promise((r) => httpReq.once('drain', r));
        }
        httpReq.end();
      } catch (err) {
        httpReq.destroy(err as Error);
      }
    })();
  });
}

function parseAnswer(text: string, ms: number): ScanResult {
  let j: { action?: unknown; score?: unknown; required_score?: unknown; symbols?: unknown };
  try {
    j = JSON.parse(text) as typeof j;
  } catch {
    return { ok: false, error: 'bad_answer', detail: 'not JSON', ms };
  }
  const action = j.action as RspamdAction;
  if (!RSPAMD_ACTIONS.includes(action)) return { ok: false, error: 'bad_answer', detail: `unknown action ${JSON.stringify(j.action)}`, ms };
  const score = typeof j.score === 'number' ? j.score : NaN;
  const required = typeof j.required_score === 'number' ? j.required_score : NaN;
  const symbols = j.symbols && typeof j.symbols === 'object' ? Object.keys(j.symbols).slice(0, 20) : [];
  return { ok: true, action, score, required, symbols, ms };
}
