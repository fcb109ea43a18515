/**
 * A TLS-RPT https: rua endpoint for tests: a real node HTTPS server on
 * loopback with the certificate it is given, recording every request it
 * receives (method, path, headers, body) and answering as the test says —
 * a status with headers, or `hang` (headers never sent), or `trickle`
 * (200, some body, never ended).
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Leaf } from '../helpers/test-ca';

export interface ReceivedReport {
  readonly method: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: Buffer;
}

export type Answer = { status: number; headers?: Record<string, string> } | 'hang' | 'trickle';

export interface ReportEndpoint {
  readonly port: number;
  readonly received: ReceivedReport[];
  /** How the n-th request (0-based) is answered; the default answers 200. */
  answer: (n: number) => Answer;
  close(): Promise<void>;
}

export async function startReportEndpoint(cert: Leaf, host = '127.0.0.1'): Promise<ReportEndpoint> {
  const received: ReceivedReport[] = [];
  const ep = { received, answer: (): Answer => ({ status: 200 }) } as { received: ReceivedReport[]; answer: (n: number) => Answer };
  const server = https.createServer({ key: cert.key, cert: cert.cert }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const a = ep.answer(received.length);
      received.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) });
      if (a === 'hang') return;
      if (a === 'trickle') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write(Buffer.alloc(64 * 1024, 'x'));
        return;
      }
      res.writeHead(a.status, a.headers).end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return Object.assign(ep, {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}
