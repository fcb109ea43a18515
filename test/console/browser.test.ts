/**
 * The abuse desk's console in a real headless browser (Debian's chromium,
 * driven by playwright-core) against a running gateway: real SMTP into a
 * real policy hold, the console over the admin listener, release to the test
 * MX. As the attacker: a read-only session that tries to act, a form posted
 * without its CSRF token, a held message whose headers carry <script> and a
 * javascript: link, a password guesser at the login form.
 *
 * Screenshots of each page go to var/screenshots/console/ (gitignored), or to
 * the directory in CONSOLE_SHOTS: `npm run docs:screenshots` writes the ones
 * the docs show (docs/console/*.png). A test run leaves the tree as it was.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import type { TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, message, RawSmtp } from '../helpers/smtp-client';
import { startDestination, type TestMx } from '../helpers/test-mx';
import { launchChromium, loginWith, type Browser } from './chromium';

const OPERATOR = 'test-admin-token';
const SHOTS = path.resolve(process.env.CONSOLE_SHOTS ?? path.resolve(__dirname, '../../../var/screenshots/console'));
const QUOTAS = `
plans:
  residential: { messagesPerHour: 100, recipientsPerHour: 100 }
  business: { recipientsPerHour: 1, onExceed: hold }
defaultPlan: residential
classPlans: { residential-dynamic: residential, business: business }
`;
const HOSTILE_SUBJECT = '<script>alert("subject")</script>';
const HOSTILE_LINK = '<a href="javascript:alert(\'link\')">click</a>';

describe('the console in a real browser', () => {
  let dns: TestDns;
  let mx: TestMx;
  let gw: TestGateway;
  let ctx: BrowserContext;
  let page: Page;
  let browser: Browser;
  let base: string;
  let readToken: string;
  let plainId: string;
  let hostileId: string;
  let statementId: string;
  const dialogs: string[] = [];

  /** A business line (127.0.0.17) over its recipients-per-hour quota: held by quota.recipients. */
  async function submit(subject: string, extraHeaders: string[] = [], body = 'Hello.', from = 'orders@bakery.test', rcpts = ['c1@dest.test', 'c2@dest.test']): Promise<string> {
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.17' });
    await c.reply();
    await c.cmd('EHLO server.bakery.test');
    await c.cmd(`MAIL FROM:<${from}>`);
    for (const r of rcpts) assert.match((await c.cmd(`RCPT TO:<${r}>`)).text, /^250 /);
    const r = await c.data(message({ from, to: 'c1@dest.test', subject, headers: extraHeaders, body }));
    await c.quit();
    assert.match(r.text, /^250 2\.0\.0 Ok: queued as /);
    return /queued as (\S+)/.exec(r.text)![1]!;
  }

  const login = (token: string) => loginWith(browser, base, token);

  /**
   * A picture of the page, after checking it fits a laptop screen: no sideways
   * scrolling at 1280 or at 1024 pixels wide (long headers and addresses wrap).
   */
  const shot = async (name: string) => {
    for (const width of [1024, 1280]) {
      await page.setViewportSize({ width, height: 800 });
      const [scroll, client] = (await page.evaluate('[document.documentElement.scrollWidth, document.documentElement.clientWidth]')) as [number, number];
      assert.ok(scroll <= client, `${name} at ${width} px: ${scroll} px wide, scrolls sideways`);
    }
    await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  };

  before(async () => {
    ({ dns, mx } = await startDestination());
    gw = await startGateway({
      netblocks: [
        { cidr: '127.0.0.0/28', class: 'residential-dynamic' },
        { cidr: '127.0.0.16/29', class: 'business' },
      ],
      policyFiles: { 'quotas.yaml': QUOTAS },
      config: {
        admin: { address: '127.0.0.1', port: 0, token: OPERATOR, readTokenFile: 'read.token' },
        relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: mx.port, backoff: ['1s'], poolIdle: '200ms' },
      },
    });
    readToken = (await fsp.readFile(path.join(gw.dir, 'read.token'), 'utf8')).trim();
    base = `http://127.0.0.1:${gw.app!.admin.port}`;
    plainId = await submit('Invoice 2291 for the bakery');
    hostileId = await submit(HOSTILE_SUBJECT, [`X-Note: ${HOSTILE_LINK}`], `Click ${HOSTILE_LINK}\r\n<img src=x onerror="alert('img')">`);
    await fsp.mkdir(SHOTS, { recursive: true });
    browser = await launchChromium();
    ({ ctx, page } = browser);
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
  });
  after(async () => {
    await browser?.close();
    await gw?.stop();
    await mx?.close();
    await dns?.close();
  });

  it('logs in with the operator token into an HttpOnly, SameSite=Strict session under a strict CSP', async () => {
    await page.goto(`${base}/console/login`);
    await shot('login');
    await login(OPERATOR);
    const [cookie] = await ctx.cookies(`${base}/console/held`);
    assert.equal(cookie?.name, 'smarthost_console');
    assert.equal(cookie?.httpOnly, true);
    assert.equal(cookie?.sameSite, 'Strict');
    assert.notEqual(cookie?.value, OPERATOR);
    const res = await page.request.get(`${base}/console/held`);
    assert.match(res.headers()['content-security-policy'] ?? '', /default-src 'self'; script-src 'none'/);
  });

  it('lists the messages held by the quota rule, filters them, and shows one with its verdict trail', async () => {
    await page.goto(`${base}/console/held`);
    const rows = page.locator('tbody tr');
    assert.equal(await rows.count(), 2);
    assert.match(await page.textContent('tbody') ?? '', /quota\.recipients:recipientsPerHour/);
    await shot('held');
    await page.fill('input[name=sender]', 'nobody-like-this');
    await page.click('form.filter button');
    assert.match(await page.textContent('main') ?? '', /No held messages match this filter/);
    await page.goto(`${base}/console/held`);
    await page.click(`a:text("${plainId}")`);
    assert.match(page.url(), new RegExp(`/console/held/${plainId}$`));
    const main = (await page.textContent('main')) ?? '';
    assert.match(main, /quota\.recipients:recipientsPerHour/);
    assert.match(main, /Invoice 2291 for the bakery/);
    assert.match(main, /c1@dest\.test, c2@dest\.test/);
    // The hold's values as they were when it happened: the hour's count had reached the limit of 1.
    const trail = (await page.textContent('tr.fired')) ?? '';
    assert.match(trail, /quota\.recipients:recipientsPerHour/);
    assert.match(trail, /recipientsPerHour\s*1 in the last hour of 1/);
    assert.match(trail, /plan\s*business/);
    await shot('message');
  });

  it('renders a message with <script> headers and a javascript: link inert, as text', async () => {
    await page.goto(`${base}/console/held/${hostileId}`);
    const headers = (await page.textContent('pre.headers')) ?? '';
    assert.ok(headers.includes(HOSTILE_SUBJECT), 'the script tag is shown as text');
    assert.ok(headers.includes(HOSTILE_LINK), 'the link is shown as text');
    assert.ok(((await page.textContent('pre.body')) ?? '').includes(`onerror="alert('img')"`));
    assert.equal(await page.locator('script').count(), 0);
    assert.equal(await page.locator('a[href^="javascript:"], img').count(), 0);
    await page.goto(`${base}/console/held`); // the list shows the subject too
    assert.ok(((await page.textContent('tbody')) ?? '').includes(HOSTILE_SUBJECT));
    assert.deepEqual(dialogs, [], 'no script ran');
  });

  it('a crafted link cannot put words in the console: done= is not shown; an unknown message is a clear 404', async () => {
    await page.goto(`${base}/console/held?done=${encodeURIComponent('all mail released, log in again at evil.test')}`);
    assert.equal(await page.locator('.flash').count(), 0);
    assert.doesNotMatch((await page.textContent('main')) ?? '', /evil\.test/);
    const res = await page.goto(`${base}/console/held/0MXAAAAAAAAAABCDEF01`);
    assert.equal(res?.status(), 404);
    assert.match((await page.textContent('.error')) ?? '', /No such held message/);
  });

  it('refuses an action form posted without its CSRF token (403), and nothing happens', async () => {
    for (const form of [{ reason: 'no token' }, { reason: 'wrong token', _csrf: 'x'.repeat(43) }] as Array<Record<string, string>>) {
      const res = await page.request.post(`${base}/console/held/${plainId}/release`, { form, maxRedirects: 0 });
      assert.equal(res.status(), 403);
    }
    assert.equal((await gw.app!.qmgr.entry(plainId))?.state, 'hold');
  });

  it('a read-only session sees no buttons, and the server refuses its actions (403)', async () => {
    await login(readToken);
    assert.equal(await page.locator('form.actions').count(), 0, 'no bulk form');
    await page.goto(`${base}/console/held/${plainId}`);
    assert.equal(await page.locator('form.actions, button:text("Release")').count(), 0, 'no action buttons');
    const csrf = await page.getAttribute('input[name=_csrf]', 'value'); // the logout form's: a valid token of this session
    for (const [url, form] of [
      [`/console/held/${plainId}/release`, { reason: 'read-only' }],
      ['/console/held-bulk', { op: 'delete' }],
      ['/console/policy/reload', {}],
      ['/console/sender', { account: 'alice@isp.test', op: 'suspend', reason: 'read-only' }],
    ] as const) {
      const res = await page.request.post(`${base}${url}`, { form: { ...form, _csrf: csrf! }, maxRedirects: 0 });
      assert.equal(res.status(), 403, url);
    }
    assert.equal((await gw.app!.qmgr.entry(plainId))?.state, 'hold');
    assert.equal(gw.app!.accounts.get('alice@isp.test')?.suspended, false);
    // It may look, on the record: opening a sender's recipient addresses is audited under its name.
    assert.equal((await page.request.post(`${base}/console/sender/recipients`, { form: { ip: '127.0.0.17', reason: 'ticket 4715: second look', _csrf: csrf! }, maxRedirects: 0 })).status(), 200);
    const looked = (await fsp.readFile(path.join(gw.dir, 'spool', 'admin-audit.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(looked.some((l) => l.action === 'open-recipients' && l.token === 'read' && l.reason === 'ticket 4715: second look'));
    // It may look: policy explain changes nothing.
    await page.goto(`${base}/console/policy`);
    await page.fill('input[name=listener]', 'intercept');
    await page.fill('input[name=ip]', '127.0.0.17');
    await page.click('button:text("Explain")');
    assert.match((await page.textContent('pre.explain')) ?? '', /"policyVersion": 1/);
  });

  it('the operator releases a held message: it is delivered at the test MX, audited and counted', async () => {
    await login(OPERATOR);
    await page.goto(`${base}/console/held/${plainId}`);
    await page.fill('input[name=reason]', 'ticket 4711: invoices are expected');
    await Promise.all([page.waitForURL(/\/console\/held\?done=/), page.click('button:text("Release")')]);
    assert.match((await page.textContent('.flash')) ?? '', new RegExp(`release: ${plainId}`));
    const [got] = await mx.waitFor(1, 10_000);
    assert.match(got!.data.toString('utf8'), /Subject: Invoice 2291 for the bakery/);
    await page.goto(`${base}/console/audit`);
    const audit = (await page.textContent('tbody')) ?? '';
    assert.match(audit, new RegExp(`operator\\s*release\\s*${plainId}\\s*ticket 4711`));
    await shot('audit');
    const lines = (await fsp.readFile(path.join(gw.dir, 'spool', 'admin-audit.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(lines.some((l) => l.token === 'operator' && l.action === 'release' && l.subject === plainId && l.reason === 'ticket 4711: invoices are expected' && l.ok));
    assert.ok(lines.some((l) => l.token === 'read' && !l.ok), 'the read-only attempts are on record');
    const metrics = await (await page.request.get(`${base}/metrics`)).text();
    assert.match(metrics, /smarthost_admin_actions_total\{action="release",token="operator"\} 1/);
  });

  /** AUTH as alice on the submission listener: the reply. */
  async function aliceAuth(): Promise<string> {
    const c = await RawSmtp.connect(gw.port('submission'), { localAddress: '127.0.0.5' });
    await c.reply();
    await c.cmd('EHLO pc');
    await c.starttls();
    await c.cmd('EHLO pc');
    const r = (await c.cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`)).text;
    await c.quit();
    return r;
  }

  it('senders: the held line with its recipient domains; suspend an account with a reason: its next AUTH is refused; lift it', async () => {
    await page.goto(`${base}/console/senders`);
    await shot('senders');
    await page.click('a:text("ip:127.0.0.17")');
    // Its accepted mail (two messages to c1 and c2): the domain and its recipients, not the addresses.
    assert.match((await page.textContent('table.domains')) ?? '', /dest\.test\s*4/);
    assert.doesNotMatch((await page.textContent('main')) ?? '', /c[12]@dest\.test/, 'domains, not addresses');
    // Opening the addresses is explicit and audited, with a reason.
    await page.fill('form.reveal input[name=reason]', 'ticket 4713: who got the invoices');
    await page.click('button:text("Open the recipient addresses")');
    assert.match((await page.textContent('table.addresses')) ?? '', /c1@dest\.test[\s\S]*c2@dest\.test|c2@dest\.test[\s\S]*c1@dest\.test/);
    assert.doesNotMatch(page.url(), /c1@|reason=/, 'a POST: the addresses and the reason are in no URL');
    const opened = (await fsp.readFile(path.join(gw.dir, 'spool', 'admin-audit.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(opened.some((l) => l.action === 'open-recipients' && l.subject === 'ip:127.0.0.17' && l.token === 'operator' && l.reason === 'ticket 4713: who got the invoices'));
    await page.goto(`${base}/console/sender?ip=127.0.0.17`);
    assert.equal(await page.locator('table.addresses').count(), 0, 'shown once, for that request only');
    assert.match(await aliceAuth(), /^235 /);
    await page.goto(`${base}/console/sender?account=alice%40isp.test`);
    await page.fill('form.actions input[name=reason]', 'ticket 4712: phishing complaint');
    await Promise.all([page.waitForURL(/done=suspend/), page.click('button:text("Suspend")')]);
    assert.equal(gw.app!.accounts.get('alice@isp.test')?.suspended, true);
    assert.match(await aliceAuth(), /^535 5\.7\.8 /);
    await shot('sender');
    await Promise.all([page.waitForURL(/done=unsuspend/), page.click('button:text("Lift hold")')]);
    assert.equal(gw.app!.accounts.get('alice@isp.test')?.suspended, false);
    assert.match(await aliceAuth(), /^235 /);
  });

  it('policy: shows the version, explains a hypothetical message, reloads', async () => {
    await page.goto(`${base}/console/policy`);
    assert.match((await page.textContent('main')) ?? '', /Version in force\s*1/);
    await page.fill('input[name=listener]', 'intercept');
    await page.fill('input[name=ip]', '127.0.0.17');
    await page.fill('input[name=from]', 'orders@bakery.test');
    await page.fill('input[name=rcpt]', 'c3@dest.test');
    await page.click('button:text("Explain")');
    assert.match((await page.textContent('pre.explain')) ?? '', /quota\.recipients/);
    await shot('policy');
    await Promise.all([page.waitForURL(/done=reloaded/), page.click('button:text("Reload")')]);
    assert.match((await page.textContent('main')) ?? '', /Version in force\s*2/);
  });

  it('release-and-mark-legitimate, then a bulk delete of every message the filter matches, and of no other', async () => {
    const news1 = await submit('Newsletter 1');
    await submit('Newsletter 2');
    statementId = await submit('Statement for December', [], 'Hello.', 'billing@bakery.test');
    await page.goto(`${base}/console/held/${news1}`);
    await Promise.all([page.waitForURL(/\/console\/held\?done=/), page.click('button:text("Release and mark sender legitimate")')]);
    const got = await mx.waitFor(2, 10_000);
    assert.match(got[1]!.data.toString('utf8'), /Subject: Newsletter 1/);
    await page.goto(`${base}/console/sender?ip=127.0.0.17`);
    assert.match((await page.textContent('main')) ?? '', /Marked legitimate\s*yes/);
    await page.goto(`${base}/console/held?reason=quota.recipients&sender=orders%40`);
    assert.equal(await page.locator('tbody tr').count(), 2, 'the hostile message and Newsletter 2, not the statement');
    await Promise.all([page.waitForURL(/\/console\/held\?done=/), page.click('button:text("Delete all")')]);
    assert.match((await page.textContent('.flash')) ?? '', /delete: 2 of 2 messages/);
    assert.deepEqual((await gw.app!.qmgr.list()).filter((e) => e.state === 'hold').map((e) => e.id), [statementId], 'only the filtered set went');
    const audit = (await fsp.readFile(path.join(gw.dir, 'spool', 'admin-audit.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(audit.filter((l) => l.action === 'delete' && l.ok).length, 2);
    assert.ok(audit.some((l) => l.action === 'release-legitimate' && l.subject === news1 && l.ok));
  });

  it('works from the keyboard alone: a skip link first, filter, open and release with Tab and Enter; then the empty state', async () => {
    await page.goto(`${base}/console/held`);
    await page.keyboard.press('Tab');
    assert.equal(await page.locator(':focus').textContent(), 'Skip to content');
    await page.keyboard.press('Enter');
    /** Tab (at most 40 times) until the focused element matches `selector`. */
    const tabTo = async (selector: string) => {
      for (let i = 0; i < 40; i++) {
        await page.keyboard.press('Tab');
        if (await page.locator(`${selector}:focus`).count()) return;
      }
      assert.fail(`Tab never reached ${selector}`);
    };
    await tabTo('input[name=sender]');
    await page.keyboard.type('billing@');
    await Promise.all([page.waitForURL(/sender=billing%40/), page.keyboard.press('Enter')]);
    assert.equal(await page.locator('tbody tr').count(), 1);
    await tabTo(`a[href$="/held/${statementId}"]`);
    await Promise.all([page.waitForURL(new RegExp(`/held/${statementId}$`)), page.keyboard.press('Enter')]);
    await tabTo('form.actions input[name=reason]');
    await page.keyboard.type('ticket 4714: statements are expected');
    await page.keyboard.press('Tab');
    assert.equal(await page.locator(':focus').textContent(), 'Release', 'the next stop after the reason is Release');
    await Promise.all([page.waitForURL(/\/console\/held\?done=/), page.keyboard.press('Enter')]);
    assert.match((await page.textContent('.flash')) ?? '', new RegExp(`release: ${statementId}`));
    assert.match((await mx.waitFor(3, 10_000))[2]!.data.toString('utf8'), /Subject: Statement for December/);
    // Nothing held any more: the empty state says so, and offers no bulk action.
    assert.match((await page.textContent('main')) ?? '', /No held messages\./);
    assert.equal(await page.locator('form.actions').count(), 0);
  });

  it('clears a sender\'s quota counts: its next message, held before the clear, is delivered after it', async () => {
    const one = (subject: string) => submit(subject, [], 'Hello.', 'orders@bakery.test', ['c9@dest.test']);
    const before = await one('Before the clear');
    assert.equal((await gw.app!.qmgr.entry(before))?.state, 'hold', 'over its hourly quota of 1');
    await page.goto(`${base}/console/sender?ip=127.0.0.17`);
    await page.fill('form.actions input[name=reason]', 'ticket 4716: quota raised by sales');
    await Promise.all([page.waitForURL(/done=clear-quotas/), page.click('button:text("Clear quota counts")')]);
    const after = await one('After the clear');
    assert.notEqual((await gw.app!.qmgr.entry(after))?.state, 'hold');
    assert.match((await mx.waitFor(4, 10_000))[3]!.data.toString('utf8'), /Subject: After the clear/);
    const audit = (await fsp.readFile(path.join(gw.dir, 'spool', 'admin-audit.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(audit.some((l) => l.action === 'clear-quotas' && l.subject === 'ip:127.0.0.17' && l.reason === 'ticket 4716: quota raised by sales'));
  });

  it('refuses a login posted from elsewhere (login CSRF): no form value, or one without its cookie', async () => {
    await ctx.clearCookies();
    // A page on another site can post a token of its choosing, but cannot read our form or send our SameSite cookie.
    assert.equal((await page.request.post(`${base}/console/login`, { form: { token: OPERATOR }, maxRedirects: 0 })).status(), 403);
    assert.equal((await page.request.post(`${base}/console/login`, { form: { token: OPERATOR, _csrf: 'x'.repeat(43) }, maxRedirects: 0 })).status(), 403);
    await page.goto(`${base}/console/login`);
    const csrf = await page.inputValue('input[name=_csrf]');
    await ctx.clearCookies();
    assert.equal((await page.request.post(`${base}/console/login`, { form: { token: OPERATOR, _csrf: csrf }, maxRedirects: 0 })).status(), 403);
  });

  it('limits failed logins per address: the right token is refused after five wrong ones (429)', async () => {
    const attempt = async (token: string) => {
      await page.goto(`${base}/console/login`);
      const _csrf = await page.inputValue('input[name=_csrf]');
      return (await page.request.post(`${base}/console/login`, { form: { token, _csrf }, maxRedirects: 0 })).status();
    };
    for (let i = 0; i < 5; i++) assert.equal(await attempt(`guess-${i}`), 401);
    assert.equal(await attempt(OPERATOR), 429);
  });
});
