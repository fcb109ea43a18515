/**
 * `smarthost start`: build and run the gateway; SIGTERM/SIGINT drain and
 * stop; SIGHUP reloads. With `process.workers` > 1 this process becomes the
 * primary and forks the workers (src/cluster/supervisor.ts).
 *
 * The order is the privilege boundary: build (read config, keys, certificate)
 * → bind every address (root, for ports below 1024; nothing accepts yet) →
 * drop to `process.user` → start (recovery, delivery, the admin API, the
 * mailbox log, accepting). Workers are forked after the drop.
 */
import cluster from 'node:cluster';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { build, type App } from '../app';
import type { Config } from '../config/schema';
import { createIpcStateStore } from '../cluster/ipc-store';
import { superviseWorkers, type ClusterMessage, type Supervisor } from '../cluster/supervisor';
import { bindHint, bindSocket, BindError, type BoundSocket } from '../net/bound-socket';
import { ListenError, type TlsMaterial } from '../smtp/listener';
import { processIdSuffix } from '../spool/queue-id';
import { MemoryStore } from '../state/memory';
import { sizeHeapForServer } from '../process/heap';
import { CliError, configFrom } from './common';
import { dropPrivileges } from './privileges';

/** What the command accepts (usage.ts describes each; a test compares). */
export const START_OPTIONS = { config: { type: 'string', short: 'c' } } satisfies ParseArgsConfig['options'];

export async function runStart(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: START_OPTIONS });
  const cfg = configFrom(values);
  sizeHeapForServer();
  if (cfg.process.workers > 1 && cluster.isWorker) return runWorker(cfg);
  if (cfg.process.workers > 1) return runPrimary(cfg, args);
  const app = await build(cfg);
  await explained(app.bind());
  dropPrivileges(cfg, app.logger);
  await explained(app.start());
  app.logger.info({ evt: 'listening', config: cfg.file, uid: process.geteuid?.() }, 'smarthost started');
  await untilStopped(app, () => void app.reload());
  return 0;
}

/** Binding and listening errors name the address and the likely cause: an operator's error, not a crash. */
async function explained<T>(step: Promise<T>): Promise<T> {
  try {
    return await step;
  } catch (err) {
    if (err instanceof ListenError || err instanceof BindError || /^admin listener: /.test((err as Error).message)) throw new CliError((err as Error).message);
    throw err;
  }
}

/** The primary reserves the listeners' addresses for its workers (they start unprivileged). */
async function bindListeners(cfg: Config): Promise<Map<string, BoundSocket>> {
  const sockets = new Map<string, BoundSocket>();
  try {
    for (const l of cfg.listeners) {
      try {
        sockets.set(l.name, await bindSocket(l.address, l.port));
      } catch (err) {
        throw new CliError(`listener "${l.name}": cannot bind ${l.address}:${l.port}: ${bindHint((err as BindError).code)}`);
      }
    }
  } catch (err) {
    for (const s of sockets.values()) s.close();
    throw err;
  }
  return sockets;
}

function untilStopped(app: App, onHup: () => void, beforeStop?: () => Promise<void>): Promise<void> {
  return new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      app.logger.info({ evt: 'disconnect', signal }, 'stopping');
      void (beforeStop ? beforeStop() : Promise.resolve())
        .then(() => app.stop())
        .then(resolve, resolve);
    };
    // SIGHUP: re-read the policy files and DKIM keys; open sessions carry on, an invalid policy is refused and logged.
    process.on('SIGHUP', onHup);
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

async function runPrimary(cfg: Config, args: string[]): Promise<number> {
  const store = new MemoryStore();
  let supervisor: Supervisor | undefined;
  let workersReady = false;
  const app = await build(cfg, {
    role: 'primary',
    state: store,
    listenersReady: () => workersReady,
    afterReload: () => supervisor?.broadcast({ t: 'reload' }),
  });
  const sockets = await bindListeners(cfg);
  await explained(app.bind());
  // Every address is reserved: from here on the unprivileged user, the workers too.
  dropPrivileges(cfg, app.logger);
  await explained(app.start());
  supervisor = superviseWorkers({ count: cfg.process.workers, app, store, logger: app.logger, argv: ['start', ...args], sockets });
  try {
    await supervisor.ready;
  } catch (err) {
    await supervisor.stop();
    await app.stop();
    throw new CliError((err as Error).message);
  }
  workersReady = true;
  app.logger.info({ evt: 'listening', config: cfg.file, workers: cfg.process.workers, uid: process.geteuid?.() }, 'smarthost started');
  await untilStopped(
    app,
    () => void app.reload(),
    () => supervisor!.stop(),
  );
  return 0;
}

async function runWorker(cfg: Config): Promise<number> {
  const send = (m: ClusterMessage) => process.send?.(m);
  const handoff = await fromPrimary(send);
  const ipc = createIpcStateStore();
  const app = await build(cfg, {
    role: 'worker',
    state: ipc.store,
    // With Redis every process writes the shared state itself; the primary's store is the memory backend's.
    activityForward: cfg.state.backend === 'memory' ? ipc.forwardActivity : undefined,
    onDeferred: (id, nextAttemptAt) => send({ t: 'deferred', id, nextAttemptAt }),
    tls: handoff.tls,
    sockets: handoff.sockets,
  });
  try {
    // Forked after the primary's drop: already the service user (a no-op then).
    dropPrivileges(cfg, app.logger);
    await app.start();
  } catch (err) {
    send({ t: 'start-failed', error: (err as Error).message });
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 100);
    return -1;
  }
  process.on('message', (m: ClusterMessage) => {
    if (m?.t === 'reload') void app.reload();
  });
  send({ t: 'ready', idSuffix: processIdSuffix() });
  // The primary handles SIGHUP and tells the workers; a worker's own SIGHUP reloads itself only.
  await untilStopped(app, () => void app.reload());
  process.disconnect?.();
  return 0;
}

/** A worker's listening sockets and certificate, from the primary that bound and read them. */
function fromPrimary(send: (m: ClusterMessage) => void): Promise<{ sockets: Map<string, BoundSocket>; tls: TlsMaterial }> {
  return new Promise((resolve) => {
    const sockets = new Map<string, BoundSocket>();
    const onMessage = (m: ClusterMessage, handle?: unknown) => {
      if (m?.t === 'socket' && handle) sockets.set(m.name, handle as BoundSocket);
      else if (m?.t === 'start') {
        process.removeListener('message', onMessage);
        resolve({ sockets, tls: m.tls });
      }
    };
    process.on('message', onMessage);
    send({ t: 'hello' });
  });
}
