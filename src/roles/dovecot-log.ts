/**
 * Follows a mailbox server's log (tail -F: polled, survives truncation and
 * rotation by inode) and turns each Dovecot login line into a
 * POP-before-SMTP grant. Starts at the end of the file: only new logins count.
 *
 * A grant is relay permission, and a log is written by more than Dovecot:
 * any local user can put a line into syslog (`logger -t x "pop3-login:
 * Login: user=<victim>, rip=ATTACKER"`), and a failed login writes a user
 * name the client chose. So a line grants only when it is, field for field,
 * Dovecot's successful login record, read from the start of the line:
 *
 *   syslog  (rsyslog/syslog-ng file, `logFormat: syslog`):
 *     Dec  5 12:49:01 mail dovecot: pop3-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=1234, TLS, session=<…>
 *     (also `dovecot[123]:`, and RFC 3339 timestamps)
 *   Dovecot's own log_path file (`logFormat: dovecot`):
 *     Dec 05 12:49:01 pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, …
 *
 * The program tag must be `dovecot`, the service `pop3-login` or
 * `imap-login`, the message `Login:` (failed logins are `Disconnected`/
 * `Aborted login` lines and never match), the fields `user=<…>, method=…,
 * rip=…, lip=…` in Dovecot's order. A user name containing `<`, `>`, `,`,
 * `=` or a control character never grants: with those a client could write
 * a user name that reads as further fields. rip must be an IP address.
 * The syslog tag is not authenticated (anyone may `logger -t dovecot`);
 * docs/roles.md says how to close that (Dovecot's own log file).
 *
 * Talks to: the filesystem, PopGrants. Trusts: nothing in the lines.
 */
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import type { Logger } from '../log';

export type DovecotLogFormat = 'syslog' | 'dovecot';

export interface LoginLine {
  user: string;
  ip: string;
}

const STAMP = String.raw`(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)`;
const PREFIX: Record<DovecotLogFormat, RegExp> = {
  // timestamp, host (written by the syslog daemon), tag "dovecot" with or without a pid.
  syslog: new RegExp(String.raw`^${STAMP} \S+ dovecot(?:\[\d+\])?: (?:pop3|imap)-login: (?:Info: )?`),
  // Dovecot's log_timestamp (optional: it may be set empty), then the service.
  dovecot: new RegExp(String.raw`^(?:${STAMP} )?(?:pop3|imap)-login: Info: `),
};
// Dovecot's default login_log_format_elements, in its order: user, method, rip, lip, mpid, %c (TLS/secured), session.
// The tail admits no `<`, `>` or `=` outside mpid and session, so a user name cannot be followed by fields of its own.
const LOGIN = /^Login: user=<([^<>]*)>, method=[A-Za-z0-9-]+, rip=([0-9A-Fa-f.:]+), lip=([0-9A-Fa-f.:]+)(?:, mpid=\d+)?(?:, [^,<>=]+)*(?:, session=<[A-Za-z0-9+/]+>)?$/;
// eslint-disable-next-line no-control-regex
const BAD_USER = /[<>,=\u0000-\u001f\u007f-\u009f]/;

/** One log line → the login it records, or undefined when it is not exactly Dovecot's successful login. */
export function parseLoginLine(line: string, format: DovecotLogFormat): LoginLine | undefined {
  const p = PREFIX[format].exec(line);
  if (!p) return undefined;
  const m = LOGIN.exec(line.slice(p[0].length));
  if (!m) return undefined;
  const user = m[1]!;
  const ip = m[2]!;
  if (user === '' || BAD_USER.test(user) || net.isIP(ip) === 0 || net.isIP(m[3]!) === 0) return undefined;
  return { user, ip };
}

export class LogFollower {
  private offset = -1;
  private ino = -1;
  private partial = '';
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly file: string,
    private readonly format: DovecotLogFormat,
    private readonly pollMs: number,
    private readonly onLogin: (l: LoginLine) => Promise<unknown>,
    private readonly logger: Logger,
  ) {}

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
        const l = parseLoginLine(line, this.format);
        if (l) await this.onLogin(l);
      }
    } finally {
      await fh.close();
    }
  }
}
