/**
 * A real SMTP server (smtp-server) playing a recipient MX or an upstream
 * relay in tests: it stores what arrives, byte for byte, and can be told to
 * refuse recipients, tempfail, require AUTH or offer STARTTLS.
 */
import { startDnsServer, type TestDns } from './dns-server';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { testCert } from './tls';

export interface Received {
  mailFrom: string;
  rcptTo: string[];
  data: Buffer;
  user?: string;
  secure: boolean;
  remoteAddress: string;
  /** The name the client gave in EHLO/HELO. */
  helo: string;
}

export interface TestMxOptions {
  host?: string;
  port?: number;
  /** Recipient → reply: e.g. { 'nobody@x.test': [550, '5.1.1 No such user'] }. */
  rcptReplies?: Map<string, [number, string]>;
  /** Reply to every MAIL FROM with this (e.g. [451, '4.3.0 busy']). */
  mailReply?: [number, string];
  /** Reply at end of DATA with this instead of accepting. */
  dataReply?: [number, string];
  /** When set, AUTH is required with these credentials. */
  auth?: { user: string; pass: string };
  starttls?: boolean;
  /** Wait this long before answering end of DATA (keeps deliveries in flight). */
  dataDelayMs?: number;
  /** Anything else for smtp-server. */
  extra?: Partial<SMTPServerOptions>;
}

export interface TestMx {
  readonly host: string;
  readonly port: number;
  readonly messages: Received[];
  readonly options: TestMxOptions;
  /** Resolves once `count` messages have arrived (or rejects after `ms`). */
  waitFor(count: number, ms?: number): Promise<Received[]>;
  close(): Promise<void>;
}

export async function startTestMx(opts: TestMxOptions = {}): Promise<TestMx> {
  const host = opts.host ?? '127.0.0.1';
  const messages: Received[] = [];
  const waiters: Array<() => void> = [];
  const { key, cert } = await testCert();
  const server = new SMTPServer({
    logger: false,
    secure: false,
    key,
    cert,
    hideSTARTTLS: !opts.starttls,
    authOptional: !opts.auth,
    disabledCommands: opts.auth ? [] : ['AUTH'],
    allowInsecureAuth: false,
    disableReverseLookup: true,
    size: 64 * 1024 * 1024,
    onAuth(auth, _session, cb) {
      if (opts.auth && auth.username === opts.auth.user && auth.password === opts.auth.pass) return cb(null, { user: auth.username });
      return cb(new Error('Invalid credentials'));
    },
    onMailFrom(_address, _session, cb) {
      if (opts.mailReply) return cb(replyError(opts.mailReply));
      cb();
    },
    onRcptTo(address, _session, cb) {
      const r = opts.rcptReplies?.get(address.address.toLowerCase());
      if (r) return cb(replyError(r));
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => void finish());
      const finish = async () => {
        if (opts.dataDelayMs) await new Promise((r) => setTimeout(r, opts.dataDelayMs));
        if (opts.dataReply) return cb(replyError(opts.dataReply));
        messages.push({
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          rcptTo: session.envelope.rcptTo.map((r) => r.address),
          data: Buffer.concat(chunks),
          user: session.user as string | undefined,
          secure: session.secure,
          remoteAddress: session.remoteAddress,
          helo: session.hostNameAppearsAs,
        });
        for (const w of waiters.splice(0)) w();
        cb(null);
      };
    },
    ...opts.extra,
  });
  server.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    host,
    port,
    messages,
    options: opts,
    waitFor(count, ms = 20_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`test MX got ${messages.length} of ${count} messages in ${ms} ms`)), ms);
        const check = () => {
          if (messages.length >= count) {
            clearTimeout(timer);
            resolve(messages);
          } else waiters.push(check);
        };
        check();
      });
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function replyError([code, text]: [number, string]): Error {
  const e = new Error(text) as Error & { responseCode: number };
  e.responseCode = code;
  return e;
}

/**
 * The destination most tests send to: a DNS server in which dest.test's MX
 * (mx.dest.test) is 127.0.0.2, and a test MX listening there.
 */
export async function startDestination(): Promise<{ dns: TestDns; mx: TestMx }> {
  const dns = await startDnsServer();
  const mx = await startTestMx({ host: '127.0.0.2' });
  dns.set('dest.test', 'MX', [{ exchange: 'mx.dest.test', priority: 10 }]);
  dns.set('mx.dest.test', 'A', ['127.0.0.2']);
  return { dns, mx };
}
