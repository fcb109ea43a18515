/**
 * Shared fixtures for the relay tests: a RelayConfig pointing at the test
 * DNS server, a group of test MXes on several 127.0.0.x addresses sharing one
 * port (MX delivery uses a single mxPort for every host), a pino logger that
 * captures its lines, and DeliveryJob builders.
 */
import { Readable } from 'node:stream';
import pino from 'pino';
import type { Logger } from '../../src/log';
import type { RelayConfig } from '../../src/relay/config';
import type { DeliveryJob } from '../../src/relay/types';
import type { TestDns } from '../helpers/dns-server';
import { startTestMx, type TestMx, type TestMxOptions } from '../helpers/test-mx';

/** A relay config for delivery-agent tests; without a DNS server only relay hosts and routes resolve. */
export function relayConfig(dns: TestDns | undefined, mxPort: number, over: Partial<RelayConfig> = {}): RelayConfig {
  return {
    dns: { servers: dns ? [dns.server] : [], timeoutMs: 250, tries: 1 },
    mxPort,
    mxTls: 'opportunistic',
    routes: new Map(),
    pools: new Map(),
    concurrencyPerDestination: 5,
    maxConnections: 50,
    activeWindow: 100,
    backoffMs: [1000],
    maxLifetimeMs: 3_600_000,
    connectTimeoutMs: 3000,
    greetingTimeoutMs: 3000,
    socketTimeoutMs: 10_000,
    dataTimeoutMs: 10_000,
    minDataRate: 16 * 1024,
    dataDoneTimeoutMs: 10_000,
    poolIdleMs: 5000,
    maxMessagesPerConnection: 100,
    ...over,
  };
}

/** A test MX that also counts connections (total and at most concurrently open). */
export interface CountedMx extends TestMx {
  readonly connections: { total: number; open: number; maxOpen: number };
}

/** Start one test MX per host, all on the same port; retries on a port clash. */
export async function startMxGroup(specs: Array<TestMxOptions & { host: string }>): Promise<{ port: number; mxs: CountedMx[] }> {
  for (let attempt = 0; ; attempt++) {
    const started: CountedMx[] = [];
    try {
      let port = 0;
      for (const spec of specs) {
        const connections = { total: 0, open: 0, maxOpen: 0 };
        const mx = await startTestMx({
          ...spec,
          port,
          extra: {
            ...spec.extra,
            onConnect(session, cb) {
              connections.total++;
              connections.open++;
              connections.maxOpen = Math.max(connections.maxOpen, connections.open);
              if (spec.extra?.onConnect) spec.extra.onConnect(session, cb);
              else cb();
            },
            onClose(session) {
              connections.open--;
              spec.extra?.onClose?.(session, undefined as never);
            },
          },
        });
        port = mx.port;
        started.push(Object.assign(mx, { connections }));
      }
      return { port, mxs: started };
    } catch (err) {
      await Promise.all(started.map((m) => m.close()));
      if (attempt >= 5 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
}

export interface Captured {
  readonly logger: Logger;
  readonly lines: Array<Record<string, unknown>>;
  readonly raw: string[];
}

export function captureLogger(): Captured {
  const lines: Array<Record<string, unknown>> = [];
  const raw: string[] = [];
  const logger = pino({ level: 'debug' }, {
    write(s: string) {
      raw.push(s);
      lines.push(JSON.parse(s) as Record<string, unknown>);
    },
  });
  return { logger, lines, raw };
}

let seq = 0;

export function message(subject = 'test'): Buffer {
  return Buffer.from(
    `From: <sender@origin.test>\r\nTo: <rcpt@dest.test>\r\nSubject: ${subject}\r\nMessage-ID: <m${++seq}@origin.test>\r\n\r\nHello.\r\n.leading dot\r\n`,
  );
}

export function job(recipients: string[], over: Partial<DeliveryJob> = {}): DeliveryJob {
  const body = message();
  return {
    id: `Q${++seq}`,
    mailFrom: 'sender@origin.test',
    recipients,
    open: () => Readable.from([body]),
    size: body.length,
    smtpUtf8: false,
    ...over,
  };
}
