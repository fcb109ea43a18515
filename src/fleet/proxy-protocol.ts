/**
 * PROXY protocol v2 for the SMTP listeners, next to smtp-server's own v1.
 *
 * Behind a TCP load balancer every connection comes from the balancer; the
 * PROXY header it sends first carries the subscriber's address, which the
 * policies must see (netblock gate, per-address quotas, DNSBLs). A listener's
 * `proxyFrom` lists the balancers' addresses (smtp-server's `useProxy`):
 * only connections from them must start with a header, and only theirs is
 * believed. From any other address no header is expected: a PROXY line is
 * then just a bad SMTP command, and the session is the real peer's.
 *
 * smtp-server 3.21 reads the v1 text header ("PROXY TCP4 a b p q\r\n") only;
 * HAProxy's `send-proxy-v2`, AWS NLB and most balancers send the binary v2
 * header (12-byte signature, version/command, family, length, addresses,
 * TLVs). This adapter patches SMTPServer#_handleProxy once: for a peer that
 * must send a header it looks at the first bytes; the v2 signature is
 * parsed here (PROXY: the source address and port become the session's;
 * LOCAL, the balancer's own health check: the real peer stays), anything
 * else goes back to the library's v1 reader unchanged. A malformed v2
 * header is refused the way the library refuses a bad v1 line ("* BAD",
 * connection closed). test/fleet/proxy.test.ts covers v1, v2, LOCAL, and a
 * PROXY line from an address that is not a balancer.
 *
 * Talks to: the accepted socket (before any SMTP is spoken). Trusts: the
 * balancers listed in proxyFrom, and nobody else.
 */
import crypto from 'node:crypto';
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { SMTPServer } from 'smtp-server';

/** "\r\n\r\n\0\r\nQUIT\n" */
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const HEADER_MAX = 16 + 65535;
const REJECT_LINGER_MS = 1000;

export type ProxyV2 =
  | { readonly command: 'local' }
  | { readonly command: 'proxy'; readonly remoteAddress?: string; readonly remotePort?: number; readonly localAddress?: string; readonly localPort?: number };

function ipFromBytes(b: Buffer): string {
  const addr = ipaddr.fromByteArray(Array.from(b));
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) return (addr as ipaddr.IPv6).toIPv4Address().toString();
  return addr.toString();
}

/** Parse one complete v2 header (signature included); throws on anything malformed. */
export function parseProxyV2(h: Buffer): ProxyV2 {
  if (h.length < 16 || !h.subarray(0, 12).equals(V2_SIGNATURE)) throw new Error('not a PROXY v2 header');
  const verCmd = h[12]!;
  if (verCmd >> 4 !== 2) throw new Error(`PROXY v2: unsupported version ${verCmd >> 4}`);
  const cmd = verCmd & 0x0f;
  if (cmd === 0) return { command: 'local' };
  if (cmd !== 1) throw new Error(`PROXY v2: unknown command ${cmd}`);
  const family = h[13]! >> 4;
  const len = h.readUInt16BE(14);
  if (h.length !== 16 + len) throw new Error('PROXY v2: length mismatch');
  const body = h.subarray(16);
  if (family === 1) {
    if (len < 12) throw new Error('PROXY v2: short IPv4 address block');
    return { command: 'proxy', remoteAddress: ipFromBytes(body.subarray(0, 4)), localAddress: ipFromBytes(body.subarray(4, 8)), remotePort: body.readUInt16BE(8), localPort: body.readUInt16BE(10) };
  }
  if (family === 2) {
    if (len < 36) throw new Error('PROXY v2: short IPv6 address block');
    return { command: 'proxy', remoteAddress: ipFromBytes(body.subarray(0, 16)), localAddress: ipFromBytes(body.subarray(16, 32)), remotePort: body.readUInt16BE(32), localPort: body.readUInt16BE(34) };
  }
  // AF_UNSPEC or AF_UNIX: no usable address; the connection is taken as it is.
  return { command: 'proxy' };
}

/** Build a v2 header (tests, and a reference for what balancers send). */
export function buildProxyV2(opts: { command?: 'proxy' | 'local'; source?: string; dest?: string; sourcePort?: number; destPort?: number }): Buffer {
  if (opts.command === 'local') return Buffer.concat([V2_SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
  const src = ipaddr.parse(opts.source ?? '127.0.0.1');
  const dst = ipaddr.parse(opts.dest ?? (src.kind() === 'ipv4' ? '127.0.0.1' : '::1'));
  const v4 = src.kind() === 'ipv4';
  const addrs = Buffer.concat([Buffer.from(src.toByteArray()), Buffer.from(dst.toByteArray())]);
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(opts.sourcePort ?? 40000, 0);
  ports.writeUInt16BE(opts.destPort ?? 25, 2);
  const body = Buffer.concat([addrs, ports]);
  const head = Buffer.from([0x21, v4 ? 0x11 : 0x21, 0, 0]);
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([V2_SIGNATURE, head, body]);
}

interface ServerInternals {
  options: { ignoredHosts?: string[] };
  logger: { info(...args: unknown[]): void };
  _expectsProxyHeader(socket: net.Socket): boolean;
  _handleProxy(socket: net.Socket, cb: (err: Error | null, opts?: Record<string, unknown>) => void): void;
}

let applied = false;

export function adaptProxyProtocolV2(): void {
  if (applied) return;
  applied = true;
  const proto = SMTPServer.prototype as unknown as ServerInternals;
  const v1 = proto._handleProxy;
  proto._handleProxy = function handleProxy(this: ServerInternals, socket, callback) {
    if (!this._expectsProxyHeader(socket)) return v1.call(this, socket, callback);
    let buf: Buffer = Buffer.alloc(0);
    let finished = false;
    const cleanup = () => {
      socket.removeListener('readable', onReadable);
      socket.removeListener('error', onError);
      socket.removeListener('close', onClose);
      socket.removeListener('end', onClose);
    };
    const fail = (err: Error, diagnostic: boolean) => {
      if (finished) return;
      finished = true;
      cleanup();
      socket.on('error', () => undefined);
      if (diagnostic) {
        try {
          socket.end('* BAD Invalid PROXY header\r\n');
        } catch {
          // closing anyway
        }
        setTimeout(() => socket.destroy(), REJECT_LINGER_MS).unref();
      } else socket.destroy();
      callback(err);
    };
    const onError = (err: Error) => fail(err, false);
    const onClose = () => fail(new Error('Socket closed before PROXY header was received'), false);
    const onReadable = () => {
      let chunk: Buffer | null;
      while (!finished && (chunk = socket.read() as Buffer | null) !== null) {
        buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
        const n = Math.min(buf.length, V2_SIGNATURE.length);
        if (!buf.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n))) {
          // Not v2: hand the bytes back to the library's v1 reader.
          finished = true;
          cleanup();
          socket.unshift(buf);
          v1.call(this, socket, callback);
          return;
        }
        if (buf.length < 16) continue;
        const total = 16 + buf.readUInt16BE(14);
        if (total > HEADER_MAX) return fail(new Error('PROXY v2 header too long'), true);
        if (buf.length < total) continue;
        let parsed: ProxyV2;
        try {
          parsed = parseProxyV2(buf.subarray(0, total));
        } catch (err) {
          return fail(err as Error, true);
        }
        finished = true;
        cleanup();
        if (buf.length > total) socket.unshift(buf.subarray(total));
        const opts: Record<string, unknown> = { id: BigInt(`0x${crypto.randomBytes(10).toString('hex')}`).toString(32).padStart(16, '0') };
        if (parsed.command === 'proxy' && parsed.remoteAddress) {
          if (!net.isIP(parsed.remoteAddress)) return fail(new Error('Invalid PROXY source address'), true);
          opts.remoteAddress = parsed.remoteAddress;
          if (parsed.remotePort) opts.remotePort = parsed.remotePort;
        }
        const addr = (opts.remoteAddress as string | undefined) ?? socket.remoteAddress;
        opts.ignore = Boolean(this.options.ignoredHosts && addr && this.options.ignoredHosts.includes(addr));
        callback(null, opts);
        return;
      }
    };
    socket.on('readable', onReadable);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.on('end', onClose);
  };
}
