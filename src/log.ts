/**
 * The one pino logger. Secrets are removed by pino's `redact`, not by hand
 * at each call site. Event names (`evt`) form a closed set, listed here, so
 * log consumers can rely on them.
 */
import pino, { type Logger } from 'pino';

export type { Logger };

export type LogEvent =
  | 'listening' | 'listen_failed' | 'connect' | 'connect_refused' | 'disconnect' | 'auth' | 'policy'
  | 'reception' | 'rejection' | 'delivery' | 'transient_failure' | 'bounce' | 'expiration'
  | 'queue_op' | 'recovery' | 'reload' | 'dkim' | 'containment' | 'error'
  | 'starting' | 'privileges' | 'tls_policy' | 'tls_report' | 'shaping';

export const REDACT_PATHS = [
  'password', 'pass', 'token', 'auth.pass', 'auth.password', '*.password', '*.pass', '*.token',
  'relay.relayhost.auth.pass', 'privateKey', '*.privateKey',
];

export function createLogger(opts: { level: string; pretty: boolean }): Logger {
  const base = { level: opts.level, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, base: { pid: process.pid } };
  if (opts.pretty) {
    // Development only (a worker thread formats each line). Colours when stdout is a terminal
    // (pino-pretty's own detection, so `| less` or a file gets plain text).
    return pino({ ...base, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:standard' } } });
  }
  return pino(base);
}
