/**
 * Test MXes that answer like a throttling mailbox provider, per client
 * address (a provider limits each sending IP): `421 4.7.0` at connect beyond
 * maxConnections open sessions, at MAIL FROM beyond messagesPerConnection
 * transactions on one session, and beyond `perWindow` messages in a sliding
 * window of `windowMs` (a provider's "per minute", shortened for tests).
 * Limits can be changed between tests. Every MAIL FROM it accepted and every
 * 421 it gave is recorded with its time and client address.
 */
import type { SMTPServerSession } from 'smtp-server';
import type { TestMxOptions } from '../helpers/test-mx';
import { startMxGroup, type CountedMx } from './fixtures';

export interface ThrottleLimits {
  maxConnections?: number;
  messagesPerConnection?: number;
  perWindow?: number;
  windowMs?: number;
}

export interface SinkEvent {
  readonly at: number;
  readonly client: string;
  readonly session: string;
}

export interface ThrottlingSink {
  readonly mx: CountedMx;
  limits: ThrottleLimits;
  /** MAIL FROM accepted. */
  readonly mails: SinkEvent[];
  /** 421 replies given (connect or MAIL FROM). */
  readonly refusals: SinkEvent[];
  /** Sessions open now / at most at once, per client address. */
  readonly open: Map<string, number>;
  readonly maxOpen: Map<string, number>;
  /** Transactions per session (by session id). */
  readonly perSession: Map<string, number>;
  reset(): void;
}

function reply421(text: string): Error {
  return Object.assign(new Error(text), { responseCode: 421 });
}

/** A throttling sink (host with options) plus ordinary MXes, all on one port (MX delivery uses one port). */
export async function startThrottlingGroup(
  throttling: { host: string; limits: ThrottleLimits; dataDelayMs?: number },
  others: Array<TestMxOptions & { host: string }>,
): Promise<{ port: number; sink: ThrottlingSink; others: CountedMx[] }> {
  const sink = {
    limits: throttling.limits,
    mails: [] as SinkEvent[],
    refusals: [] as SinkEvent[],
    open: new Map<string, number>(),
    maxOpen: new Map<string, number>(),
    perSession: new Map<string, number>(),
    reset() {
      for (const l of [sink.mails, sink.refusals]) l.length = 0;
      for (const m of [sink.open, sink.maxOpen, sink.perSession]) m.clear();
    },
  };
  const event = (s: SMTPServerSession): SinkEvent => ({ at: Date.now(), client: s.remoteAddress, session: s.id });
  const g = await startMxGroup([
    {
      host: throttling.host,
      dataDelayMs: throttling.dataDelayMs,
      extra: {
        onConnect(s, cb) {
          const n = (sink.open.get(s.remoteAddress) ?? 0) + 1;
          sink.open.set(s.remoteAddress, n);
          sink.maxOpen.set(s.remoteAddress, Math.max(n, sink.maxOpen.get(s.remoteAddress) ?? 0));
          const max = sink.limits.maxConnections;
          if (max !== undefined && n > max) {
            sink.refusals.push(event(s));
            return cb(reply421('4.7.0 Too many concurrent connections from your IP, try again later'));
          }
          cb();
        },
        onClose(s) {
          sink.open.set(s.remoteAddress, (sink.open.get(s.remoteAddress) ?? 1) - 1);
        },
        onMailFrom(_a, s, cb) {
          const l = sink.limits;
          const done = sink.perSession.get(s.id) ?? 0;
          if (l.messagesPerConnection !== undefined && done >= l.messagesPerConnection) {
            sink.refusals.push(event(s));
            return cb(reply421('4.7.0 Too many messages on this connection, try again later'));
          }
          if (l.perWindow !== undefined) {
            const since = Date.now() - (l.windowMs ?? 60_000);
            const recent = sink.mails.filter((m) => m.client === s.remoteAddress && m.at > since).length;
            if (recent >= l.perWindow) {
              sink.refusals.push(event(s));
              return cb(reply421('4.7.0 [127.0.0.x] Our system has detected an unusual rate of mail from your IP; rate limit exceeded, try again later'));
            }
          }
          sink.perSession.set(s.id, done + 1);
          sink.mails.push(event(s));
          cb();
        },
      },
    },
    ...others,
  ]);
  const [mx, ...rest] = g.mxs;
  return { port: g.port, sink: Object.assign(sink, { mx: mx! }), others: rest };
}

/** Most events from one client in any window of `ms` (sliding, anchored at each event). */
export function peakInWindow(events: readonly SinkEvent[], client: string, ms: number): number {
  const at = events.filter((e) => e.client === client).map((e) => e.at).sort((a, b) => a - b);
  let peak = 0;
  for (let i = 0, j = 0; i < at.length; i++) {
    while (at[i]! - at[j]! >= ms) j++;
    peak = Math.max(peak, i - j + 1);
  }
  return peak;
}
