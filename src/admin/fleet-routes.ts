/**
 * Admin API routes that act on the whole fleet (src/fleet/fleet.ts):
 *   GET  /api/fleet                          this node, the state store, the
 *                                            fleet's nodes and suspensions
 *   POST /api/fleet/accounts/:name/suspend   {reason?, by?}  suspend everywhere
 *   POST /api/fleet/accounts/:name/unsuspend                 lift it everywhere
 *   POST /api/fleet/quotas/clear             {account | ip, limits?: [names]}
 *   POST /api/fleet/lockouts/clear           {account | ip}  lift an AUTH lockout
 *   POST /api/fleet/reload                   {timeout?: ms}  reload every gateway;
 *                                            200 all reloaded, 422 one refused
 *                                            its new policy, 504 one did not answer
 * Without a shared Redis (state.backend: memory) the fleet is this gateway:
 * clears and reload act here, suspensions answer 409 (use the CLI).
 * A Redis outage answers 503 (nothing was changed).
 */
import { isObj } from '../config/validate';
import { FleetUnavailableError, type Fleet } from '../fleet/fleet';
import { canonicalIp } from '../policy/ip';
import { LIMIT_NAMES, RATE_LIMITS, type LimitName } from '../policy/quotas';
import type { ApiRequest, ApiResponse, AdminServer } from './server';

type Who = { account?: string; ip?: string };

function who(body: unknown): Who | string {
  if (!isObj(body)) return 'expected a JSON object with "account" or "ip"';
  const account = typeof body.account === 'string' && body.account.trim() ? body.account.trim() : undefined;
  const ipText = typeof body.ip === 'string' ? body.ip.trim() : undefined;
  if ((account === undefined) === (ipText === undefined)) return 'give exactly one of "account" or "ip"';
  if (ipText !== undefined) {
    const ip = canonicalIp(ipText);
    if (!ip) return `not an IP address: "${ipText}"`;
    return { ip };
  }
  return { account };
}

async function guarded(fn: () => Promise<ApiResponse>): Promise<ApiResponse> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof FleetUnavailableError) {
      const status = /needs the fleet/.test(err.message) ? 409 : 503;
      return { status, body: { error: err.message } };
    }
    throw err;
  }
}

export function registerFleetRoutes(admin: AdminServer, fleet: Fleet, state: { status(): unknown }): void {
  admin.route('GET', '/api/fleet', () =>
    guarded(async () => ({
      status: 200,
      body: {
        node: fleet.node,
        shared: fleet.shared,
        state: state.status(),
        nodes: await fleet.nodes().catch((err: Error) => ({ error: err.message })),
        suspended: fleet.suspensions(),
      },
    })),
  );

  admin.route('POST', '/api/fleet/accounts/:name/suspend', (req: ApiRequest) =>
    guarded(async () => {
      const b = isObj(req.body) ? req.body : {};
      const s = await fleet.suspend(req.params.name!, {
        reason: typeof b.reason === 'string' ? b.reason : undefined,
        by: typeof b.by === 'string' ? b.by : undefined,
      });
      return { status: 200, body: { suspended: true, fleetWide: true, suspension: s } };
    }),
  );

  admin.route('POST', '/api/fleet/accounts/:name/unsuspend', (req: ApiRequest) =>
    guarded(async () => {
      const was = await fleet.unsuspend(req.params.name!);
      return { status: 200, body: { suspended: false, fleetWide: true, wasSuspended: was } };
    }),
  );

  admin.route('POST', '/api/fleet/quotas/clear', (req: ApiRequest) =>
    guarded(async () => {
      const w = who(req.body);
      if (typeof w === 'string') return { status: 400, body: { error: w } };
      let limits: LimitName[] = [...RATE_LIMITS];
      const given = isObj(req.body) ? req.body.limits : undefined;
      if (given !== undefined) {
        if (!Array.isArray(given) || given.some((l) => !RATE_LIMITS.includes(l as LimitName))) {
          return { status: 400, body: { error: `limits: a list of ${RATE_LIMITS.join(', ')} (other limits: ${LIMIT_NAMES.filter((l) => !RATE_LIMITS.includes(l)).join(', ')} keep no counts)` } };
        }
        limits = given as LimitName[];
      }
      const cleared = await fleet.clearQuotas(w, limits);
      return { status: 200, body: { cleared } };
    }),
  );

  admin.route('POST', '/api/fleet/lockouts/clear', (req: ApiRequest) =>
    guarded(async () => {
      const w = who(req.body);
      if (typeof w === 'string') return { status: 400, body: { error: w } };
      return { status: 200, body: { cleared: await fleet.clearLockout(w) } };
    }),
  );

  admin.route('POST', '/api/fleet/reload', (req: ApiRequest) =>
    guarded(async () => {
      const t = isObj(req.body) && typeof req.body.timeout === 'number' ? Math.min(Math.max(req.body.timeout, 100), 60_000) : 5000;
      const r = await fleet.reloadAll(t);
      const status = r.missing.length > 0 ? 504 : r.ok ? 200 : 422;
      return { status, body: r };
    }),
  );
}
