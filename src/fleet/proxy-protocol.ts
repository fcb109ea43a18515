/**
 * The PROXY protocol header (HAProxy's, v1 text and v2 binary) in front of
 * the SMTP listeners.
 *
 * Behind a TCP load balancer every connection comes from the balancer; the
 * header it sends first carries the subscriber's address, which the
 * policies must see (netblock gate, per-address quotas, DNSBLs). A listener's
 * `proxyFrom` lists the balancers' addresses: only connections from them
 * must start with a header, and only theirs is believed. From any other
 * address no header is expected: a PROXY line is then just a bad SMTP
 * command, and the session is the real peer's (src/smtp/server.ts decides).
 *
 * `readProxyHeader` reads the first bytes of such a connection: the v2
 * signature (12 bytes) is parsed here (PROXY: the source address and port
 * become the session's; LOCAL, the balancer's own health check: the real
 * peer stays), otherwise one v1 line ("PROXY TCP4 src dst sport dport").
 * Anything malformed is refused with "* BAD Invalid PROXY header" and the
 * connection closed. Bytes after the header are returned with it.
 * test/fleet/proxy.test.ts covers v1, v2, LOCAL, malformed headers, and a
 * PROXY line from an address that is not a balancer.
 *
 * Talks to: the accepted socket (before any SMTP is spoken). Trusts: the
 * balancers listed in proxyFrom, and nobody else.
 */
import net from 'node:net';
import ipaddr from 'ipaddr.js';

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

/** What the header says about the client: its address, or nothing (LOCAL: the balancer itself). */
export interface ProxiedPeer {
  remoteAddress?: string;
  remotePort?: number;
}

export interface ProxyHeader {
  peer: ProxiedPeer;
  /** Bytes that came with the header, after it: the client's first (an early talker's command, a TLS hello). */
  rest?: Buffer;
}

const V1_MAX = 107; // the v1 specification's longest line, CRLF included

/**
 * Read the PROXY header from a balancer's connection. Resolves with the
 * declared peer; rejects (after answering "* BAD" where the header was
 * malformed, and closing) when there is no valid header.
 */
export function readProxyHeader(socket: net.Socket): Promise<ProxyHeader> {
  return new Promise((resolve, reject) => {
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
      reject(err);
    };
    const done = (peer: ProxiedPeer, consumed: number) => {
      finished = true;
      cleanup();
      resolve(buf.length > consumed ? { peer, rest: buf.subarray(consumed) } : { peer });
    };
    const onError = (err: Error) => fail(err, false);
    const onClose = () => fail(new Error('Socket closed before PROXY header was received'), false);
    const onReadable = () => {
      let chunk: Buffer | null;
      while (!finished && (chunk = socket.read() as Buffer | null) !== null) {
        buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
        const n = Math.min(buf.length, V2_SIGNATURE.length);
        if (buf.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n))) {
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
          if (parsed.command === 'proxy' && parsed.remoteAddress) {
            if (!net.isIP(parsed.remoteAddress)) return fail(new Error('Invalid PROXY source address'), true);
            return done({ remoteAddress: parsed.remoteAddress, ...(parsed.remotePort ? { remotePort: parsed.remotePort } : {}) }, total);
          }
          return done({}, total);
        }
        const lf = buf.indexOf(10);
        if (lf < 0) {
          if (buf.length >= V1_MAX) return fail(new Error('PROXY header line too long'), true);
          continue;
        }
        if (lf + 1 > V1_MAX) return fail(new Error('PROXY header line too long'), true);
        const peer = parseProxyV1(buf.toString('latin1', 0, lf).trim());
        if (!peer) return fail(new Error('Invalid PROXY header'), true);
        return done(peer, lf + 1);
      }
    };
    socket.on('readable', onReadable);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.on('end', onClose);
  });
}

/** "PROXY TCP4 192.0.2.1 198.51.100.1 56324 25" (or "PROXY UNKNOWN ..."): the peer, or undefined when malformed. */
export function parseProxyV1(line: string): ProxiedPeer | undefined {
  const words = line.split(' ');
  if (words[0] !== 'PROXY' || words.length < 2) return undefined;
  if (words[1] === 'UNKNOWN') return {};
  if ((words[1] !== 'TCP4' && words[1] !== 'TCP6') || words.length !== 6) return undefined;
  const address = words[2]!.toLowerCase();
  const family = net.isIP(address);
  if (family !== (words[1] === 'TCP4' ? 4 : 6)) return undefined;
  const port = Number(words[4]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) return undefined;
  return { remoteAddress: address, remotePort: port };
}
