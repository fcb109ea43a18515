/** Every `smarthost` command by name (usage texts: usage.ts; a test keeps the two in step). */
import { runAccount } from './account';
import { runCheckConfig } from './check-config';
import { runContainment } from './containment';
import { runDkim } from './dkim';
import { runPolicy } from './policy';
import { runQueue } from './queue';
import { runReload } from './reload';
import { runStart } from './start';

export const COMMANDS: Readonly<Record<string, (args: string[]) => Promise<number>>> = {
  start: runStart,
  'check-config': runCheckConfig,
  reload: runReload,
  policy: runPolicy,
  queue: runQueue,
  account: runAccount,
  dkim: runDkim,
  containment: runContainment,
};
