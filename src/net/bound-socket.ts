/**
 * A listening address reserved before privileges are dropped: bind(2) as
 * root (ports below 1024 need it), listen(2) and accept(2) only later, as
 * the service user (src/cli/start.ts). Until then the kernel refuses
 * connections to the port: nothing is accepted by a root process.
 *
 * Node has no public bind-without-listen; `net._createServerHandle` is the
 * function its own cluster module uses for exactly this (a primary binds, a
 * worker listens). The handle it returns is what `server.listen(handle)`
 * takes, and what `worker.send(msg, handle)` passes to another process.
 * Talks to: the kernel. Trusts: its caller's address and port.
 */
import { promises as dns } from 'node:dns';
import net from 'node:net';
import { getSystemErrorName } from 'node:util';

/** A bound, not yet listening, TCP socket (libuv's TCP handle). */
export interface BoundSocket {
  close(): void;
}

interface NetInternals {
  _createServerHandle(address: string, port: number, addressType: number): BoundSocket | number;
}

export class BindError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** Binds `address:port` (a literal, or a name resolved first); throws BindError with the errno name. */
export async function bindSocket(address: string, port: number): Promise<BoundSocket> {
  let ip = address;
  if (!net.isIP(ip)) {
    try {
      ip = (await dns.lookup(address)).address;
    } catch (err) {
      throw new BindError(`cannot resolve ${address}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'ENOTFOUND');
    }
  }
  const r = (net as unknown as NetInternals)._createServerHandle(ip, port, net.isIP(ip));
  if (typeof r === 'number') {
    const code = getSystemErrorName(r);
    throw new BindError(`cannot bind ${address}:${port}: ${code}`, code);
  }
  return r;
}

/** Why a bind failed, in the operator's words. */
export function bindHint(code: string): string {
  switch (code) {
    case 'EACCES':
      return 'permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)';
    case 'EADDRINUSE':
      return 'address already in use (another MTA or gateway is listening there)';
    case 'EADDRNOTAVAIL':
      return 'address not available on this host';
    default:
      return code;
  }
}
