/**
 * The `admin` section: where the admin API listens, its two tokens and its
 * TLS. On loopback plain HTTP is allowed (only this host can reach it);
 * anywhere else the API answers over TLS, with its own `admin.tls`
 * certificate or the gateway's `serverTls.cert`/`serverTls.key`, and a non-loopback
 * address without either is a config error unless `admin.insecure: true`
 * says the operator means it (docs/security.md, "Admin API: who sees and
 * does what").
 */
import ipaddr from 'ipaddr.js';
import { At, bool, int, obj, optStr, str } from '../config/validate';

export interface AdminConfig {
  address: string;
  port: number;
  /** Operator token (every route; the only one that may change anything). */
  token?: string;
  tokenFile: string;
  /** Read-only token (NOC: GET views and policy explain), when set. */
  readTokenFile?: string;
  /** The certificate the API serves; undefined: plain HTTP (loopback, or insecure). */
  tls?: { cert: string; key: string };
  insecure: boolean;
  /** The abuse desk's web console under /console (docs/console.md). */
  console: boolean;
}

/** 127.0.0.0/8, ::1 (also IPv4-mapped), or the name localhost. */
export function isLoopback(address: string): boolean {
  if (address === 'localhost') return true;
  if (!ipaddr.isValid(address)) return false;
  const a = ipaddr.process(address);
  return a.range() === 'loopback';
}

export function parseAdminConfig(v: unknown, at: At, resolve: (p: string) => string, gatewayTls: { cert?: string; key?: string }): AdminConfig {
  const o = obj(v, at, ['address', 'port', 'token', 'tokenFile', 'readTokenFile', 'tls', 'insecure', 'console']);
  const address = str(o.address, at.child('address'), '127.0.0.1');
  const t = obj(o.tls, at.child('tls'), ['cert', 'key']);
  const cert = optStr(t.cert, at.child('tls').child('cert', { doc: "the admin API's own certificate chain (PEM), instead of serverTls.cert" }));
  const key = optStr(t.key, at.child('tls').child('key', { doc: 'its private key (PEM), given with cert' }));
  if ((cert === undefined) !== (key === undefined)) at.child('tls').fail('cert and key must be given together');
  const insecure = bool(o.insecure, at.child('insecure'), false);
  const readTokenFile = optStr(o.readTokenFile, at.child('readTokenFile'));
  let tls = cert !== undefined && key !== undefined ? { cert: resolve(cert), key: resolve(key) } : undefined;
  if (!tls && !isLoopback(address) && !insecure) {
    if (gatewayTls.cert && gatewayTls.key) tls = { cert: gatewayTls.cert, key: gatewayTls.key };
    else
      at.child('address').fail(
        `${address} is not a loopback address: the admin API (suspend, delete, relay grants) needs TLS there; set admin.tls.cert and admin.tls.key (or serverTls.cert and serverTls.key), or admin.insecure: true to serve it in plain HTTP anyway`,
      );
  }
  return {
    address,
    port: int(o.port, at.child('port'), 8025, 0, 65535),
    token: optStr(o.token, at.child('token')),
    tokenFile: resolve(str(o.tokenFile, at.child('tokenFile'), 'var/admin.token')),
    readTokenFile: readTokenFile === undefined ? undefined : resolve(readTokenFile),
    tls,
    insecure,
    console: bool(o.console, at.child('console'), true),
  };
}
