/**
 * smtp-server as the gateway runs it (src/smtp/server-adapter.ts applied),
 * for the tests of one adapter patch: on 127.0.0.1 and an ephemeral port,
 * no greeting pause, no AUTH, no library log, each server closed after the
 * suite. Call it inside describe(); pass TLS material (testCert()) where the
 * test needs TLS.
 */
import type { AddressInfo } from 'node:net';
import { after } from 'node:test';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { adaptSmtpServer } from '../../src/smtp/server-adapter';

export type AdaptedOptions = SMTPServerOptions & Record<string, unknown>;

export function adaptedSmtpServers(): (options?: AdaptedOptions) => Promise<{ server: SMTPServer; port: number }> {
  const servers: SMTPServer[] = [];
  after(async () => {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  });
  return async (options = {}) => {
    adaptSmtpServer();
    const server = new SMTPServer({ authOptional: true, disabledCommands: ['AUTH'], greetDelayMs: 0, logger: false, ...options } as AdaptedOptions);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { server, port: (server.server.address() as AddressInfo).port };
  };
}
