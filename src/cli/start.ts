/**
 * `smarthost start`: build and run the gateway; SIGTERM/SIGINT drain and
 * stop; SIGHUP reloads. With `process.workers` > 1 this process becomes the
 * primary and forks the workers (src/cluster/supervisor.ts).
 */
import cluster from 'node:cluster';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { build, type App } from '../app';
import type { Config } from '../config/schema';
import { createIpcStateStore } from '../cluster/ipc-store';
import { superviseWorkers, type ClusterMessage, type Supervisor } from '../cluster/supervisor';
import { ListenError } from '../smtp/listener';
import { processIdSuffix } from '../spool/queue-id';
import { MemoryStore } from '../state/memory';
import { CliError, configFrom } from './common';
import { dropPrivileges } from './privileges';

/** What the command accepts (usage.ts describes each; a test compares). */
export const START_OPTIONS = { config: { type: 'string', short: 'c' } } satisfies ParseArgsConfig['options'];

export async function runStart(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: START_OPTIONS });
  const cfg = configFrom(values);
  if (cfg.process.workers > 1 && cluster.isWorker) return runWorker(cfg);
  if (cfg.process.workers > 1) return runPrimary(cfg, args);
  const app = await build(cfg);
  await startOrExplain(app);
  // Ports are bound: from here on, the unprivileged user (process.user).
  dropPrivileges(cfg, app.logger);
  app.logger.info({ evt: 'listening', config: cfg.file }, 'smarthost started');
  await untilStopped(app, () => void app.reload());
  return 0;
}

async function startOrExplain(app: App): Promise<void> {
  try {
    await app.start();
  } catch (err) {
    if (err instanceof ListenError) throw new CliError(err.message);
    throw err;
  }
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
  await startOrExplain(app);
  supervisor = superviseWorkers({ count: cfg.process.workers, app, store, logger: app.logger, argv: ['start', ...args] });
  try {
    await supervisor.ready;
  } catch (err) {
    await supervisor.stop();
    await app.stop();
    throw new CliError((err as Error).message);
  }
  workersReady = true;
  // The workers hold their listening sockets: the primary drops root too.
  dropPrivileges(cfg, app.logger);
  app.logger.info({ evt: 'listening', config: cfg.file, workers: cfg.process.workers }, 'smarthost started');
  await untilStopped(
    app,
    () => void app.reload(),
    () => supervisor!.stop(),
  );
  return 0;
}

async function runWorker(cfg: Config): Promise<number> {
  const send = (m: ClusterMessage) => process.send?.(m);
  const app = await build(cfg, {
    role: 'worker',
    state: createIpcStateStore(),
    onDeferred: (id, nextAttemptAt) => send({ t: 'deferred', id, nextAttemptAt }),
  });
  try {
    await app.start();
  } catch (err) {
    send({ t: 'start-failed', error: err instanceof ListenError ? err.message : String((err as Error).message) });
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 100);
    return -1;
  }
  dropPrivileges(cfg, app.logger);
  process.on('message', (m: ClusterMessage) => {
    if (m?.t === 'reload') void app.reload();
  });
  send({ t: 'ready', idSuffix: processIdSuffix() });
  // The primary handles SIGHUP and tells the workers; a worker's own SIGHUP reloads itself only.
  await untilStopped(app, () => void app.reload());
  process.disconnect?.();
  return 0;
}
