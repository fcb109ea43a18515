/**
 * A raw SMTP client for tests that need to see exact replies: it sends the
 * lines it is told and returns each reply (code, text lines) as received.
 * Binds to a chosen 127.0.0.x so tests can play different subscribers.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface SmtpReply {
  code: number;
  lines: string[];
  /** The whole reply as one string, e.g. "554 5.7.1 Relay access denied". */
  text: string;
}

export class RawSmtp {
  private socket: net.Socket;
  private buf = '';
  private replies: SmtpReply[] = [];
  private waiters: Array<() => void> = [];
  private partial: string[] = [];
  closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.attach();
  }

  private attach(): void {
    this.socket.setEncoding('latin1');
    this.socket.on('data', (d: string) => this.onData(d));
    this.socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    });
    this.socket.on('error', () => undefined);
  }

  static async connect(port: number, opts: { host?: string; localAddress?: string; implicitTls?: boolean } = {}): Promise<RawSmtp> {
    const host = opts.host ?? '127.0.0.1';
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = opts.implicitTls
        ? tls.connect({ host, port, localAddress: opts.localAddress, rejectUnauthorized: false } as tls.ConnectionOptions, () => resolve(s))
        : net.connect({ host, port, localAddress: opts.localAddress }, () => resolve(s));
      s.once('error', reject);
    });
    return new RawSmtp(socket);
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\r\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 2);
      this.partial.push(line);
      if (/^\d{3} /.test(line) || /^\d{3}$/.test(line)) {
        const lines = this.partial.map((l) => l.slice(4));
        this.replies.push({ code: Number(line.slice(0, 3)), lines, text: this.partial.join('\n') });
        this.partial = [];
        for (const w of this.waiters.splice(0)) w();
      }
    }
  }

  /** The next reply (waits up to `ms`). */
  async reply(ms = 10_000): Promise<SmtpReply> {
    const deadline = Date.now() + ms;
    while (this.replies.length === 0) {
      if (this.closed) throw new Error('connection closed before a reply');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a reply');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.replies.shift()!;
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Writes and resolves once the bytes are handed to the kernel. */
  writeNow(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(data, (err) => (err ? reject(err) : resolve())));
  }

  /** Each write leaves at once (byte-by-byte tests). */
  noDelay(): void {
    this.socket.setNoDelay(true);
  }

  /** Replies received and not read yet, plus any partial reply line, joined: for "nothing was answered". */
  unread(): string {
    return [...this.replies.map((r) => r.text), ...this.partial, this.buf].filter((s) => s !== '').join(' | ');
  }

  /** The next reply if one has arrived, without taking it. */
  peekReply(): SmtpReply | undefined {
    return this.replies[0];
  }

  async cmd(line: string): Promise<SmtpReply> {
    this.socket.write(`${line}\r\n`);
    return this.reply();
  }

  async starttls(): Promise<SmtpReply> {
    const r = await this.cmd('STARTTLS');
    if (r.code !== 220) return r;
    await this.upgradeTls();
    return r;
  }

  /** The TLS handshake on this connection (after a 220 to a STARTTLS, also one the test wrote itself). */
  async upgradeTls(): Promise<void> {
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('close');
    const secure = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: this.socket, rejectUnauthorized: false }, () => resolve(s));
      s.once('error', reject);
    });
    this.socket = secure;
    this.attach();
  }

  /** The server's certificate (after STARTTLS or on an implicit-TLS connection). */
  peerCertificate(): tls.PeerCertificate | undefined {
    return this.socket instanceof tls.TLSSocket ? this.socket.getPeerCertificate() : undefined;
  }

  /** Sends DATA, the raw body (must end with CRLF.CRLF unless testing otherwise), returns the final reply. */
  async data(raw: string | Buffer): Promise<SmtpReply> {
    const r = await this.cmd('DATA');
    if (r.code !== 354) return r;
    this.socket.write(raw);
    return this.reply(30_000);
  }

  close(): void {
    this.socket.destroy();
  }

  async quit(): Promise<void> {
    try {
      await this.cmd('QUIT');
    } catch {
      // already closed
    }
    this.socket.destroy();
  }
}

/** Every reply until the server closes the connection; throws if it has not closed it within `ms`. */
export async function repliesUntilClosed(c: RawSmtp, ms = 10_000): Promise<SmtpReply[]> {
  const got: SmtpReply[] = [];
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      got.push(await c.reply(Math.max(1, deadline - Date.now())));
    } catch {
      break; // closed (and nothing left to read) or out of time
    }
  }
  if (!c.closed) throw new Error(`the server did not close the connection within ${ms} ms; replies: ${got.map((r) => r.text).join(' | ')}`);
  return got;
}

/** An implicit-TLS session (port 465 style) from `ip`, greeted and past EHLO. */
export async function tlsSessionFrom(port: number, ip: string, helo: string): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port, { localAddress: ip, implicitTls: true });
  await c.reply();
  await c.cmd(`EHLO ${helo}`);
  return c;
}

export function authPlain(user: string, pass: string): string {
  return Buffer.from(`\0${user}\0${pass}`).toString('base64');
}

/** A minimal valid message with CRLF endings, ready for DATA. */
export function message(opts: { from: string; to: string; subject?: string; body?: string; headers?: string[] }): string {
  const lines = [
    `From: <${opts.from}>`,
    `To: <${opts.to}>`,
    `Subject: ${opts.subject ?? 'test'}`,
    ...(opts.headers ?? []),
    '',
    opts.body ?? 'Hello.',
  ];
  return `${lines.join('\r\n')}\r\n.\r\n`;
}
