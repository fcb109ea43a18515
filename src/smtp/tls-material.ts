/**
 * The listeners' certificate: the configured files, or (`serverTls.selfSigned`,
 * the quick start) a self-signed certificate for the hostname made on first
 * start and kept under var/tls/ so it stays the same across restarts, or
 * nothing when no listener uses TLS (no key is made that nothing serves).
 * Key files are mode 0600. A TLS listener with neither is refused when the
 * config is parsed (src/config/schema.ts).
 */
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/schema';
import { ConfigError } from '../config/validate';
import type { TlsMaterial } from './listener';

/** For listeners that never start TLS (STARTTLS hidden, not implicit): no certificate at all. */
const NO_TLS: TlsMaterial = { cert: '', key: '' };

export async function loadTlsMaterial(cfg: Config): Promise<TlsMaterial> {
  if (cfg.serverTls.cert && cfg.serverTls.key) {
    try {
      return { cert: readFileSync(cfg.serverTls.cert), key: readFileSync(cfg.serverTls.key) };
    } catch (err) {
      throw new ConfigError(cfg.file, 'serverTls', `cannot read certificate or key: ${(err as Error).message}`);
    }
  }
  if (cfg.listeners.every((l) => l.security === 'none')) return NO_TLS;
  const dir = path.join(path.dirname(cfg.spool.dir), 'tls');
  const certFile = path.join(dir, 'selfsigned.crt');
  const keyFile = path.join(dir, 'selfsigned.key');
  if (existsSync(certFile) && existsSync(keyFile)) return { cert: readFileSync(certFile), key: readFileSync(keyFile) };
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  // Loaded only for this one-time generation: selfsigned and its X.509 stack cost ~25 MB of RSS per process.
  const { generate } = await import('selfsigned');
  const pems = await generate([{ name: 'commonName', value: cfg.hostname }], {
    keySize: 2048,
    algorithm: 'sha256',
    notAfterDate: new Date(Date.now() + 825 * 86_400_000),
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: cfg.hostname }, { type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] }],
  });
  await fsp.writeFile(keyFile, pems.private, { mode: 0o600 });
  await fsp.writeFile(certFile, pems.cert, { mode: 0o644 });
  return { cert: pems.cert, key: pems.private };
}
