/**
 * A TCP listener for one of the Postfix services: binds with an error that
 * names the service and address, tracks its sockets so stop() ends them,
 * and gives each socket an idle limit (Postfix reconnects when it needs to).
 */
import net from 'node:net';
import type { Logger } from '../log';
import type { PostfixEndpoint } from './config';

export interface Served {
  readonly port: number;
  /** Connections open now (tests: nothing is left hanging). */
  open(): number;
  close(): Promise<void>;
}

export async function serve(name: string, at: PostfixEndpoint, idleMs: number, logger: Logger, onSocket: (s: net.Socket) => void): Promise<Served> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.setNoDelay(true);
    s.setTimeout(idleMs, () => s.destroy());
    onSocket(s);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new Error(`postfix ${name}: cannot bind ${at.address}:${at.port}: ${err.code ?? err.message}`)));
    server.listen(at.port, at.address, () => resolve());
  });
  const a = server.address();
  const port = typeof a === 'object' && a ? a.port : at.port;
  logger.info({ evt: 'listening', listener: `postfix-${name}`, address: at.address, port }, 'listening');
  return {
    port,
    open: () => sockets.size,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
