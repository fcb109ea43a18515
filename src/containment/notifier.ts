/**
 * The abuse desk's webhook: each containment event is POSTed as JSON and
 * retried with exponential backoff (initial·2^n, at most maxBackoff) until
 * the desk answers 2xx or maxAttempts is reached (then logged as lost).
 * Deliveries run in the background, one after another per notifier, so a
 * slow desk never slows mail; `idle()` waits for the queue (tests, stop).
 *
 * Talks to: the abuse desk over HTTP(S) (fetch). Trusts: nothing it hears back.
 */
import type { Logger } from '../log';

export interface WebhookOptions {
  readonly url: string;
  readonly maxAttempts: number;
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly timeoutMs: number;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly logger?: Logger;
}

export interface DeliveryReport {
  readonly ok: boolean;
  readonly attempts: number;
  readonly lastStatus?: number;
}

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export class WebhookNotifier {
  private chain: Promise<unknown> = Promise.resolve();
  private readonly sleep: (ms: number) => Promise<void>;
  private stopped = false;

  constructor(private readonly opts: WebhookOptions) {
    this.sleep = opts.sleep ?? defaultSleep;
  }

  /** Queue one event; the returned promise settles when it is delivered or given up. */
  send(event: unknown): Promise<DeliveryReport> {
    const p = this.chain.then(() => this.deliver(event));
    this.chain = p.catch(() => undefined);
    return p;
  }

  idle(): Promise<unknown> {
    return this.chain;
  }

  stop(): void {
    this.stopped = true;
  }

  private async deliver(event: unknown): Promise<DeliveryReport> {
    const body = JSON.stringify(event);
    let delay = this.opts.initialBackoffMs;
    let lastStatus: number | undefined;
    for (let attempt = 1; attempt <= this.opts.maxAttempts; attempt++) {
      try {
        const res = await fetch(this.opts.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          signal: AbortSignal.timeout(this.opts.timeoutMs),
        });
        lastStatus = res.status;
        await res.arrayBuffer().catch(() => undefined);
        if (res.status >= 200 && res.status < 300) return { ok: true, attempts: attempt, lastStatus };
      } catch {
        lastStatus = undefined;
      }
      if (attempt === this.opts.maxAttempts || this.stopped) {
        this.opts.logger?.error({ evt: 'containment', webhook: 'lost', attempts: attempt, status: lastStatus }, 'abuse desk webhook gave up');
        return { ok: false, attempts: attempt, ...(lastStatus !== undefined ? { lastStatus } : {}) };
      }
      this.opts.logger?.warn({ evt: 'containment', webhook: 'retry', attempt, status: lastStatus, inMs: delay }, 'abuse desk webhook failed, retrying');
      await this.sleep(delay);
      delay = Math.min(this.opts.maxBackoffMs, delay * 2);
    }
    return { ok: false, attempts: this.opts.maxAttempts, ...(lastStatus !== undefined ? { lastStatus } : {}) };
  }
}
