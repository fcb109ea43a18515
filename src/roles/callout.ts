/**
 * RCPT callout: ask the primary MX whether a recipient exists, without
 * sending mail (EHLO, MAIL FROM:<>, RCPT TO, QUIT), and cache the answer so
 * the backup MX keeps refusing unknown recipients (no backscatter) and keeps
 * taking known ones while the primary is down. 2xx → exists, 5xx → unknown,
 * anything else (4xx, refused, timeout) → unavailable, never cached.
 * Talks to: the primary over TCP (plaintext: no message is sent). Trusts: its replies.
 */
import net from 'node:net';

export type CalloutAnswer = 'exists' | 'unknown' | 'unavailable';

export interface CalloutResult {
  answer: CalloutAnswer;
  /** The deciding reply (or error) for logs. */
  reply: string;
  cached: boolean;
}

export interface CalloutTarget {
  host: string;
  port: number;
}

/** One SMTP conversation bounded by `timeoutMs` in all. */
export function probeRecipient(target: CalloutTarget, rcpt: string, opts: { helo: string; timeoutMs: number }): Promise<{ answer: CalloutAnswer; reply: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: target.host, port: target.port });
    let buf = '';
    let step = 0;
    let done = false;
    const finish = (answer: CalloutAnswer, reply: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (!socket.destroyed) {
        socket.end('QUIT\r\n');
        socket.destroySoon?.();
      }
      resolve({ answer, reply });
    };
    const timer = setTimeout(() => {
      finish('unavailable', `callout timed out after ${opts.timeoutMs} ms`);
      socket.destroy();
    }, opts.timeoutMs);
    socket.setEncoding('latin1');
    socket.on('error', (err) => finish('unavailable', `callout: ${err.message}`));
    socket.on('close', () => finish('unavailable', 'callout: connection closed'));
    const send = (line: string) => socket.write(`${line}\r\n`);
    socket.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        if (!/^\d{3}(?: |$)/.test(line)) continue; // continuation line
        const code = Number(line.slice(0, 3));
        // Steps: 0 greeting, 1 EHLO, 2 MAIL, 3 RCPT (the question).
        if (code < 200 || code >= 300) return finish(code >= 500 && step === 3 ? 'unknown' : 'unavailable', line);
        if (step === 0) send(`EHLO ${opts.helo}`);
        else if (step === 1) send('MAIL FROM:<>');
        else if (step === 2) send(`RCPT TO:<${rcpt}>`);
        else return finish('exists', line);
        step++;
      }
    });
  });
}

/** Cached callouts; a fleet-wide cache would go in the state store (counters only today). */
export class CalloutCache {
  private readonly cache = new Map<string, { answer: 'exists' | 'unknown'; reply: string; until: number }>();
  private readonly inflight = new Map<string, Promise<CalloutResult>>();

  constructor(
    private readonly opts: { helo: string; timeoutMs: number; positiveTtlMs: number; negativeTtlMs: number; maxEntries?: number },
    private readonly clock: () => number = Date.now,
  ) {}

  async check(target: CalloutTarget, rcpt: string): Promise<CalloutResult> {
    const key = `${target.host}:${target.port}:${rcpt.toLowerCase()}`;
    const now = this.clock();
    const hit = this.cache.get(key);
    const fresh = hit && hit.until > now ? hit : undefined;
    // A negative answer is re-asked when it expires; a positive one too, but
    // while the primary is unreachable an expired positive answer still counts.
    if (fresh) return { answer: fresh.answer, reply: fresh.reply, cached: true };
    let p = this.inflight.get(key);
    if (!p) {
      p = probeRecipient(target, rcpt, this.opts).then((r) => {
        if (r.answer !== 'unavailable') {
          const ttl = r.answer === 'exists' ? this.opts.positiveTtlMs : this.opts.negativeTtlMs;
          if (this.cache.size >= (this.opts.maxEntries ?? 100_000)) this.cache.delete(this.cache.keys().next().value!);
          this.cache.set(key, { answer: r.answer, reply: r.reply, until: this.clock() + ttl });
          return { ...r, cached: false };
        }
        if (hit?.answer === 'exists') return { answer: 'exists' as const, reply: `${hit.reply} (stale: ${r.reply})`, cached: true };
        return { ...r, cached: false };
      });
      this.inflight.set(key, p);
      p.finally(() => this.inflight.delete(key)).catch(() => undefined);
    }
    return p;
  }
}
