/**
 * TLS-RPT over HTTPS (RFC 8460 §5.3.1): POST one gzipped JSON report to an
 * `https:` rua endpoint of a policy domain.
 *
 * Talks to: the endpoint's host, its name resolved through the relay's own
 * resolver (like MTA-STS policy hosts); its certificate must verify for that
 * name against Node's roots, or the CA given (`relay.mtaSts.ca`, the relay's
 * private trust roots). Trusts: only the status code — 2xx is "accepted";
 * the response body is read up to a small cap and thrown away.
 *
 * Redirects are never followed (node's https never does; a 3xx is a failure
 * that is not retried). One deadline covers the whole exchange — DNS,
 * connect, handshake, upload, response — so a slow endpoint cannot hold the
 * report run.
 */
import https from 'node:https';
import { isIP } from 'node:net';
import { lookupVia, type MxResolver } from './mx';

export type PostResult =
  | { readonly ok: true; readonly status: number }
  /** `retry`: whether trying again later may help (network, TLS, 5xx, 408, 429). */
  | { readonly ok: false; readonly retry: boolean; readonly reason: string };

export interface PostOptions {
  readonly hosts: MxResolver;
  /** PEM CA certificates to trust instead of Node's roots. */
  readonly ca?: string;
  readonly timeoutMs: number;
}

/** Response bytes read before the connection is dropped (the body means nothing to us). */
const MAX_RESPONSE = 16 * 1024;

/** A status that is worth another attempt at a later run. */
function retryable(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

export function postReport(url: URL, gz: Buffer, o: PostOptions): Promise<PostResult> {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: PostResult): void => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      req.destroy();
      resolve(r);
    };
    const req = https.request(
      {
        method: 'POST',
        protocol: 'https:',
        host,
        port: url.port === '' ? 443 : Number(url.port),
        path: `${url.pathname}${url.search}`,
        // SNI and the name the certificate must be valid for (an address literal is checked against its IP SANs).
        ...(isIP(host) ? {} : { servername: host }),
        lookup: lookupVia(o.hosts),
        ...(o.ca !== undefined ? { ca: o.ca } : {}),
        agent: false,
        headers: { 'content-type': 'application/tlsrpt+gzip', 'content-length': gz.length },
      },
      (res) => {
        const status = res.statusCode ?? 0;
        let size = 0;
        const settle = (): void =>
          finish(status >= 200 && status < 300 ? { ok: true, status } : { ok: false, retry: retryable(status), reason: `HTTP ${status}` });
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE) settle();
        });
        res.on('end', settle);
        res.on('error', settle);
      },
    );
    const deadline = setTimeout(() => finish({ ok: false, retry: true, reason: 'timeout' }), o.timeoutMs);
    req.on('error', (err) => {
      const code = String((err as NodeJS.ErrnoException).code ?? err.message);
      finish({ ok: false, retry: true, reason: code });
    });
    req.end(gz);
  });
}
