/**
 * How long the message body may take to go out: relay.dataTimeout and
 * relay.minDataRate, read as Postfix reads smtp_data_xfer_timeout with
 * smtp_min_data_rate (and its per-request deadlines). A time budget starts
 * at `timeoutMs` and is spent as time passes; each write earns back
 * `bytes / minRate` seconds, but the budget never grows past `timeoutMs`.
 *
 * So, whatever the server's pace:
 *  - the body never goes more than `timeoutMs` without a write (a stall);
 *  - a body of S bytes gets at most `timeoutMs + S / minRate` in all (the
 *    budget at any moment is at most the start's plus what was written,
 *    paid for at minRate), where the inactivity timeout alone allowed any
 *    length to a server that reads a few bytes now and then;
 *  - a server that reads steadily at a fraction f of minRate is cut off
 *    after `timeoutMs / (1 - f)`: credit cannot be saved up by a fast start.
 * A minRate of 0 asks for progress only (Postfix before 3.7).
 *
 * A write is counted when the socket takes it, which may be before the
 * server reads it (up to the kernel's send buffer, a few MB): that can make
 * the bound later by that much over minRate, never earlier.
 */
export class DataDeadline {
  /** When the budget runs out (ms since the epoch). */
  private at: number;

  constructor(
    private readonly timeoutMs: number,
    private readonly minRate: number,
    now: number,
  ) {
    this.at = now + timeoutMs;
  }

  /** `bytes` were written at `now`. A budget already spent stays spent. */
  wrote(bytes: number, now: number): void {
    if (this.at <= now) return;
    const earned = this.minRate > 0 ? (bytes * 1000) / this.minRate : Infinity;
    this.at = Math.min(this.at + earned, now + this.timeoutMs);
  }

  /** Milliseconds left at `now`; 0 or less: out of time. */
  left(now: number): number {
    return this.at - now;
  }
}
