/**
 * `smarthost check-config`: everything `start` would read, validated deeply
 * (config, policy files — containment.yaml, content.yaml and feedback.yaml
 * included —, accounts, certificate files) without binding a port. Exit 1
 * with "file: key: reason" on the first problem.
 */
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import YAML from 'yaml';
import { parseAccounts } from '../accounts/store';
import { ConfigError } from '../config/validate';
import { loadContainment } from '../containment/config';
import { loadContent } from '../content/config';
import { loadFeedback } from '../feedback/config';
import { loadPolicy } from '../policy/load';
import { CliError, configFrom, count } from './common';

/** What the command accepts (usage.ts describes each; a test compares). */
export const CHECK_CONFIG_OPTIONS = { config: { type: 'string', short: 'c' } } satisfies ParseArgsConfig['options'];

export async function runCheckConfig(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: CHECK_CONFIG_OPTIONS });
  const cfg = configFrom(values);
  try {
    loadPolicy(cfg.policy.dir, { listeners: cfg.listeners });
    loadContainment(cfg.policy.dir);
    loadContent(cfg.policy.dir, cfg.listeners);
    loadFeedback(cfg.policy.dir, { hostname: cfg.hostname, baseDir: cfg.baseDir, listeners: cfg.listeners });
    let accountsText = '';
    try {
      accountsText = readFileSync(cfg.accounts.file, 'utf8');
    } catch {
      // no accounts yet is valid
    }
    parseAccounts(YAML.parse(accountsText) ?? {}, cfg.accounts.file);
    for (const [key, file] of [['serverTls.cert', cfg.serverTls.cert], ['serverTls.key', cfg.serverTls.key]] as const) {
      if (file) {
        try {
          readFileSync(file);
        } catch (err) {
          throw new ConfigError(cfg.file, key, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`);
        }
      }
    }
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(`invalid config: ${err.message}`);
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new CliError(`invalid config: ${(err as Error).message}`);
    throw err;
  }
  process.stdout.write(`${cfg.file}: ok (${count(cfg.listeners.length, 'listener')}, policy ${cfg.policy.dir})\n`);
  return 0;
}
