/**
 * The benchmark's SMTP client connection: a minimal raw-socket client (no
 * library overhead, so the load generator stays cheaper than what it
 * measures). Reads replies (multi-line aware) and sends commands one at a
 * time like smtp-source; optional STARTTLS.
 */
import net from 'node:net';
import tls from 'node:tls';

export class LineClient {
  private buf = '';
  private waiting: ((reply: string) => void) | undefined;
  private queue: string[] = [];
  private failed: Error | undefined;
  private onFail: ((e: Error) => void) | undefined;

  private constructor(private socket: net.Socket) {
    this.attach();
  }

  static connect(host: string, port: number, localAddress?: string): Promise<LineClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port, localAddress }, () => resolve(new LineClient(s)));
      s.once('error', reject);
    });
  }

  private attach(): void {
    this.socket.setNoDelay(true);
    this.socket.on('data', (d: Buffer) => this.onData(d.toString('latin1')));
    this.socket.on('error', (e) => this.fail(e));
    this.socket.on('close', () => this.fail(new Error('connection closed')));
  }

  private fail(e: Error): void {
    if (this.failed) return;
    this.failed = e;
    this.onFail?.(e);
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    let start = 0;
    while ((nl = this.buf.indexOf('\r\n', start)) >= 0) {
      const line = this.buf.slice(start, nl);
      start = nl + 2;
      if (line.length >= 4 && line[3] === '-') continue;
      this.buf = this.buf.slice(start);
      start = 0;
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = undefined;
        w(line);
      } else this.queue.push(line);
    }
  }

  reply(): Promise<string> {
    if (this.queue.length) return Promise.resolve(this.queue.shift()!);
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.waiting = resolve;
      this.onFail = reject;
    });
  }

  async cmd(line: string | Buffer, expect: number): Promise<string> {
    this.socket.write(line);
    const r = await this.reply();
    if (!r.startsWith(String(expect))) throw new Error(`expected ${expect}, got: ${r}`);
    return r;
  }

  async starttls(): Promise<void> {
    await this.cmd('STARTTLS\r\n', 220);
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('close');
    this.socket.removeAllListeners('error');
    this.socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: this.socket, rejectUnauthorized: false }, () => resolve(s));
      s.once('error', reject);
    });
    this.attach();
  }

  /** QUIT without waiting for the answer (the session's work is done). */
  socket_quit(): void {
    this.socket.end('QUIT\r\n');
  }

  close(): void {
    this.socket.destroy();
  }
}
