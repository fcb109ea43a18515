/**
 * Several processes, one gateway (`process.workers` > 1), so both cores
 * work: Node runs JavaScript on one thread, and the acceptance path
 * (TLS, SMTP parsing, DKIM hashing) is CPU-bound.
 *
 *   primary  spool recovery; the queue manager for incoming/ (anything not
 *            handed over), deferred/ retries and holds; the admin API; the
 *            one state store, served to the workers over IPC (quotas stay
 *            exact without Redis); restarts a worker that dies and requeues
 *            its in-flight messages.
 *   workers  the listeners (the kernel spreads accepted connections: each
 *            worker accepts on the shared socket, no round-robin hop through
 *            the primary), policy, DKIM, the spool commit, and the first
 *            delivery attempt of what they accepted (from memory); a
 *            deferral is handed to the primary's queue manager.
 *
 * The primary binds the listeners' sockets (as root, for ports below 1024),
 * drops privileges, and only then forks the workers: they never run as
 * root. A worker asks for its sockets ('hello'); the primary sends each
 * bound socket and then the certificate it read (the key may be readable
 * by root only), and the worker starts listening on them. A worker started
 * again after a crash gets the same sockets.
 *
 * A queue move is an atomic rename, so when the primary's scan and a
 * worker race for the same message exactly one of them gets it.
 */
import cluster, { type Worker } from 'node:cluster';
import os from 'node:os';
import type { App } from '../app';
import { autoWorkers } from '../config/schema';
import type { Logger } from '../log';
import type { BoundSocket } from '../net/bound-socket';
import type { StateStore } from '../state/store';
import { serveStateStore } from './ipc-store';

export type ClusterMessage =
  | { t: 'hello' }
  | { t: 'socket'; name: string }
  | { t: 'start'; tls: { cert: string; key: string } }
  | { t: 'ready'; idSuffix: string }
  | { t: 'deferred'; id: string; nextAttemptAt: number }
  | { t: 'reload' }
  | { t: 'start-failed'; error: string };

export interface Supervisor {
  /** Resolves when every worker is listening; rejects if one cannot start. */
  ready: Promise<void>;
  /** Tell every worker to reload (SIGHUP, admin API). */
  broadcast(m: ClusterMessage): void;
  stop(): Promise<void>;
}

/**
 * Why `count` workers on `cores` cores may be slower than one process, or
 * nothing. With as many workers as cores, the primary (it answers every
 * state operation), the workers' second heap and JIT, and every other
 * process on the machine compete for cores the workers would each need
 * whole: on 2 cores, 2 workers did 0.7–0.8× one process (docs/performance.md).
 */
export function workersWarning(count: number, cores: number): string | undefined {
  if (count < 2 || count < cores) return undefined;
  return `process.workers is ${count} on ${cores} cores: a primary and ${count} workers share the cores with each other and with the rest of the machine, and may well be slower than one process; use fewer workers than cores (\`auto\`: ${autoWorkers(cores)})`;
}

export function superviseWorkers(opts: { count: number; app: App; store: StateStore; logger: Logger; argv: string[]; sockets: ReadonlyMap<string, BoundSocket> }): Supervisor {
  const { app, store, logger } = opts;
  const warning = workersWarning(opts.count, os.availableParallelism());
  if (warning) logger.warn({ evt: 'config', workers: opts.count, cores: os.availableParallelism() }, warning);
  cluster.setupPrimary({ exec: process.argv[1], args: opts.argv, silent: false });
  const suffixes = new Map<number, string>();
  let stopping = false;
  let readyCount = 0;
  let resolveReady!: () => void;
  let rejectReady!: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });

  const fork = (): Worker => {
    const w = cluster.fork({ SMARTHOST_WORKER: '1' });
    serveStateStore(w, store, logger, app.recordActivity);
    w.on('message', (m: ClusterMessage) => {
      if (m.t === 'hello') {
        for (const [name, socket] of opts.sockets) w.send({ t: 'socket', name } satisfies ClusterMessage, socket as never);
        const tls = app.tlsMaterial();
        w.send({ t: 'start', tls: { cert: String(tls.cert), key: String(tls.key) } } satisfies ClusterMessage);
      } else if (m.t === 'ready') {
        suffixes.set(w.id, m.idSuffix);
        if (++readyCount === opts.count) resolveReady();
      } else if (m.t === 'deferred') app.qmgr.adoptDeferred(m.id, m.nextAttemptAt);
      else if (m.t === 'start-failed') rejectReady(new Error(m.error));
    });
    w.on('exit', (code, signal) => {
      const suffix = suffixes.get(w.id);
      suffixes.delete(w.id);
      if (suffix) {
        void app.qmgr.requeueActive(suffix).then((n) => {
          if (n > 0) logger.warn({ evt: 'recovery', worker: w.id, requeued: n }, 'requeued the in-flight messages of a dead worker');
        });
      }
      if (stopping) return;
      logger.error({ evt: 'error', worker: w.id, code, signal }, 'worker died; starting another');
      fork();
    });
    return w;
  };
  for (let i = 0; i < opts.count; i++) fork();

  return {
    ready,
    broadcast(m) {
      for (const w of Object.values(cluster.workers ?? {})) if (w?.isConnected()) w.send(m);
    },
    async stop() {
      stopping = true;
      const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
      await Promise.all(
        workers.map(
          (w) =>
            new Promise<void>((resolve) => {
              if (w.isDead()) return resolve();
              w.once('exit', () => resolve());
              w.process.kill('SIGTERM');
              setTimeout(() => w.process.kill('SIGKILL'), 15_000).unref();
            }),
        ),
      );
      for (const socket of opts.sockets.values()) socket.close();
    },
  };
}
