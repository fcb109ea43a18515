/**
 * The abuse desk's web console, served by the admin listener under /console
 * (docs/console.md): held mail, senders, policy and the audit log.
 *
 * Libraries: find-my-way routes the requests, Eta renders the pages with
 * auto-escaping on (every `<%= %>` is HTML-encoded; user data is never put
 * into markup any other way), `cookie` reads and writes the session cookie.
 *
 * Security, in one place:
 *   - login: a token in a POST form (never a URL) → a random session id in an
 *     HttpOnly, SameSite=Strict cookie (Secure when the listener speaks TLS);
 *     failed logins are limited per client address (429)
 *   - every POST but the login needs the session's CSRF token (403 otherwise)
 *   - what changes anything needs the operator token's session: the read-only
 *     one never sees the buttons, and the server refuses it (403) all the same
 *   - a strict Content-Security-Policy: no script at all, styles from 'self'
 *   - every action (and every refused attempt) goes to the audit log
 */
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import type http from 'node:http';
import { randomBytes } from 'node:crypto';
import { parse as parseCookie, serialize as serializeCookie } from 'cookie';
import { Eta } from 'eta';
import FindMyWay from 'find-my-way';
import type { AccountStore } from '../accounts/store';
import type { AdminServer, Access, ApiResponse } from '../admin/server';
import type { Containment } from '../containment/containment';
import type { CSubject } from '../containment/signals';
import { FleetUnavailableError, type Fleet, type FleetReload } from '../fleet/fleet';
import type { Logger } from '../log';
import type { PolicyRuntime } from '../policy/runtime';
import type { QueueManager } from '../spool/qmgr';
import { isQueueId } from '../spool/queue-id';
import type { Spool } from '../spool/store';
import type { AuditLog } from '../admin/audit';
import { isStateUnavailable, type StateStatus } from '../state/resilient';
import type { SenderActivity } from './activity';
import { subjectLabel } from '../state/keys';
import { HeldIndex, heldMessage, type HeldFilter } from './held';
import { csrfMatches, LoginLimiter, sameSecret, Sessions, type Session } from './sessions';

export interface ConsoleDeps {
  readonly admin: AdminServer;
  readonly spool: Spool;
  readonly qmgr: QueueManager;
  readonly accounts: AccountStore;
  /** Suspensions go fleet-wide where the state is shared; quota clears act on the shared counts. */
  readonly fleet: Fleet;
  readonly containment: () => Containment;
  /** What senders' accepted mail went to (shared state: fleet-wide on Redis, across a primary's workers). */
  readonly activity: SenderActivity;
  readonly policy: PolicyRuntime;
  readonly explain: (q: URLSearchParams) => Promise<ApiResponse>;
  readonly audit: AuditLog;
  /** The state store's health: a page built from it says when it is this process's own counts (Redis away). */
  readonly stateStatus: () => StateStatus;
  readonly logger: Logger;
  readonly clock?: () => number;
}

const PREFIX = '/console';
const COOKIE = 'smarthost_console';
/** The login form's CSRF value (double submit), set with the form, cleared at login. */
const LOGIN_COOKIE = 'smarthost_console_login';
const SESSION_TTL_MS = 30 * 60_000;
const LOGIN_MAX_FAILURES = 5;
const LOGIN_WINDOW_MS = 10 * 60_000;
const FORM_MAX_BYTES = 64 * 1024;
/** A bulk action acts on at most this many messages per submission. */
const BULK_MAX = 1000;
// Written for the source tree and the compiled one (dist/src/console → src/console).
const ASSETS = path.resolve(__dirname, '../../../src/console');

const CSP = "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  url: URL;
  params: Record<string, string | undefined>;
  session?: Session;
  form: URLSearchParams;
}
type Page = (c: Ctx) => Promise<void>;

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export function mountConsole(deps: ConsoleDeps): void {
  const clock = deps.clock ?? Date.now;
  const eta = new Eta({ views: path.join(ASSETS, 'views'), autoEscape: true, cache: true });
  const sessions = new Sessions(SESSION_TTL_MS, clock);
  const limiter = new LoginLimiter(LOGIN_MAX_FAILURES, LOGIN_WINDOW_MS, clock);
  const secure = deps.admin.secure;
  const router = FindMyWay<FindMyWay.HTTPVersion.V1>();
  const held = new HeldIndex(deps.spool);

  const render = (c: Ctx, view: string, data: Record<string, unknown>, status = 200) => {
    const flash = c.session?.flash;
    if (c.session) c.session.flash = undefined;
    const html = eta.render(view, { ...data, session: c.session, canAct: c.session?.role === 'operate', prefix: PREFIX, flash });
    send(c.res, status, html, 'text/html; charset=utf-8');
  };
  const redirect = (c: Ctx, to: string) => {
    c.res.writeHead(303, { location: to, ...securityHeaders() });
    c.res.end();
  };
  // What an action did is kept in the session for the next page, never taken from
  // the URL (a crafted link cannot put words in the console's mouth); `done=` in
  // the URL only marks the page as the one after an action.
  const done = (c: Ctx, to: string, what: string) => {
    c.session!.flash = what;
    redirect(c, to);
  };

  // Only a logged-in session gets past this; POSTs also need the CSRF token.
  const authed = (page: Page): Page => async (c) => {
    if (!c.session) return redirect(c, `${PREFIX}/login`);
    if (c.req.method === 'POST' && !csrfMatches(c.session, c.form.get('_csrf'))) throw new HttpError(403, 'missing or wrong CSRF token: reload the page and try again');
    await page(c);
  };
  // An action: the operator's session only; every attempt is audited.
  const acts = (action: string, subjectOf: (c: Ctx) => string, page: Page): Page => authed(async (c) => {
    if (c.session!.role !== 'operate') {
      await deps.audit.record({ role: c.session!.role, action, subject: subjectOf(c), ok: false, detail: 'refused: read-only token' });
      throw new HttpError(403, 'this session may only read: log in with the operator token to act');
    }
    await page(c);
  });
  const get = (p: string, page: Page) => router.on('GET', `${PREFIX}${p}`, page as never);
  const post = (p: string, page: Page) => router.on('POST', `${PREFIX}${p}`, page as never);

  // ---- login ----------------------------------------------------------------
  get('', async (c) => redirect(c, c.session ? `${PREFIX}/held` : `${PREFIX}/login`));
  // Login CSRF (double submit): the form carries a random value that is also in a
  // SameSite=Strict cookie, so a page elsewhere cannot post a token of its choosing and
  // log the operator's browser into the attacker's session.
  const loginForm = (c: Ctx, data: Record<string, unknown>, status = 200) => {
    const loginCsrf = randomBytes(32).toString('base64url');
    c.res.setHeader('set-cookie', serializeCookie(LOGIN_COOKIE, loginCsrf, { httpOnly: true, sameSite: 'strict', secure, path: `${PREFIX}/login`, maxAge: LOGIN_WINDOW_MS / 1000 }));
    render(c, 'login', { ...data, loginCsrf }, status);
  };
  get('/login', async (c) => loginForm(c, {}));
  post('/login', async (c) => {
    if (!sameSecret(parseCookie(c.req.headers.cookie ?? '')[LOGIN_COOKIE], c.form.get('_csrf'))) {
      return loginForm(c, { error: 'The login form expired or came from elsewhere: log in again.' }, 403);
    }
    const ip = c.req.socket.remoteAddress ?? '';
    if (limiter.blocked(ip)) return loginForm(c, { error: 'Too many failed logins from this address: wait ten minutes.' }, 429);
    const role = deps.admin.tokenAccess(c.form.get('token') ?? '');
    if (!role) {
      limiter.failed(ip);
      return loginForm(c, { error: 'That token is not an admin token.' }, 401);
    }
    limiter.succeeded(ip);
    const s = sessions.create(role);
    c.res.setHeader('set-cookie', [
      serializeCookie(COOKIE, s.id, { httpOnly: true, sameSite: 'strict', secure, path: PREFIX, maxAge: SESSION_TTL_MS / 1000 }),
      serializeCookie(LOGIN_COOKIE, '', { httpOnly: true, sameSite: 'strict', secure, path: `${PREFIX}/login`, maxAge: 0 }),
    ]);
    redirect(c, `${PREFIX}/held`);
  });
  post('/logout', authed(async (c) => {
    sessions.end(c.session!.id);
    c.res.setHeader('set-cookie', serializeCookie(COOKIE, '', { httpOnly: true, sameSite: 'strict', secure, path: PREFIX, maxAge: 0 }));
    redirect(c, `${PREFIX}/login`);
  }));
  get('/static/console.css', async (c) => send(c.res, 200, await fsp.readFile(path.join(ASSETS, 'static', 'console.css')), 'text/css; charset=utf-8'));

  // ---- held mail --------------------------------------------------------------
  const filterOf = (q: URLSearchParams): HeldFilter => ({
    reason: q.get('reason') || undefined,
    sender: q.get('sender') || undefined,
    minAgeMinutes: Number(q.get('age')) > 0 ? Number(q.get('age')) : undefined,
  });
  get('/held', authed(async (c) => {
    const filter = filterOf(c.url.searchParams);
    const page = await held.page(filter, Number(c.url.searchParams.get('page')) || 1, clock());
    const query = (p: number) => {
      const q = new URLSearchParams();
      for (const k of ['reason', 'sender', 'age']) if (c.url.searchParams.get(k)) q.set(k, c.url.searchParams.get(k)!);
      q.set('page', String(p));
      return `?${q}`;
    };
    render(c, 'held', { page, filter, prev: page.page > 1 ? query(page.page - 1) : undefined, next: page.page < page.pages ? query(page.page + 1) : undefined });
  }));
  get('/held/:id', authed(async (c) => {
    const id = c.params.id!;
    const m = isQueueId(id) ? await heldMessage(deps.spool, id) : undefined;
    if (!m) throw new HttpError(404, 'No such held message (released or deleted meanwhile?)');
    render(c, 'message', { m, now: clock() });
  }));
  const heldAction = async (role: Access, op: string, id: string, reason: string): Promise<boolean> => {
    let ok = false;
    if (op === 'delete') ok = await deps.qmgr.delete(id);
    else {
      const env = op === 'release-legitimate' ? (await deps.spool.read(id, 'hold').catch(() => undefined))?.envelope : undefined;
      ok = await deps.qmgr.release(id);
      if (ok && env) await deps.containment().markLegitimate(senderOf(env.client.user, env.client.ip));
    }
    await deps.audit.record({ role, action: op, subject: id, reason, ok });
    return ok;
  };
  post('/held/:id/:op', acts('held', (c) => c.params.id ?? '', async (c) => {
    const { id, op } = c.params as { id: string; op: string };
    if (!['release', 'delete', 'release-legitimate'].includes(op)) throw new HttpError(404, `no such action: ${op}`);
    if (!isQueueId(id)) throw new HttpError(400, 'not a queue id');
    const ok = await heldAction(c.session!.role, op, id, c.form.get('reason') ?? '');
    if (!ok) throw new HttpError(404, 'No such held message (released or deleted meanwhile?)');
    done(c, `${PREFIX}/held?done=${op}`, `${op}: ${id}`);
  }));
  post('/held-bulk', acts('bulk', () => 'held (filtered)', async (c) => {
    const op = c.form.get('op') ?? '';
    if (!['release', 'delete'].includes(op)) throw new HttpError(400, `no such bulk action: ${op}`);
    const matching = (await held.matching(filterOf(c.form), clock())).slice(0, BULK_MAX);
    let n = 0;
    for (const env of matching) if (await heldAction(c.session!.role, op, env.id, c.form.get('reason') ?? `bulk ${op}`)) n++;
    done(c, `${PREFIX}/held?done=bulk-${op}`, `${op}: ${n} of ${matching.length} messages`);
  }));

  // ---- senders ----------------------------------------------------------------
  const subjectOf = (q: URLSearchParams): CSubject => {
    const account = q.get('account');
    const ip = q.get('ip');
    if (account && !ip) return { kind: 'a', id: account.toLowerCase() };
    if (ip && !account) return { kind: 'ip', id: ip };
    throw new HttpError(400, 'give an account or an address');
  };
  const nameOf = subjectLabel;
  // Read after the page's state reads: they are what notices an outage.
  const degradedNote = (): string | undefined => {
    const st = deps.stateStatus();
    if (!st.degraded) return undefined;
    return `The shared state store (${st.backend}) is unavailable since ${new Date(st.since ?? Date.now()).toISOString()}${st.lastError ? ` (${st.lastError})` : ''}: the scores, volumes and domains below are only what this process counted meanwhile.`;
  };
  const TOP = 50;
  get('/senders', authed(async (c) => {
    // Fleet-wide (the shared state): the top scores re-assessed now, the top volumes counted now.
    const scored = await Promise.all((await deps.containment().topScored(TOP)).map(async ({ subject }) => ({ subject, status: await deps.containment().status(subject) })));
    const byScore = scored
      .filter((x) => x.status.assessment.score > 0 || x.status.response !== 'none')
      .sort((a, b) => b.status.assessment.score - a.status.assessment.score)
      .map(({ subject, status }) => ({ subject: nameOf(subject), score: status.assessment.score, response: status.response, fired: status.assessment.fired, ...linkOf(subject) }));
    const byVolume = (await deps.activity.topByVolume(TOP)).map(({ subject, recipients }) => ({ subject: nameOf(subject), recipients, ...linkOf(subject) }));
    const heldBy = new Map<string, CSubject>();
    const heldCount = new Map<string, number>();
    for (const e of await held.all()) {
      const s = senderOf(e.client.user, e.client.ip);
      heldBy.set(nameOf(s), s);
      heldCount.set(nameOf(s), (heldCount.get(nameOf(s)) ?? 0) + 1);
    }
    const byHeld = [...heldCount].sort((a, b) => b[1] - a[1]).slice(0, TOP).map(([subject, n]) => ({ subject, held: n, ...linkOf(heldBy.get(subject)!) }));
    const suspended = new Set([...deps.accounts.all().filter((a) => a.suspended).map((a) => a.name.toLowerCase()), ...deps.fleet.suspensions().map((x) => x.account)]);
    render(c, 'senders', { byScore, byVolume, byHeld, accounts: [...suspended].sort(), fleetShared: deps.fleet.shared, degraded: degradedNote() });
  }));
  const senderPage = async (c: Ctx, s: CSubject, extra: Record<string, unknown> = {}) => {
    const status = await deps.containment().status(s);
    const account = s.kind === 'a' ? deps.accounts.get(s.id) : undefined;
    const fleetSuspension = s.kind === 'a' ? deps.fleet.suspensions().find((x) => x.account === s.id) : undefined;
    render(c, 'sender', {
      s,
      name: nameOf(s),
      status,
      account,
      suspended: (account?.suspended ?? false) || fleetSuspension !== undefined,
      fleetSuspension,
      fleetShared: deps.fleet.shared,
      // Domains only: the addresses are shown when the operator opens them (audited).
      domains: await deps.activity.domains(s, 20),
      degraded: degradedNote(),
      ...extra,
    });
  };
  get('/sender', authed(async (c) => senderPage(c, subjectOf(c.url.searchParams))));
  // Opening a sender's recipient addresses is a look at subscribers' correspondents: an explicit,
  // audited action with a reason (either token may look; the audit log says who did).
  post('/sender/recipients', authed(async (c) => {
    const s = subjectOf(c.form);
    const reason = c.form.get('reason') ?? '';
    if (!reason.trim()) throw new HttpError(400, 'opening the recipient addresses needs a reason (a ticket number, why)');
    const addresses = await deps.activity.recipients(s, 200);
    await deps.audit.record({ role: c.session!.role, action: 'open-recipients', subject: nameOf(s), reason, ok: true, detail: `${addresses.length} addresses shown` });
    await senderPage(c, s, { addresses: addresses.map((a) => ({ address: a.address, at: new Date(a.at).toISOString() })) });
  }));
  post('/sender', acts('sender', (c) => nameOf(subjectOf(c.form)), async (c) => {
    const s = subjectOf(c.form);
    const op = c.form.get('op') ?? '';
    const reason = c.form.get('reason') ?? '';
    if (op === 'suspend') {
      if (s.kind !== 'a') throw new HttpError(400, 'only an account can be suspended');
      if (!reason.trim()) throw new HttpError(400, 'a suspension needs a reason');
      if (!deps.accounts.get(s.id)) throw new HttpError(404, `no account ${s.id}`);
      if (deps.fleet.shared) await deps.fleet.suspend(s.id, { reason, by: 'console:operator' });
      else await deps.accounts.upsert(s.id, (a) => (a ? { ...a, suspended: true } : a));
    } else if (op === 'unsuspend') {
      await deps.containment().release(s);
      if (s.kind === 'a' && deps.fleet.shared) await deps.fleet.unsuspend(s.id);
    } else if (op === 'legitimate') await deps.containment().markLegitimate(s);
    else if (op === 'clear-quotas') await deps.fleet.clearQuotas(s.kind === 'a' ? { account: s.id } : { ip: s.id });
    else throw new HttpError(400, `no such action: ${op}`);
    await deps.audit.record({ role: 'operate', action: op, subject: nameOf(s), reason, ok: true });
    done(c, `${PREFIX}/sender?${s.kind === 'a' ? 'account' : 'ip'}=${encodeURIComponent(s.id)}&done=${op}`, op);
  }));

  // ---- policy -------------------------------------------------------------------
  const policyPage = (c: Ctx, extra: Record<string, unknown> = {}) =>
    render(c, 'policy', { version: deps.policy.current().version, loadedAt: new Date(deps.policy.loadedAt).toISOString(), files: deps.policy.current().policy.files, form: Object.fromEntries(c.form), ...extra });
  get('/policy', authed(async (c) => policyPage(c)));
  post('/policy/explain', authed(async (c) => {
    const q = new URLSearchParams();
    for (const k of ['listener', 'ip', 'user', 'from']) if (c.form.get(k)) q.set(k, c.form.get(k)!);
    for (const r of (c.form.get('rcpt') ?? '').split(/[\s,]+/).filter(Boolean)) q.append('rcpt', r);
    const out = await deps.explain(q);
    policyPage(c, { explained: JSON.stringify(out.body, null, 2), explainStatus: out.status });
  }));
  // With a shared state every live gateway of the fleet reloads (as POST /api/fleet/reload), else this one.
  post('/policy/reload', acts('reload', () => 'policy', async (c) => {
    let r: FleetReload;
    try {
      r = await deps.fleet.reloadAll();
    } catch (err) {
      if (err instanceof FleetUnavailableError) throw new HttpError(503, `${err.message}: nothing was reloaded`);
      throw err;
    }
    const one = (n: FleetReload['results'][number]) => (n.ok ? `version ${n.version}` : `refused (${n.error ?? 'see the log'})`);
    const what = deps.fleet.shared
      ? [...r.results.map((n) => `${n.node}: ${one(n)}`), ...r.missing.map((n) => `${n}: no answer`)].join('; ')
      : r.results.map(one).join('; ');
    await deps.audit.record({ role: 'operate', action: 'reload', subject: 'policy', reason: c.form.get('reason') ?? '', ok: r.ok, detail: what });
    done(c, `${PREFIX}/policy?done=${r.ok ? 'reloaded' : 'refused'}`, r.ok ? `reloaded: ${what}` : `reload incomplete: ${what}`);
  }));

  // ---- audit --------------------------------------------------------------------
  get('/audit', authed(async (c) => render(c, 'audit', { entries: await deps.audit.newest(200) })));

  deps.admin.mount(PREFIX, async (req, res, url) => {
    const c: Ctx = { req, res, url, params: {}, form: new URLSearchParams() };
    try {
      c.session = sessions.get(parseCookie(req.headers.cookie ?? '')[COOKIE]);
      const found = router.find(req.method as FindMyWay.HTTPMethod, url.pathname);
      if (!found) throw new HttpError(404, 'No such page');
      c.params = found.params;
      if (req.method === 'POST') c.form = await readForm(req);
      await (found.handler as unknown as Page)(c);
    } catch (err) {
      // Redis away with state.failMode closed: the pages built from the shared state cannot be shown (held mail and the audit log can).
      const unavailable = isStateUnavailable(err);
      const status = err instanceof HttpError ? err.status : unavailable ? 503 : 500;
      if (status === 500) deps.logger.error({ evt: 'error', err }, 'console request failed');
      if (res.headersSent) return void res.end();
      const message = unavailable
        ? 'The shared state store is unavailable (state.failMode: closed): senders and scores cannot be read now. Held mail, policy and the audit log still work.'
        : status === 500 ? 'Something went wrong: see the gateway log.' : (err as Error).message;
      render(c, 'error', { status, message }, status);
    }
  });
}

/** The containment subject a held message counts against: its account, else its client address. */
function senderOf(user: string | undefined, ip: string): CSubject {
  return user ? { kind: 'a', id: user.toLowerCase() } : { kind: 'ip', id: ip };
}

/** A subject → the query of its sender page. */
function linkOf(s: CSubject): { query: string } {
  return { query: `?${new URLSearchParams(s.kind === 'a' ? { account: s.id } : { ip: s.id })}` };
}

function securityHeaders(): Record<string, string> {
  return {
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'x-frame-options': 'DENY',
    'cache-control': 'no-store',
  };
}

function send(res: http.ServerResponse, status: number, body: string | Buffer, type: string): void {
  res.writeHead(status, { 'content-type': type, ...securityHeaders() });
  res.end(body);
}

async function readForm(req: http.IncomingMessage): Promise<URLSearchParams> {
  if (!(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) throw new HttpError(415, 'forms only (application/x-www-form-urlencoded)');
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > FORM_MAX_BYTES) throw new HttpError(413, 'form too large');
    chunks.push(c as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}
