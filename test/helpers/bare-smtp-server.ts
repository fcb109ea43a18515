/**
 * acceptAllServer (test/helpers/accept-all.ts) on 127.0.0.1 and an
 * ephemeral port, closed after the suite. Call it inside describe().
 */
import type { AddressInfo } from 'node:net';
import { after } from 'node:test';
import type { SmtpServer } from '../../src/smtp/server';
import { acceptAllServer, type BareOptions } from './accept-all';

export function bareSmtpServers(): (options?: BareOptions) => Promise<{ server: SmtpServer; port: number }> {
  const servers: SmtpServer[] = [];
  after(async () => {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  });
  return async (options = {}) => {
    const server = acceptAllServer(options);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1' }, resolve));
    return { server, port: (server.netServer.address() as AddressInfo).port };
  };
}
