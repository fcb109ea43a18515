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
  | 'starting' | 'privileges' | 'tls_policy' | 'tls_report' | 'shaping' | 'quick_ack';

/** Censored wherever they appear at the top of a line or one level down ('*.password'). */
const SECRET_KEYS = ['password', 'pass', 'token', 'privateKey'] as const;
const CENSOR = '[redacted]';

/**
 * Paths for pino's `redact`. No path starts with a wildcard: pino runs a
 * leading-wildcard redactor over every value of every line (each string
 * and number went through @pinojs/redact: ~40 % of a line's cost, 1 % of
 * the relay job's CPU profile). The one-level wildcard is
 * `censorNested`'s, which looks only at object values, and copies only
 * when a secret is there.
 */
export const REDACT_PATHS = [...SECRET_KEYS, 'auth.pass', 'auth.password', 'relay.relayhost.auth.pass'];

/** `obj` with every SECRET_KEYS member of its object values censored; `obj` itself when there is none. */
export function censorNested<T extends Record<string, unknown>>(obj: T): T {
  let out: Record<string, unknown> | undefined;
  for (const key in obj) {
    const v = obj[key] as unknown;
    if (typeof v !== 'object' || v === null) continue;
    if (!SECRET_KEYS.some((s) => Object.hasOwn(v, s))) continue;
    // An Error stays one (same prototype and own properties, stack and message included) for pino's err serializer.
    const copy = (v instanceof Error ? Object.create(Object.getPrototypeOf(v), Object.getOwnPropertyDescriptors(v)) : { ...v }) as Record<string, unknown>;
    for (const s of SECRET_KEYS) if (Object.hasOwn(v, s)) copy[s] = CENSOR;
    out ??= { ...obj };
    out[key] = copy;
  }
  return (out ?? obj) as T;
}

export function createLogger(opts: { level: string; pretty: boolean }): Logger {
  const base = {
    level: opts.level,
    redact: { paths: REDACT_PATHS, censor: CENSOR },
    formatters: { log: censorNested },
    base: { pid: process.pid },
  };
  if (opts.pretty) {
    // Development only (a worker thread formats each line). Colours when stdout is a terminal
    // (pino-pretty's own detection, so `| less` or a file gets plain text).
    return censorChildBindings(pino({ ...base, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:standard' } } }));
  }
  return censorChildBindings(pino(base, batchedStdout()));
}

/** Log lines go out in writes of about this many bytes (~13 lines)… */
export const LOG_BATCH_BYTES = 4096;
/** …or this long after a line was logged, whichever comes first. */
export const LOG_FLUSH_MS = 20;

/**
 * stdout, written in batches. pino's default destination writes as soon as
 * it can, each write a job on libuv's thread pool (a futex wake, the write,
 * an eventfd wake back): at ~0.6 writes per message that was 4.5 of the
 * relay job's 41 system calls per message and ~10 % of its CPU. A line waits
 * at most LOG_FLUSH_MS (a little more while a write is under way); pino
 * writes what is buffered synchronously at exit, an uncaught exception
 * included. A SIGKILL (or a crash below JavaScript) loses the lines of the
 * last LOG_FLUSH_MS, where it lost next to nothing before: kept short for
 * that reason (at load the batch size, not the delay, decides). A power cut
 * loses unwritten lines as before: logs are never synced
 * (docs/observability.md, "Logs").
 */
function batchedStdout(): ReturnType<typeof pino.destination> {
  const dest = pino.destination({ dest: 1, sync: false, minLength: LOG_BATCH_BYTES });
  // sonic-boom (4.x) types neither flag; flush() does nothing while a write is under way, and throws once destroyed.
  const state = dest as unknown as { _writing?: boolean; destroyed?: boolean };
  let timer: NodeJS.Timeout | undefined;
  const flushDue = () => {
    timer = undefined;
    if (state.destroyed) return;
    if (state._writing) timer = setTimeout(flushDue, LOG_FLUSH_MS).unref();
    else dest.flush();
  };
  const write = dest.write.bind(dest);
  dest.write = (line: string) => {
    const ok = write(line);
    timer ??= setTimeout(flushDue, LOG_FLUSH_MS).unref();
    return ok;
  };
  return dest;
}

/**
 * A child's bindings get the one-level censoring too (pino gives children no
 * bindings formatter; its redact paths cover their top level). Children of
 * children inherit the wrapped method (pino makes a child with Object.create).
 */
function censorChildBindings(logger: Logger): Logger {
  const child = logger.child;
  logger.child = function censoredChild(this: Logger, bindings, options) {
    return child.call(this, censorNested(bindings), options);
  } as Logger['child'];
  return logger;
}
