/**
 * What the NOC looks at, as data: every PromQL expression of the Grafana
 * dashboards and the alert rules, read from the files in the repo (so a
 * panel or rule added later is tested without touching the tests), and a
 * real Prometheus for tests to ask.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { freePort } from '../helpers/process';

/** The repository root (tests run from dist/test/metrics). */
export const REPO = path.resolve(__dirname, '../../..');
export const DASHBOARD_DIR = path.join(REPO, 'grafana', 'dashboards');
export const ALERTS_FILE = path.join(REPO, 'prometheus', 'alerts.yml');

export interface Expr {
  where: string;
  expr: string;
}

/** Grafana's built-in and dashboard variables, as a query at "now" over a short test run needs them. */
export function substituteGrafanaVars(expr: string): string {
  return expr
    .replace(/\$__rate_interval|\$\{__rate_interval\}/g, '1m')
    .replace(/\$__interval|\$\{__interval\}/g, '1m')
    .replace(/\$__range|\$\{__range\}/g, '5m')
    .replace(/\$instance|\$\{instance\}/g, '.+');
}

export function dashboardExprs(): Expr[] {
  const out: Expr[] = [];
  for (const f of readdirSync(DASHBOARD_DIR).filter((n) => n.endsWith('.json'))) {
    const dash = JSON.parse(readFileSync(path.join(DASHBOARD_DIR, f), 'utf8')) as { uid: string };
    const walk = (node: unknown, where: string): void => {
      if (Array.isArray(node)) return node.forEach((n, i) => walk(n, `${where}[${i}]`));
      if (!node || typeof node !== 'object') return;
      const o = node as Record<string, unknown>;
      const title = typeof o.title === 'string' ? `${where} "${o.title}"` : where;
      if (typeof o.expr === 'string' && o.expr.trim()) out.push({ where: `${f} ${title}`, expr: o.expr });
      for (const [k, v] of Object.entries(o)) if (k !== 'expr' && typeof v === 'object') walk(v, title);
    };
    walk(dash, dash.uid);
  }
  return out;
}

export interface AlertRule {
  alert: string;
  expr: string;
}

export function alertRules(): AlertRule[] {
  const doc = YAML.parse(readFileSync(ALERTS_FILE, 'utf8')) as { groups: Array<{ rules: AlertRule[] }> };
  return doc.groups.flatMap((g) => g.rules).filter((r) => r.alert);
}

/**
 * The series an alert compares, without the comparisons: `A > 0.3 and B > 1`
 * → `A and B`. Against a healthy gateway the alert is (rightly) silent, but
 * what it looks at must exist, or it could never fire.
 */
export function stripComparisons(expr: string): string {
  return expr.replace(/\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?-?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?=\s*(?:\)|\band\b|\bor\b|\bunless\b|$))/g, '').trim();
}

export interface Prometheus {
  readonly url: string;
  query(expr: string): Promise<{ status: string; error?: string; resultType?: string; result: unknown[] }>;
  stop(): Promise<void>;
}

/**
 * A real Prometheus (Debian's /usr/bin/prometheus) scraping `targets` every second, with the repo's alert rules loaded.
 * Its port is probed free just before; another process can still take it first (other test files bind
 * ports all the time), so "address already in use" means: try again on another port (3 tries). A setup
 * that fails never leaves the child behind: it is killed (SIGKILL after 5 s) before the error is thrown.
 */
export async function startPrometheus(targets: string[]): Promise<Prometheus> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-prom-'));
  const config = {
    global: { scrape_interval: '1s', evaluation_interval: '1s', scrape_timeout: '900ms' },
    rule_files: [ALERTS_FILE],
    scrape_configs: [{ job_name: 'smarthost', metrics_path: '/metrics', static_configs: [{ targets }] }],
  };
  await fsp.writeFile(path.join(dir, 'prometheus.yml'), YAML.stringify(config));
  const errors: string[] = [];
  try {
    for (let attempt = 1; attempt <= 3; attempt++) {
      const started = await startOnce(dir, await freePort());
      if ('url' in started) return started;
      errors.push(started.error);
      if (!/address already in use/i.test(started.error)) break;
    }
  } catch (err) {
    errors.push((err as Error).message);
  }
  await fsp.rm(dir, { recursive: true, force: true });
  throw new Error(`prometheus did not start:\n${errors.join('\n---\n')}`);
}

/** One try on `port`: a ready Prometheus, or why not (the child is gone by then). */
async function startOnce(dir: string, port: number): Promise<Prometheus | { error: string }> {
  const child: ChildProcess = spawn(
    '/usr/bin/prometheus',
    [`--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  // A test file whose setup failed before it could call stop() must still end: the child does
  // not hold the event loop open, and is killed when this process exits.
  child.unref();
  (child.stderr as unknown as { unref(): void }).unref();
  const killAtExit = () => child.kill('SIGKILL');
  process.once('exit', killAtExit);
  let spawnError: Error | undefined;
  // 'exit' may never come for a child that could not be spawned: 'error' ends the wait too.
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (err) => {
      spawnError = err;
      resolve();
    });
  });
  let gone = false;
  void exited.then(() => (gone = true));
  const kill = async () => {
    if (!gone) child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
    process.removeListener('exit', killAtExit);
  };
  const url = `http://127.0.0.1:${port}`;
  // A bound that catches a Prometheus that never comes up, not a speed check (a loaded machine is slow).
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (gone) return { error: `prometheus on port ${port} exited (${spawnError?.message ?? child.exitCode ?? child.signalCode}):\n${log}` };
    // Address in use: Prometheus logs it and exits; do not wait for that.
    if (/address already in use/i.test(log)) {
      await kill();
      return { error: `prometheus on port ${port}: address already in use:\n${log}` };
    }
    const ok = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(2000) }).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline) {
      await kill();
      return { error: `prometheus on port ${port} not ready after 60 s:\n${log}` };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    async query(expr) {
      const r = await fetch(`${url}/api/v1/query`, { method: 'POST', body: new URLSearchParams({ query: expr }), signal: AbortSignal.timeout(30_000) });
      const j = (await r.json()) as { status: string; error?: string; data?: { resultType: string; result: unknown[] } };
      return { status: j.status, error: j.error, resultType: j.data?.resultType, result: j.data?.result ?? [] };
    },
    async stop() {
      await kill();
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}
