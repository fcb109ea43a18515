/** What the subcommands share: errors with exit codes, config loading, the admin API client. */
import { existsSync, readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import http from 'node:http';
import tls, { type TLSSocket } from 'node:tls';
import cluster from 'node:cluster';
import { loadConfig } from '../config/load';
import type { Config, ParseOptions } from '../config/schema';
import { ConfigError, formatWarning } from '../config/validate';

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/** "1 listener", "2 listeners", "0 DNSBL zones": counts in messages read as English. */
export function count(n: number, singular: string, plural = `${singular}s`): string {
  return `${n} ${n === 1 ? singular : plural}`;
}

/** The config for a command; `serving: false` for commands that open no listener (see ParseOptions). */
export function configFrom(values: { config?: string }, opts: ParseOptions = {}): Config {
  let cfg: Config;
  try {
    cfg = loadConfig(values.config, process.cwd(), opts);
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(`invalid config: ${err.message}`);
    throw err;
  }
  // Renamed keys still read under their old names: said once, by the process the operator started (not each worker).
  if (!cluster.isWorker) for (const w of cfg.warnings) process.stderr.write(`smarthost: warning: ${formatWarning(w)}\n`);
  return cfg;
}

/** Calls the running gateway's admin API with the configured token. */
export async function adminCall(cfg: Config, method: string, path: string): Promise<{ status: number; body: unknown }> {
  const token = cfg.admin.token ?? (existsSync(cfg.admin.tokenFile) ? readFileSync(cfg.admin.tokenFile, 'utf8').trim() : undefined);
  if (!token) throw new CliError(`no admin token: set admin.token or start the gateway once to create ${cfg.admin.tokenFile}`);
  const host = cfg.admin.address === '0.0.0.0' ? '127.0.0.1' : cfg.admin.address === '::' ? '::1' : cfg.admin.address;
  // Over TLS the API must present the configured certificate (pinned: the CLI runs on the gateway's host, where
  // the name in a certificate for the LAN address would not match), checked before the token is sent.
  const socket = cfg.admin.tls ? await pinnedTls(host, cfg.admin.port, new X509Certificate(readFileSync(cfg.admin.tls.cert))) : undefined;
  return new Promise((resolve, reject) => {
    const options = { host, port: cfg.admin.port, method, path, headers: { authorization: `Bearer ${token}` }, timeout: 10_000 };
    const req = http.request(socket ? { ...options, createConnection: () => socket } : options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        socket?.destroy();
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // plain text answer
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on('error', (err: NodeJS.ErrnoException) =>
      reject(new CliError(`cannot reach the gateway's admin API at ${host}:${cfg.admin.port} (${err.code ?? err.message}); is it running?`)),
    );
    req.end();
  });
}

function pinnedTls(host: string, port: number, pinned: X509Certificate): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host, port, rejectUnauthorized: false });
    s.once('secureConnect', () => {
      if (s.getPeerCertificate().raw?.equals(pinned.raw)) return resolve(s);
      s.destroy();
      reject(new CliError(`the admin API at ${host}:${port} did not present the certificate in admin.tls.cert (or serverTls.cert); not sending the token`));
    });
    s.once('error', (err: NodeJS.ErrnoException) => reject(new CliError(`cannot reach the gateway's admin API at ${host}:${port} over TLS (${err.code ?? err.message}); is it running?`)));
  });
}
