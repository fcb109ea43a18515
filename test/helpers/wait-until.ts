/** Polls `cond` every 50 ms, at most `tries` times (bounded); throws naming what it waited for. */
export async function waitUntil(what: string, cond: () => Promise<boolean>, tries = 200): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}
