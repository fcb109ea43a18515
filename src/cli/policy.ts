/**
 * `smarthost policy explain|check`.
 *
 *   policy explain --listener NAME --ip ADDR [--user U] --from ADDR --rcpt ADDR...
 *                  [--header-from ADDR]... [--size BYTES] [--policy-dir DIR] [--live] [--json]
 *     What the gateway would decide, rule by rule, with each rule's inputs
 *     (netblock, DNSBL answers, quota counts) and the final reply. Runs the
 *     engine's own code on the policy files (or --policy-dir: a candidate
 *     policy, tested before it is deployed), with real DNS lookups and empty
 *     counters; --live asks the running gateway instead, which evaluates with
 *     its live counters (read, never written). Sends no mail. Ends with what
 *     DKIM would sign the message as, and by which rule (or why not).
 *
 *   policy check [--policy-dir DIR]
 *     Validate a policy directory (file: key: reason on error) and summarise it.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { AccountStore } from '../accounts/store';
import { ConfigError } from '../config/validate';
import { createSigner } from '../dkim/sign';
import { createLogger } from '../log';
import { PolicyEngine } from '../policy/engine';
import { explain, formatExplain, type ExplainReport } from '../policy/explain';
import { canonicalIp } from '../policy/ip';
import { loadPolicy, STAGES, type LoadOptions, type PolicySet } from '../policy/load';
import { MemoryStore } from '../state/memory';
import { adminCall, CliError, configFrom, count } from './common';
import { explainListener, ruleListeners } from '../postfix/config';

/** What the command accepts (usage.ts describes each; a test compares). */
export const POLICY_CHECK_OPTIONS = { config: { type: 'string', short: 'c' }, 'policy-dir': { type: 'string' } } satisfies ParseArgsConfig['options'];

export const POLICY_EXPLAIN_OPTIONS = {
  config: { type: 'string', short: 'c' },
  listener: { type: 'string' },
  ip: { type: 'string' },
  user: { type: 'string' },
  from: { type: 'string' },
  rcpt: { type: 'string', multiple: true },
  'header-from': { type: 'string', multiple: true },
  size: { type: 'string' },
  'policy-dir': { type: 'string' },
  live: { type: 'boolean' },
  json: { type: 'boolean' },
} satisfies ParseArgsConfig['options'];

export async function runPolicy(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'explain') return runExplain(rest);
  if (sub === 'check') return runCheck(rest);
  throw new CliError(sub === undefined ? 'policy needs explain or check' : `unknown policy command "${sub}"`, 2);
}

function load(dir: string, listeners: LoadOptions['listeners']): PolicySet {
  try {
    return loadPolicy(dir, { listeners });
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(`invalid policy: ${err.message}`);
    throw err;
  }
}

async function runCheck(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: POLICY_CHECK_OPTIONS });
  const cfg = configFrom(values, { serving: false });
  const dir = values['policy-dir'] ?? cfg.policy.dir;
  const p = load(dir, cfg.listeners);
  const rules = STAGES.map((s) => `${s} ${p.stages[s].length}`).join(', ');
  process.stdout.write(
    `${dir}: ok (${count(p.files.length, 'file')}; ${count(p.netblocks.size, 'netblock')} in ${count(p.netblocks.classes.size, 'class', 'classes')}; ${count(p.dnsbl.zones.length, 'DNSBL zone')}; ${count(p.quotas.plans.size, 'plan')}; rules: ${rules})\n`,
  );
  return 0;
}

async function runExplain(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: POLICY_EXPLAIN_OPTIONS,
  });
  if (!values.listener || !values.ip || values.from === undefined || !values.rcpt?.length) throw new CliError('policy explain needs --listener, --ip, --from and --rcpt', 2);
  if (!canonicalIp(values.ip)) throw new CliError(`not an IP address: "${values.ip}"`, 2);
  const size = values.size === undefined ? undefined : Number(values.size);
  if (size !== undefined && !(Number.isInteger(size) && size >= 0)) throw new CliError(`--size: not a number of bytes: "${values.size}"`, 2);
  const cfg = configFrom(values, { serving: false });
  // "postfix" too, with a postfix section: Postfix's clients (docs/postfix.md).
  const listener = explainListener(ruleListeners(cfg), values.listener, values.user);
  if (!listener) throw new CliError(`no listener "${values.listener}" (listeners: ${ruleListeners(cfg).map((l) => l.name).join(', ')})`, 2);
  if (values.user && listener.role !== 'submission') throw new CliError(`--user: listener ${listener.name} is ${listener.role}, AUTH is only on submission listeners`, 2);
  const from = values.from.replace(/^<(.*)>$/, '$1');

  let report: ExplainReport;
  if (values.live) {
    if (values['policy-dir']) throw new CliError('--live explains with the running policy; leave out --policy-dir', 2);
    const q = new URLSearchParams({ listener: listener.name, ip: values.ip, from });
    if (values.user) q.set('user', values.user);
    for (const r of values.rcpt) q.append('rcpt', r);
    for (const h of values['header-from'] ?? []) q.append('headerFrom', h);
    if (size !== undefined) q.set('size', String(size));
    const r = await adminCall(cfg, 'POST', `/api/policy/explain?${q}`);
    if (r.status !== 200) throw new CliError(`explain failed: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    report = r.body as ExplainReport;
  } else {
    const policy = load(values['policy-dir'] ?? cfg.policy.dir, ruleListeners(cfg));
    const accounts = new AccountStore(cfg.accounts.file, 0);
    try {
      accounts.load();
    } catch (err) {
      if (err instanceof ConfigError) throw new CliError(`invalid accounts: ${err.message}`);
      throw err;
    }
    const account = values.user ? accounts.get(values.user) : undefined;
    if (values.user && !account) throw new CliError(`no account "${values.user}" in ${cfg.accounts.file}`);
    const store = new MemoryStore();
    const logger = createLogger({ level: 'silent', pretty: false });
    const engine = new PolicyEngine(policy, { store, logger, accounts });
    const signer = cfg.dkim.enabled ? await createSigner(cfg.dkim, logger).catch((err: Error) => {
      process.stderr.write(`smarthost: DKIM keys not readable (${err.message}): the signing decision is left out\n`);
      return undefined;
    }) : undefined;
    report = await explain(engine, {
      listener: { name: listener.name, role: listener.role },
      ip: values.ip,
      user: values.user,
      account,
      from,
      rcpts: values.rcpt,
      ...(values['header-from'] ? { headerFrom: values['header-from'].map((a) => a.toLowerCase()) } : {}),
      ...(size !== undefined ? { size } : {}),
      ...(signer ? { signer } : {}),
    });
    await signer?.close();
    await store.close();
  }
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatExplain(report));
  return 0;
}
