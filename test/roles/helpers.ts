/** A gateway for role tests: files written into its directory before it is built. */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { build, type App } from '../../src/app';
import { loadConfigFile } from '../../src/config/load';
import { createLogger } from '../../src/log';
import { prepareGateway, type GatewaySpec } from '../helpers/gateway';

export interface RoleGateway {
  dir: string;
  app: App;
  port(name: string): number;
  write(file: string, text: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startRoleGateway(spec: GatewaySpec, files: Record<string, string> = {}): Promise<RoleGateway> {
  const { dir, configFile } = await prepareGateway(spec);
  const write = async (file: string, text: string) => {
    await fsp.mkdir(path.dirname(path.join(dir, file)), { recursive: true });
    await fsp.writeFile(path.join(dir, file), text);
  };
  for (const [f, t] of Object.entries(files)) await write(f, t);
  const cfg = loadConfigFile(configFile);
  const app = await build(cfg, { logger: createLogger({ level: cfg.log.level, pretty: false }), scanIntervalMs: 100 });
  await app.start();
  return {
    dir,
    app,
    port: (name) => app.port(name),
    write,
    async stop() {
      await app.stop();
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

export { waitUntil } from '../helpers/wait-until';

/** A free loopback port (bound then released): where a server that is "down" will later listen. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export const MX_LISTENER = { name: 'mx', role: 'mx', address: '127.0.0.1', port: 0, security: 'none', greetDelay: '0ms' };
export const BASE_LISTENERS = [
  { name: 'submission', role: 'submission', address: '127.0.0.1', port: 0, security: 'starttls' },
  { name: 'intercept', role: 'intercept', address: '127.0.0.1', port: 0, security: 'starttls', greetDelay: '0ms' },
];

/** A gateway following `logFile` for POP-before-SMTP grants on the intercept listener (alice → alice@isp.test). */
export function startPopGateway(logFile: string, logFormat: 'syslog' | 'dovecot', spec: GatewaySpec = {}, files: Record<string, string> = {}): Promise<RoleGateway> {
  return startRoleGateway(
    {
      ...spec,
      config: {
        dkim: { enabled: false },
        listeners: BASE_LISTENERS,
        roles: { popBeforeSmtp: { enabled: true, ttl: '10m', logFile, logFormat, poll: '50ms', userDomain: 'isp.test' } },
        ...spec.config,
      },
    },
    files,
  );
}
