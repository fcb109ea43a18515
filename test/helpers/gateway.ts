/**
 * A gateway for tests: a temporary directory with a config, policies and
 * accounts, built in-process on port 0 (or described for a child process).
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { AccountStore } from '../../src/accounts/store';
import { build, type App } from '../../src/app';
import { loadConfigFile } from '../../src/config/load';
import { createLogger } from '../../src/log';
import { testCert } from './tls';

export interface TestAccount {
  name: string;
  password: string;
  senders?: string[];
  plan?: string;
  suspended?: boolean;
}

export interface GatewaySpec {
  /** Extra/overriding top-level config (merged shallowly per section). */
  config?: Record<string, unknown>;
  accounts?: TestAccount[];
  netblocks?: Array<{ cidr: string; class: string }>;
  /** Extra files under policies/ (name → YAML text). */
  policyFiles?: Record<string, string>;
  /** Where the gateway's directory is made (default: os.tmpdir()). */
  baseDir?: string;
}

export interface TestGateway {
  dir: string;
  configFile: string;
  app?: App;
  port(name: string): number;
  stop(): Promise<void>;
}

export const DEFAULT_ACCOUNTS: TestAccount[] = [
  { name: 'alice@isp.test', password: 'alice-secret-1', senders: ['alice@isp.test', '@alice-bakery.test'], plan: 'residential' },
  { name: 'bob@isp.test', password: 'bob-secret-22', plan: 'residential' },
  { name: 'mallory@isp.test', password: 'mallory-pw-333', suspended: true },
];

/** Writes the directory and config; returns the config file path. */
export async function prepareGateway(spec: GatewaySpec = {}): Promise<{ dir: string; configFile: string }> {
  const dir = await fsp.mkdtemp(path.join(spec.baseDir ?? os.tmpdir(), 'smarthost-test-'));
  await fsp.mkdir(path.join(dir, 'policies'));
  await fsp.writeFile(
    path.join(dir, 'policies', 'netblocks.yaml'),
    YAML.stringify({ netblocks: spec.netblocks ?? [{ cidr: '127.0.0.0/28', class: 'residential-dynamic' }] }),
  );
  for (const [name, text] of Object.entries(spec.policyFiles ?? {})) await fsp.writeFile(path.join(dir, 'policies', name), text);
  const { key, cert } = await testCert();
  await fsp.writeFile(path.join(dir, 'tls.key'), key, { mode: 0o600 });
  await fsp.writeFile(path.join(dir, 'tls.crt'), cert);
  const store = new AccountStore(path.join(dir, 'accounts.yaml'), 0);
  store.load();
  for (const a of spec.accounts ?? DEFAULT_ACCOUNTS) {
    const acc = await AccountStore.newAccount(a.name, a.password, { senders: a.senders, plan: a.plan });
    await store.upsert(a.name, () => ({ ...acc, suspended: a.suspended ?? false }));
  }
  const base: Record<string, unknown> = {
    hostname: 'gw.isp.test',
    log: { level: process.env.TEST_LOG_LEVEL ?? 'silent' },
    spool: { dir: 'spool' },
    serverTls: { cert: 'tls.crt', key: 'tls.key' },
    accounts: { file: 'accounts.yaml' },
    policy: { dir: 'policies' },
    admin: { address: '127.0.0.1', port: 0, token: 'test-admin-token' },
    listeners: [
      { name: 'submission', role: 'submission', address: '127.0.0.1', port: 0, security: 'starttls' },
      { name: 'submissions', role: 'submission', address: '127.0.0.1', port: 0, security: 'implicit' },
      { name: 'intercept', role: 'intercept', address: '127.0.0.1', port: 0, security: 'starttls', greetDelay: '0ms' },
    ],
    relay: { backoff: ['1s'], poolIdle: '200ms' },
  };
  const cfg = { ...base };
  for (const [k, v] of Object.entries(spec.config ?? {})) {
    const cur = cfg[k];
    cfg[k] = cur && typeof cur === 'object' && !Array.isArray(cur) && v && typeof v === 'object' && !Array.isArray(v) ? { ...cur, ...v } : v;
  }
  const configFile = path.join(dir, 'smarthost.yaml');
  await fsp.writeFile(configFile, YAML.stringify(cfg));
  return { dir, configFile };
}

/** Prepared and started in this process. */
export async function startGateway(spec: GatewaySpec = {}): Promise<TestGateway> {
  const { dir, configFile } = await prepareGateway(spec);
  const cfg = loadConfigFile(configFile);
  const app = await build(cfg, { logger: createLogger({ level: cfg.log.level, pretty: false }), scanIntervalMs: 200 });
  await app.start();
  return {
    dir,
    configFile,
    app,
    port: (name) => app.port(name),
    async stop() {
      await app.stop();
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}
