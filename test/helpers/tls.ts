/** One self-signed certificate per test process, made on first use. */
import { generate } from 'selfsigned';

let cached: Promise<{ key: string; cert: string }> | undefined;

export function testCert(): Promise<{ key: string; cert: string }> {
  cached ??= generate([{ name: 'commonName', value: 'localhost' }], { keySize: 2048, algorithm: 'sha256' }).then((r) => ({
    key: r.private,
    cert: r.cert,
  }));
  return cached;
}
