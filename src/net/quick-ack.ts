/**
 * TCP quick acknowledgement after the 354: the client's message content is
 * acknowledged as soon as it is read, not up to 40 ms later.
 *
 * Why: a client that writes the message and then, in a second write, the
 * final "." (the harness's STARTTLS + AUTH load generator does; so does any
 * client that flushes the body before the end-of-data line) leaves Nagle's
 * algorithm holding the "." until the body is acknowledged. While the server
 * has nothing to send, Linux delays that ACK (it is in its interactive
 * "ping-pong" mode after the command exchange), by at least 40 ms
 * (TCP_DELACK_MIN). Measured on the harness's AUTH job: the "." → 250 step
 * took 47.6 ms of a message's 68 ms per session. TCP_QUICKACK set right
 * after the 354 leaves ping-pong mode, so the kernel acknowledges the
 * content when the gateway reads it; the 250 waits only for the spool.
 * The flag is not sticky (the next reply re-enters ping-pong), hence once
 * per DATA, one system call per message.
 *
 * Node has no setsockopt; native/tcp_quickack.c (built at `npm ci` by
 * scripts/build-native.js) is that one call. Without it the gateway works
 * as before and says so at start (src/smtp/listener.ts).
 * Talks to: the kernel. Trusts: a socket handle's descriptor.
 */
import path from 'node:path';

interface NativeQuickAck {
  quickAck(fd: number): number;
}

/** What a socket (plain, STARTTLS-upgraded or implicit TLS) exposes of its descriptor (Node internals): TLSWrap reports the TCP socket's. */
interface HasHandle {
  readonly _handle?: { readonly fd?: number } | null;
}

function load(): NativeQuickAck | string {
  // dist/src/net/quick-ack.js → <package root>/build/Release
  const file = path.join(__dirname, '..', '..', '..', 'build', 'Release', 'tcp_quickack.node');
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(file) as NativeQuickAck;
  } catch (err) {
    return `${file}: ${(err as Error).message.split('\n')[0]}`;
  }
}

const native = load();

/** Why quick ACKs are off (the native helper is missing or does not load), or undefined when they work. */
export function quickAckUnavailable(): string | undefined {
  return typeof native === 'string' ? native : undefined;
}

/** Acknowledge what the peer has sent without delay (see above). False when not possible: no helper, no descriptor, closed socket. */
export function quickAck(socket: object): boolean {
  if (typeof native === 'string') return false;
  const fd = (socket as HasHandle)._handle?.fd;
  return typeof fd === 'number' && fd >= 0 && native.quickAck(fd) === 0;
}
