/**
 * An SmtpServer (src/smtp/server.ts) whose session accepts everything and
 * keeps nothing: every message read to its end and answered 250. For the
 * tests of the protocol layer alone (test/e2e/session-ids, quit-close,
 * data-quick-ack) and for bench:floor's price of that layer. No node:test
 * here, so a standalone script can use it too.
 */
import type { SecureContextOptions } from 'node:tls';
import type { ConnectionHooks } from '../../src/smtp/connection';
import { SmtpServer, type ServerOptions } from '../../src/smtp/server';

export type BareOptions = Partial<Omit<ServerOptions, 'tls'>> & { tls?: SecureContextOptions; hooks?: Partial<ConnectionHooks> };

export function acceptAllServer(options: BareOptions = {}): SmtpServer {
  const hooks: ConnectionHooks = {
    connect: async () => undefined,
    auth: async (auth) => ({ user: auth.username }),
    mailFrom: async () => undefined,
    rcptTo: async () => undefined,
    data: async (body) => {
      let n = 0;
      for await (const part of body) n += part.length;
      return `2.0.0 Ok: ${n} bytes`;
    },
    quit: async () => undefined,
    close: () => undefined,
    ...options.hooks,
  };
  return new SmtpServer(
    {
      hostname: 'bare.test.invalid',
      security: 'none',
      authRequired: false,
      maxMessageSize: 10 << 20,
      greetDelayMs: 0,
      maxConnections: 1000,
      closeTimeoutMs: 5000,
      proxyTrusted: () => false,
      ...options,
      tls: options.tls ?? {},
    },
    hooks,
  );
}
