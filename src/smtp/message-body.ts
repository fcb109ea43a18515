/**
 * One message's bytes as they arrive in DATA, for one consumer that reads
 * them with `for await` (src/smtp/collect.ts). A queue, not a stream: a 4 KB
 * message is one push and one end, read in two resolved promises.
 *
 * Back-pressure: when more than HIGH_WATER bytes wait unread, `onFull` runs
 * (the connection stops reading the socket) and `onDrained` once the reader
 * caught up. `destroy(err)` (the DATA deadline, a lost client) makes the
 * reader throw `err`; later bytes are dropped.
 */

const HIGH_WATER = 1024 * 1024;

export class MessageBody implements AsyncIterableIterator<Buffer> {
  /** More bytes arrived than the listener's message size limit. */
  sizeExceeded = false;
  byteLength = 0;
  private readonly queue: Buffer[] = [];
  private head = 0;
  private queued = 0;
  private ended = false;
  private error: Error | undefined;
  private waiting: { resolve(r: IteratorResult<Buffer>): void; reject(e: Error): void } | undefined;
  private full = false;

  constructor(
    private readonly maxBytes: number,
    private readonly onFull: () => void,
    private readonly onDrained: () => void,
  ) {}

  push(part: Buffer): void {
    this.byteLength += part.length;
    if (this.byteLength > this.maxBytes) this.sizeExceeded = true;
    if (this.error || this.ended) return;
    const w = this.waiting;
    if (w) {
      this.waiting = undefined;
      w.resolve({ value: part, done: false });
      return;
    }
    this.queue.push(part);
    this.queued += part.length;
    if (!this.full && this.queued > HIGH_WATER) {
      this.full = true;
      this.onFull();
    }
  }

  end(): void {
    if (this.ended || this.error) return;
    this.ended = true;
    const w = this.waiting;
    if (w && this.head >= this.queue.length) {
      this.waiting = undefined;
      w.resolve({ value: undefined, done: true });
    }
  }

  destroy(err: Error): void {
    if (this.error) return;
    this.error = err;
    this.queue.length = 0;
    this.head = 0;
    this.queued = 0;
    const w = this.waiting;
    if (w) {
      this.waiting = undefined;
      w.reject(err);
    }
    if (this.full) {
      this.full = false;
      this.onDrained();
    }
  }

  next(): Promise<IteratorResult<Buffer>> {
    if (this.error) return Promise.reject(this.error);
    if (this.head < this.queue.length) {
      const value = this.queue[this.head]!;
      this.queue[this.head++] = EMPTY;
      this.queued -= value.length;
      if (this.head === this.queue.length) {
        this.queue.length = 0;
        this.head = 0;
      }
      if (this.full && this.queued <= HIGH_WATER / 2) {
        this.full = false;
        this.onDrained();
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  /** The reader stopped early (break or throw in for-await): nothing more is kept. */
  return(): Promise<IteratorResult<Buffer>> {
    this.destroy(new Error('reader gone'));
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

const EMPTY = Buffer.alloc(0);
