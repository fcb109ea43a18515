/**
 * Admin API routes of the policy:
 *   POST /api/reload           re-read the policy files (as SIGHUP does);
 *                              200 { ok: true, policy: {...} }, or 422 with the
 *                              error when the new policy is invalid (the old one
 *                              stays in force)
 *   POST /api/policy/explain   ?listener=&ip=&user=&from=&rcpt=&rcpt=&headerFrom=&size=
 *                              what the running gateway would decide, with its
 *                              live counters (read, never written)
 */
import type { AccountStore } from '../accounts/store';
import type { ListenerConfig } from '../config/listener';
import type { MessageSigner } from '../dkim/types';
import { canonicalIp } from '../policy/ip';
import { explain } from '../policy/explain';
import type { PolicyRuntime, ReloadResult } from '../policy/runtime';
import type { AdminServer, ApiResponse } from './server';
import { explainListener } from '../postfix/config';

export interface PolicyRouteDeps {
  readonly runtime: PolicyRuntime;
  readonly listeners: readonly ListenerConfig[];
  readonly accounts: AccountStore;
  /** The DKIM signer in use (absent: DKIM off), for explain's signing decision. */
  readonly signer?: () => Pick<MessageSigner, 'decide'> | undefined;
  /** What POST /api/reload reloads (the app's reload: the policy, and whatever joins it later). */
  readonly reload: () => Promise<{ ok: boolean; policy: ReloadResult }>;
}

export function registerPolicyRoutes(admin: AdminServer, deps: PolicyRouteDeps): void {
  admin.route('POST', '/api/reload', async () => {
    const r = await deps.reload();
    return { status: r.ok ? 200 : 422, body: r };
  });
  // A POST for its query, but it only reads (the NOC's "why was this refused?").
  admin.route('POST', '/api/policy/explain', async (req) => explainQuery(deps, req.query), 'read');
}

/** What the running gateway would decide for ?listener=&ip=&user=&from=&rcpt=&headerFrom=&size= (also the console's explain form). */
export async function explainQuery(deps: PolicyRouteDeps, q: URLSearchParams): Promise<ApiResponse> {
  const name = q.get('listener') ?? '';
  const listener = explainListener(deps.listeners, name, q.get('user') ?? undefined);
  if (!listener) return { status: 400, body: { error: `no listener "${name}" (listeners: ${deps.listeners.map((l) => l.name).join(', ')})` } };
  const ip = q.get('ip') ?? '';
  if (!canonicalIp(ip)) return { status: 400, body: { error: `not an IP address: "${ip}"` } };
  const user = q.get('user') ?? undefined;
  if (user && listener.role !== 'submission') return { status: 400, body: { error: `AUTH is only on submission listeners, not ${listener.name} (${listener.role})` } };
  const account = user ? deps.accounts.get(user) : undefined;
  if (user && !account) return { status: 400, body: { error: `no account "${user}"` } };
  const size = q.get('size');
  const signer = deps.signer?.();
  const report = await explain(deps.runtime.current(), {
    listener: { name: listener.name, role: listener.role },
    ip,
    user,
    account,
    from: q.get('from') ?? '',
    rcpts: q.getAll('rcpt'),
    ...(q.getAll('headerFrom').length ? { headerFrom: q.getAll('headerFrom').map((a) => a.toLowerCase()) } : {}),
    ...(size ? { size: Number(size) } : {}),
    ...(signer ? { signer } : {}),
  });
  return { status: 200, body: report };
}
