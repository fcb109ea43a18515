/**
 * The in-memory state store: sliding-window limits at their edge, one past
 * it and across the window boundary (injected clock), atomic multi-limit
 * hits, undo, counters with expiry, sliding sets, and the dry-run overlay
 * explain uses.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DryRunStore } from '../../src/state/dry-run';
import { keys } from '../../src/state/keys';
import { MemoryStore } from '../../src/state/memory';
import { slotMs, slotStamp } from '../../src/state/store';

const HOUR = 3_600_000;
const T0 = Date.UTC(2024, 0, 1, 10, 0, 0);

describe('sliding-window limits', () => {
  it('allows exactly the limit, refuses one past it, and does not count refusals', async () => {
    const s = new MemoryStore();
    for (let i = 1; i <= 5; i++) {
      const r = await s.hit('k', 5, HOUR, 1, T0 + i * 1000);
      assert.equal(r.allowed, true);
      assert.equal(r.count, i);
    }
    const over = await s.hit('k', 5, HOUR, 1, T0 + 10_000);
    assert.equal(over.allowed, false);
    assert.equal(over.count, 5);
    assert.ok(over.retryAfterMs > 0 && over.retryAfterMs <= HOUR);
    // Refused hits are not counted: still 5.
    assert.equal(await s.count('k', HOUR, T0 + 20_000), 5);
  });

  it('slides: no burst at a window boundary (unlike a fixed window)', async () => {
    const s = new MemoryStore();
    const slot = slotMs(HOUR); // 6 s for an hour
    // 10 messages at the END of one clock hour (10:59:00)...
    const late = T0 + HOUR - 60_000;
    for (let i = 0; i < 10; i++) assert.equal((await s.hit('k', 10, HOUR, 1, late)).allowed, true);
    // ...a fixed window would allow 10 more at 11:00:01; the sliding window does not.
    const next = await s.hit('k', 10, HOUR, 1, T0 + HOUR + 1000);
    assert.equal(next.allowed, false);
    // Just before they are an hour old (plus at most one slot): still refused.
    assert.equal((await s.hit('k', 10, HOUR, 1, late + HOUR - 1)).allowed, false);
    // Once they are an hour (+ their slot) old, there is room again, for exactly 10.
    const later = slotStamp(HOUR, late) + HOUR;
    assert.ok(later - late - HOUR <= slot, 'conservative by at most one slot');
    for (let i = 0; i < 10; i++) assert.equal((await s.hit('k', 10, HOUR, 1, later)).allowed, true, `hit ${i}`);
    assert.equal((await s.hit('k', 10, HOUR, 1, later)).allowed, false);
  });

  it('expires old events one by one as the window slides over them', async () => {
    const s = new MemoryStore();
    // Three events 10 minutes apart, limit 3.
    for (const m of [0, 10, 20]) assert.equal((await s.hit('k', 3, HOUR, 1, T0 + m * 60_000)).allowed, true);
    const denied = await s.hit('k', 3, HOUR, 1, T0 + 30 * 60_000);
    assert.equal(denied.allowed, false);
    // retryAfter points at the first event leaving the window.
    const freeAt = T0 + 30 * 60_000 + denied.retryAfterMs;
    assert.equal(freeAt, slotStamp(HOUR, T0) + HOUR);
    assert.equal((await s.hit('k', 3, HOUR, 1, freeAt - 1)).allowed, false);
    assert.equal((await s.hit('k', 3, HOUR, 1, freeAt)).allowed, true);
    // Now full again until the 10-minute event leaves.
    assert.equal((await s.hit('k', 3, HOUR, 1, freeAt + 60_000)).allowed, false);
    assert.equal((await s.hit('k', 3, HOUR, 1, slotStamp(HOUR, T0 + 10 * 60_000) + HOUR)).allowed, true);
  });

  it('hitMany is all-or-nothing across limits', async () => {
    const s = new MemoryStore();
    const limits = [
      { key: 'h', limit: 100, windowMs: HOUR },
      { key: 'd', limit: 3, windowMs: 24 * HOUR },
    ];
    for (let i = 0; i < 3; i++) assert.equal((await s.hitMany(limits, 1, T0 + i)).allowed, true);
    const r = await s.hitMany(limits, 1, T0 + 10);
    assert.equal(r.allowed, false);
    assert.equal(r.denied?.key, 'd');
    // The hourly limit allowed it, but nothing was counted there either.
    assert.equal(await s.count('h', HOUR, T0 + 10), 3);
    // peek never counts.
    assert.equal((await s.peekMany([limits[0]!], 1, T0 + 11)).results[0]!.count, 4);
    assert.equal(await s.count('h', HOUR, T0 + 11), 3);
  });

  it('a cost larger than one, and a cost larger than the limit', async () => {
    const s = new MemoryStore();
    assert.equal((await s.hit('k', 10, HOUR, 7, T0)).allowed, true);
    assert.equal((await s.hit('k', 10, HOUR, 4, T0)).allowed, false);
    assert.equal((await s.hit('k', 10, HOUR, 3, T0)).count, 10);
    const never = await s.hit('z', 2, HOUR, 3, T0);
    assert.equal(never.allowed, false);
    assert.equal(never.retryAfterMs, HOUR);
  });

  it('undo takes back exactly one hit', async () => {
    const s = new MemoryStore();
    const limits = [{ key: 'k', limit: 2, windowMs: HOUR }];
    await s.hitMany(limits, 1, T0);
    const r = await s.hitMany(limits, 1, T0 + 100);
    assert.equal(r.allowed, true);
    await s.undo(limits, 1, r.stamp);
    assert.equal(await s.count('k', HOUR, T0 + 200), 1);
    assert.equal((await s.hitMany(limits, 1, T0 + 300)).allowed, true);
  });

  it('keeps memory bounded: a day of steady hits is at most ~600 slots per key', async () => {
    const s = new MemoryStore();
    const day = 24 * HOUR;
    for (let t = 0; t < day; t += 10_000) await s.hit('k', 1e9, day, 1, T0 + t);
    assert.equal(await s.count('k', day, T0 + day - 1), day / 10_000);
    // Internal: slots, not events.
    const log = (s as unknown as { logs: Map<string, { ts: number[]; head: number }> }).logs.get('k')!;
    assert.ok(log.ts.length - log.head <= 601, `${log.ts.length - log.head} slots`);
  });
});

describe('counters and sets', () => {
  it('counters expire with their TTL and vanish at zero', async () => {
    const s = new MemoryStore();
    assert.equal(await s.incr('c', 1, 1000, T0), 1);
    assert.equal(await s.incr('c', 1, 1000, T0 + 10), 2);
    assert.equal(await s.ttl('c', T0 + 10), 1000);
    assert.equal(await s.get('c', T0 + 1009), 2);
    assert.equal(await s.get('c', T0 + 1010), 0);
    assert.equal(await s.incr('d', 1, 1000, T0), 1);
    assert.equal(await s.incr('d', -1, 1000, T0), 0);
    assert.equal(await s.incr('d', -1, 1000, T0), 0, 'never negative');
    assert.equal(s.size(), 0);
  });

  it('sliding sets count distinct members in the window', async () => {
    const s = new MemoryStore();
    assert.equal(await s.addToSet('s', 'a.example', HOUR, T0), 1);
    assert.equal(await s.addToSet('s', 'b.example', HOUR, T0 + 1000), 2);
    assert.equal(await s.addToSet('s', 'a.example', HOUR, T0 + 2000), 2);
    assert.equal(await s.setSize('s', HOUR, T0 + HOUR + 999), 2);
    // b (seen at +1s) has left the window; a was seen again at +2s.
    assert.equal(await s.setSize('s', HOUR, T0 + HOUR + 1500), 1);
    assert.equal(await s.setSize('s', HOUR, T0 + HOUR + 2000), 0);
  });

  it('sweeps expired keys', async () => {
    const s = new MemoryStore();
    for (let i = 0; i < 100; i++) await s.hit(`k${i}`, 10, 1000, 1, T0);
    s.sweep(T0 + 10_000);
    assert.equal(s.size(), 0);
  });
});

describe('dry-run store (explain)', () => {
  it('reads the real counts, counts its own hits, writes nothing', async () => {
    const base = new MemoryStore();
    const lim = [{ key: 'k', limit: 3, windowMs: HOUR }];
    await base.hitMany(lim, 1, T0);
    await base.incr('c', 2, HOUR, T0);
    const dry = new DryRunStore(base);
    assert.equal((await dry.hitMany(lim, 1, T0 + 1)).results[0]!.count, 2);
    assert.equal((await dry.hitMany(lim, 1, T0 + 2)).results[0]!.count, 3);
    const r = await dry.hitMany(lim, 1, T0 + 3);
    assert.equal(r.allowed, false);
    assert.equal(r.results[0]!.count, 3);
    assert.equal(await dry.incr('c', 1, HOUR, T0), 3);
    assert.equal(await dry.get('c', T0), 3);
    // The real store is untouched.
    assert.equal(await base.count('k', HOUR, T0 + 3), 1);
    assert.equal(await base.get('c', T0), 2);
  });
});

describe('state keys', () => {
  it('put one subject in one Redis Cluster hash slot and escape odd input', () => {
    const a = { kind: 'a' as const, id: 'Alice@ISP.test' };
    assert.equal(keys.quota(a, 'recipientsPerDay'), 'sh:q:{a:alice@isp.test}:recipientsPerDay');
    assert.equal(keys.connections(a), 'sh:c:{a:alice@isp.test}');
    const evil = keys.authFailures({ kind: 'a', id: 'x}{y z' });
    assert.equal(evil.match(/[{}]/g)!.length, 2, evil);
  });
});
