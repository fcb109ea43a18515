/**
 * `smarthost containment …`: the abuse desk's commands, through the running
 * gateway's admin API (src/containment/admin-routes.ts):
 *   show                       subjects containment responded to (newest
 *                              first): response then and now, score, signals
 *   show --account N | --ip A  one subject: response, score, fired signals,
 *                              every signal's value
 *   release --account N | --ip A
 *                              lift a hold or suspension (and the account's
 *                              suspended flag); held messages stay in the
 *                              hold queue (`smarthost queue release|delete`)
 *   legitimate --account N | --ip A [--for 30d]
 *                              the pattern is theirs: thresholds ×
 *                              legitimate.factor for a while, and released
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { adminCall, CliError, configFrom } from './common';

interface Status {
  response: string;
  legitimate: boolean;
  assessment: { score: number; fired: string[]; signals: Record<string, number>; exempt: boolean };
}

interface Listed {
  subject: string;
  response: string;
  score: number;
  fired: string[];
  at: string;
  responseNow: string;
  scoreNow: number;
  legitimate: boolean;
}

/** What the command accepts (usage.ts describes each; a test compares). */
export const CONTAINMENT_OPTIONS = {
  config: { type: 'string', short: 'c' },
  account: { type: 'string' },
  ip: { type: 'string' },
  for: { type: 'string' },
  json: { type: 'boolean' },
} satisfies ParseArgsConfig['options'];

export async function runContainment(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: CONTAINMENT_OPTIONS,
  });
  const [op] = positionals;
  if (!op || !['show', 'release', 'legitimate'].includes(op) || positionals.length > 1) {
    throw new CliError(op ? `unknown containment command "${positionals.join(' ')}"` : 'containment needs show, release or legitimate', 2);
  }
  if (values.account && values.ip) throw new CliError(`give --account or --ip, not both`, 2);
  const query = values.account ? `account=${encodeURIComponent(values.account)}` : values.ip ? `ip=${encodeURIComponent(values.ip)}` : '';
  if (op !== 'show' && !query) throw new CliError(`containment ${op} needs --account NAME or --ip ADDR`, 2);
  if (values.for && op !== 'legitimate') throw new CliError(`--for is only for containment legitimate`, 2);
  const cfg = configFrom(values, { serving: false });
  const who = values.account ? `account:${values.account}` : `ip:${values.ip}`;
  if (op === 'show') {
    const r = await adminCall(cfg, 'GET', `/api/containment${query ? `?${query}` : ''}`);
    if (r.status !== 200) throw new CliError(`containment show: ${(r.body as { error?: string }).error ?? `HTTP ${r.status}`}`);
    if (values.json) process.stdout.write(`${JSON.stringify(r.body, null, 2)}\n`);
    else process.stdout.write(query ? formatOne(who, r.body as Status) : formatList(r.body as { enabled: boolean; subjects: Listed[] }));
    return 0;
  }
  const extra = op === 'legitimate' && values.for ? `&for=${encodeURIComponent(values.for)}` : '';
  const r = await adminCall(cfg, 'POST', `/api/containment/${op}?${query}${extra}`);
  if (r.status !== 200) throw new CliError(`containment ${op}: ${(r.body as { error?: string }).error ?? `HTTP ${r.status}`}`);
  const s = r.body as Status;
  process.stdout.write(`${who}: ${op === 'release' ? 'released' : `marked legitimate${values.for ? ` for ${values.for}` : ''}`}; response now ${s.response}, score ${s.assessment.score}\n`);
  return 0;
}

function formatOne(who: string, s: Status): string {
  const lines = [
    `${who}`,
    `  response     ${s.response}${s.legitimate ? ' (marked legitimate)' : ''}${s.assessment.exempt ? ' (not scored: allow-listed or containment off)' : ''}`,
    `  score        ${s.assessment.score}`,
    `  fired        ${s.assessment.fired.join(', ') || '-'}`,
    '  signals',
    ...Object.entries(s.assessment.signals).map(([k, v]) => `    ${k.padEnd(22)} ${Number.isInteger(v) ? v : v.toFixed(2)}`),
  ];
  return `${lines.join('\n')}\n`;
}

function formatList(b: { enabled: boolean; subjects: Listed[] }): string {
  if (!b.enabled) return 'containment is off (no policies/containment.yaml, or enabled: false)\n';
  if (b.subjects.length === 0) return 'no subject contained since this gateway started\n';
  const rows = [['SUBJECT', 'NOW', 'SCORE', 'RESPONDED', 'AT', 'FIRED'].join('\t')];
  for (const s of b.subjects) rows.push([s.subject, `${s.responseNow}${s.legitimate ? '*' : ''}`, String(s.scoreNow), `${s.response} (${s.score})`, s.at, s.fired.join(',')].join('\t'));
  return `${rows.join('\n')}\n-- ${b.subjects.length} subject(s); * marked legitimate\n`;
}
