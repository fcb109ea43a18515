/**
 * Follows a mailbox server's log (tail -F: polled, survives truncation and
 * rotation by inode) and turns each login line into a POP-before-SMTP grant.
 * The line format is a regex with named groups `user` and `ip`; the default
 * reads Dovecot's
 *   dovecot: pop3-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=1234, session=<…>
 * (imap-login likewise). Starts at the end of the file: only new logins count.
 * Talks to: the filesystem, PopGrants. Trusts: the log file (root-owned).
 */
import { promises as fsp } from 'node:fs';
import type { Logger } from '../log';

export interface LoginLine {
  user: string;
  ip: string;
}

export function parseLoginLine(re: RegExp, line: string): LoginLine | undefined {
  const m = re.exec(line);
  const user = m?.groups?.user;
  const ip = m?.groups?.ip;
  return user && ip ? { user, ip } : undefined;
}

export class LogFollower {
  private offset = -1;
  private ino = -1;
  private partial = '';
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly re: RegExp;

  constructor(
    private readonly file: string,
    pattern: string,
    private readonly pollMs: number,
    private readonly onLogin: (l: LoginLine) => Promise<unknown>,
    private readonly logger: Logger,
  ) {
    this.re = new RegExp(pattern);
  }

  async start(): Promise<void> {
    const st = await fsp.stat(this.file).catch(() => undefined);
    this.offset = st ? st.size : 0;
    this.ino = st ? st.ino : -1;
    this.timer = setInterval(() => {
      this.running ??= this.poll()
        .catch((err: Error) => this.logger.error({ evt: 'error', file: this.file, err: err.message }, 'following the mailbox log failed'))
        .finally(() => (this.running = undefined));
    }, this.pollMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  /** Read what was appended since the last poll. */
  async poll(): Promise<void> {
    const st = await fsp.stat(this.file).catch(() => undefined);
    if (!st) return;
    if (st.ino !== this.ino || st.size < this.offset) {
      // Rotated or truncated: the new file is read from its start.
      this.ino = st.ino;
      this.offset = 0;
      this.partial = '';
    }
    if (st.size === this.offset) return;
    const fh = await fsp.open(this.file, 'r');
    try {
      const len = Math.min(st.size - this.offset, 4 * 1024 * 1024);
      const buf = Buffer.alloc(len);
      const { bytesRead } = await fh.read(buf, 0, len, this.offset);
      this.offset += bytesRead;
      const text = this.partial + buf.subarray(0, bytesRead).toString('utf8');
      const lines = text.split('\n');
      this.partial = lines.pop() ?? '';
      for (const line of lines) {
        const l = parseLoginLine(this.re, line);
        if (l) await this.onLogin(l);
      }
    } finally {
      await fh.close();
    }
  }
}
