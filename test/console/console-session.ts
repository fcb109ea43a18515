/**
 * A console session over plain HTTP (fetch), for the tests that need many
 * gateways rather than a browser: logs in through the form (login CSRF value
 * and its cookie, then the session cookie) and reads pages and posts forms
 * with the session's CSRF token.
 */
export interface ConsoleSession {
  get(path: string): Promise<{ status: number; html: string }>;
  post(path: string, form: Record<string, string>): Promise<{ status: number; html: string }>;
}

const cookieOf = (r: Response, name: string): string | undefined =>
  r.headers
    .getSetCookie()
    .map((c) => c.split(';')[0]!)
    .find((c) => c.startsWith(`${name}=`));

const hidden = (html: string, name: string): string | undefined => new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1];

export async function consoleLogin(base: string, token: string): Promise<ConsoleSession> {
  const form = await fetch(`${base}/console/login`, { redirect: 'manual' });
  const loginCookie = cookieOf(form, 'smarthost_console_login');
  const body = new URLSearchParams({ token, _csrf: hidden(await form.text(), '_csrf') ?? '' });
  const r = await fetch(`${base}/console/login`, { method: 'POST', redirect: 'manual', headers: { cookie: loginCookie ?? '', 'content-type': 'application/x-www-form-urlencoded' }, body });
  const session = cookieOf(r, 'smarthost_console');
  if (r.status !== 303 || !session) throw new Error(`console login: HTTP ${r.status}`);
  let csrf = '';
  const get = async (path: string) => {
    const res = await fetch(`${base}${path}`, { redirect: 'manual', headers: { cookie: session } });
    const html = await res.text();
    csrf = hidden(html, '_csrf') ?? csrf;
    return { status: res.status, html };
  };
  await get('/console/held');
  return {
    get,
    async post(path, fields) {
      const res = await fetch(`${base}${path}`, { method: 'POST', redirect: 'manual', headers: { cookie: session, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ ...fields, _csrf: csrf }) });
      return { status: res.status, html: await res.text() };
    },
  };
}

/** The text of the page section under the h2 (or h3) that starts with `heading`, tags removed. */
export function section(html: string, heading: string): string {
  const start = html.indexOf(`>${heading}`);
  if (start < 0) return '';
  const end = html.slice(start + 1).search(/<h[23][ >]/);
  return html
    .slice(start, end < 0 ? undefined : start + 1 + end)
    .replace(/<[^>]+>/g, ' ')
    .replace(/&#39;/g, "'")
    .replace(/\s+/g, ' ');
}
