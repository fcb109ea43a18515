/** `smarthost start`: build and run the gateway; SIGTERM/SIGINT drain and stop. */
import { parseArgs } from 'node:util';
import { build } from '../app';
import { ListenError } from '../smtp/listener';
import { CliError, configFrom } from './common';

export async function runStart(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } } });
  const cfg = configFrom(values);
  const app = await build(cfg);
  try {
    await app.start();
  } catch (err) {
    if (err instanceof ListenError) throw new CliError(err.message);
    throw err;
  }
  app.logger.info({ evt: 'listening', config: cfg.file }, 'smarthost started');
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      app.logger.info({ evt: 'disconnect', signal }, 'stopping');
      void app.stop().then(resolve, resolve);
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}
