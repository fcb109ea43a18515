/**
 * `smarthost reload`: ask the running gateway to re-read its policy files
 * (the same as SIGHUP), through the admin API. Exit 1 when the new policy
 * is invalid: the message names file, key and reason, and the gateway
 * keeps the policy it had.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { ReloadResult } from '../policy/runtime';
import { adminCall, CliError, configFrom } from './common';

/** What the command accepts (usage.ts describes each; a test compares). */
export const RELOAD_OPTIONS = { config: { type: 'string', short: 'c' } } satisfies ParseArgsConfig['options'];

export async function runReload(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: RELOAD_OPTIONS });
  const cfg = configFrom(values, { serving: false });
  const r = await adminCall(cfg, 'POST', '/api/reload');
  const body = r.body as { ok?: boolean; policy?: ReloadResult; error?: string };
  const p = body.policy;
  if (r.status === 200 && p?.ok) {
    process.stdout.write(`policy: reloaded, version ${p.version} (${p.files.length} files, ${p.ms} ms)\n`);
    return 0;
  }
  if (p && !p.ok) throw new CliError(`reload refused, version ${p.version} stays in force: ${p.error}`);
  throw new CliError(`reload failed: HTTP ${r.status} ${typeof r.body === 'string' ? r.body : JSON.stringify(r.body)}`);
}
