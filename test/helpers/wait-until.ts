/** Polls `cond` every `everyMs` (50) until it holds, for at most `ms` (bounded); throws naming what it waited for. */
export async function waitUntil(what: string, cond: () => Promise<boolean> | boolean, ms = 10_000, everyMs = 50): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
