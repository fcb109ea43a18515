/**
 * Admin API routes of containment (the abuse desk's side):
 *   GET  /api/containment
 *        the subjects containment responded to in this process (newest
 *        first, at most 1,000), each with its response, score and fired
 *        signals then and its sticky response now
 *   GET  /api/containment?account=NAME | ?ip=ADDR
 *        the subject's sticky response, whether it is marked legitimate,
 *        its current signals, score and fired signals
 *   POST /api/containment/legitimate?account=NAME | ?ip=ADDR [&for=30d]
 *        the pattern is legitimate: thresholds × legitimate.factor for a
 *        while; lifts a hold or suspension (and the account's flag)
 *   POST /api/containment/release?account=NAME | ?ip=ADDR
 *        lift a hold or suspension only
 * Held messages themselves are released or deleted with the queue routes
 * (`smarthost queue release/delete`).
 */
import { parseDuration } from '../config/validate';
import type { AdminServer, ApiRequest, ApiResponse } from '../admin/server';
import type { Containment } from './containment';
import type { RecentSubject } from './wire';
import type { CSubject } from './signals';
import { parseSubjectLabel } from '../state/keys';

/** "account:NAME" / "ip:ADDR" (as in events) → subject. */
function parseName(name: string): CSubject {
  return parseSubjectLabel(name) ?? { kind: 'ip', id: name };
}

function subject(req: ApiRequest): CSubject | string {
  const account = req.query.get('account');
  const ip = req.query.get('ip');
  if (account && !ip) return { kind: 'a', id: account.toLowerCase() };
  if (ip && !account) return { kind: 'ip', id: ip };
  return 'give exactly one of ?account= or ?ip=';
}

export function registerContainmentRoutes(admin: AdminServer, current: () => Containment, recent: () => readonly RecentSubject[] = () => []): void {
  const withSubject = (fn: (s: CSubject) => Promise<ApiResponse>) => async (req: ApiRequest): Promise<ApiResponse> => {
    const s = subject(req);
    return typeof s === 'string' ? { status: 400, body: { error: s } } : fn(s);
  };
  admin.route('GET', '/api/containment', async (req) => {
    if (req.query.get('account') || req.query.get('ip')) return withSubject(async (s) => ({ status: 200, body: await current().status(s) }))(req);
    const subjects = [];
    for (const r of recent()) {
      const now = await current().status(parseName(r.subject));
      subjects.push({ ...r, responseNow: now.response, scoreNow: now.assessment.score, legitimate: now.legitimate });
    }
    return { status: 200, body: { enabled: current().enabled, subjects } };
  });
  admin.route('POST', '/api/containment/release', withSubject(async (s) => {
    await current().release(s);
    return { status: 200, body: { ok: true, ...(await current().status(s)) } };
  }));
  admin.route('POST', '/api/containment/legitimate', (req) =>
    withSubject(async (s) => {
      const f = req.query.get('for');
      const ms = f ? parseDuration(f) : undefined;
      if (f && ms === undefined) return { status: 400, body: { error: `not a duration: "${f}"` } };
      await current().markLegitimate(s, ms);
      return { status: 200, body: { ok: true, ...(await current().status(s)) } };
    })(req),
  );
}
