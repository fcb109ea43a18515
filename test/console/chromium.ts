/**
 * Debian's chromium driven by playwright-core for the console's browser
 * tests: a private profile, headless, a laptop-sized window; and the login
 * through the form (the token typed, never in a URL).
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

export interface Browser {
  readonly ctx: BrowserContext;
  readonly page: Page;
  close(): Promise<void>;
}

export async function launchChromium(): Promise<Browser> {
  const profile = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  return {
    ctx,
    page,
    async close() {
      await ctx.close();
      await fsp.rm(profile, { recursive: true, force: true });
    },
  };
}

/** Log in at `base` with `token` through the login form; lands on the held-mail page. */
export async function loginWith(b: Browser, base: string, token: string): Promise<void> {
  await b.ctx.clearCookies();
  await b.page.goto(`${base}/console`);
  assert.match(b.page.url(), /\/console\/login$/);
  await b.page.fill('input[name=token]', token);
  await Promise.all([b.page.waitForURL(/\/console\/held/), b.page.click('button[type=submit]')]);
  assert.ok(!b.page.url().includes(token), 'the token never appears in a URL');
}
