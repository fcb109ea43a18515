/**
 * The behaviour every StateStore must have, as one suite run against each
 * implementation (memory, Redis, Redis Cluster): sliding-window limits at
 * their edge, one past it and across the window boundary (injected clock),
 * atomic multi-limit hits, undo, counters with expiry, sliding sets,
 * deletion, bounded slots, and atomicity under concurrent callers.
 *
 * Keys carry a hash tag ({subject}) like keys.ts builds them, so the suite
 * also runs unchanged on a Redis Cluster.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { slotMs, slotStamp, type StateStore } from '../../src/state/store';

export const HOUR = 3_600_000;
export const T0 = Date.UTC(2024, 0, 1, 10, 0, 0);

export interface SuiteStore {
  readonly store: StateStore;
  /** Live keys in this store (0 once everything expired or was deleted). */
  liveKeys(): Promise<number>;
  /** Slots held by a sliding-window log. */
  slots(key: string): Promise<number>;
}

/** Keys of one subject (one hash slot), like keys.ts. */
const k = (name: string, subject = 's1') => `sh:test:{${subject}}:${name}`;

export function storeSuite(make: () => Promise<SuiteStore>): void {
  it('allows exactly the limit, refuses one past it, and does not count refusals', async () => {
    const { store: s } = await make();
    for (let i = 1; i <= 5; i++) {
      const r = await s.hit(k('k'), 5, HOUR, 1, T0 + i * 1000);
      assert.equal(r.allowed, true);
      assert.equal(r.count, i);
      assert.equal(r.retryAfterMs, 0);
      assert.equal(r.key, k('k'));
      assert.equal(r.limit, 5);
    }
    const over = await s.hit(k('k'), 5, HOUR, 1, T0 + 10_000);
    assert.equal(over.allowed, false);
    assert.equal(over.count, 5);
    assert.equal(over.retryAfterMs, slotStamp(HOUR, T0 + 1000) + HOUR - (T0 + 10_000));
    assert.equal(await s.count(k('k'), HOUR, T0 + 20_000), 5);
  });

  it('slides: no burst at a window boundary (unlike a fixed window)', async () => {
    const { store: s } = await make();
    const slot = slotMs(HOUR);
    const late = T0 + HOUR - 60_000;
    for (let i = 0; i < 10; i++) assert.equal((await s.hit(k('k'), 10, HOUR, 1, late)).allowed, true);
    assert.equal((await s.hit(k('k'), 10, HOUR, 1, T0 + HOUR + 1000)).allowed, false);
    assert.equal((await s.hit(k('k'), 10, HOUR, 1, late + HOUR - 1)).allowed, false);
    const later = slotStamp(HOUR, late) + HOUR;
    assert.ok(later - late - HOUR <= slot, 'conservative by at most one slot');
    for (let i = 0; i < 10; i++) assert.equal((await s.hit(k('k'), 10, HOUR, 1, later)).allowed, true, `hit ${i}`);
    assert.equal((await s.hit(k('k'), 10, HOUR, 1, later)).allowed, false);
  });

  it('expires old events one by one as the window slides over them', async () => {
    const { store: s } = await make();
    for (const m of [0, 10, 20]) assert.equal((await s.hit(k('k'), 3, HOUR, 1, T0 + m * 60_000)).allowed, true);
    const denied = await s.hit(k('k'), 3, HOUR, 1, T0 + 30 * 60_000);
    assert.equal(denied.allowed, false);
    const freeAt = T0 + 30 * 60_000 + denied.retryAfterMs;
    assert.equal(freeAt, slotStamp(HOUR, T0) + HOUR);
    assert.equal((await s.hit(k('k'), 3, HOUR, 1, freeAt - 1)).allowed, false);
    assert.equal((await s.hit(k('k'), 3, HOUR, 1, freeAt)).allowed, true);
    assert.equal((await s.hit(k('k'), 3, HOUR, 1, freeAt + 60_000)).allowed, false);
    assert.equal((await s.hit(k('k'), 3, HOUR, 1, slotStamp(HOUR, T0 + 10 * 60_000) + HOUR)).allowed, true);
  });

  it('retryAfter counts enough slots to free the cost asked for', async () => {
    const { store: s } = await make();
    await s.hit(k('k'), 10, HOUR, 4, T0);
    await s.hit(k('k'), 10, HOUR, 4, T0 + 60_000);
    await s.hit(k('k'), 10, HOUR, 2, T0 + 120_000);
    const now = T0 + 180_000;
    // Needs 5 freed: the first slot frees 4, the second makes 8.
    const r = await s.hit(k('k'), 10, HOUR, 5, now);
    assert.equal(r.allowed, false);
    assert.equal(r.retryAfterMs, slotStamp(HOUR, T0 + 60_000) + HOUR - now);
  });

  it('hitMany is all-or-nothing across limits', async () => {
    const { store: s } = await make();
    const limits = [
      { key: k('h'), limit: 100, windowMs: HOUR },
      { key: k('d'), limit: 3, windowMs: 24 * HOUR },
    ];
    for (let i = 0; i < 3; i++) assert.equal((await s.hitMany(limits, 1, T0 + i)).allowed, true);
    const r = await s.hitMany(limits, 1, T0 + 10);
    assert.equal(r.allowed, false);
    assert.equal(r.denied?.key, k('d'));
    assert.equal(r.results[0]!.allowed, true, 'the hourly limit alone would allow it');
    assert.equal(r.results[0]!.count, 4);
    assert.equal(r.stamp, T0 + 10);
    assert.equal(await s.count(k('h'), HOUR, T0 + 10), 3);
    assert.equal((await s.peekMany([limits[0]!], 1, T0 + 11)).results[0]!.count, 4);
    assert.equal(await s.count(k('h'), HOUR, T0 + 11), 3);
    const empty = await s.hitMany([], 1, T0);
    assert.equal(empty.allowed, true);
    assert.deepEqual(empty.results, []);
  });

  it('a cost larger than one, and a cost larger than the limit', async () => {
    const { store: s } = await make();
    assert.equal((await s.hit(k('k'), 10, HOUR, 7, T0)).allowed, true);
    assert.equal((await s.hit(k('k'), 10, HOUR, 4, T0)).allowed, false);
    assert.equal((await s.hit(k('k'), 10, HOUR, 3, T0)).count, 10);
    const never = await s.hit(k('z'), 2, HOUR, 3, T0);
    assert.equal(never.allowed, false);
    assert.equal(never.retryAfterMs, HOUR);
  });

  it('undo takes back exactly one hit, in every limit of it', async () => {
    const { store: s, liveKeys } = await make();
    const limits = [{ key: k('k'), limit: 2, windowMs: HOUR }];
    await s.hitMany(limits, 1, T0);
    const r = await s.hitMany(limits, 1, T0 + 100);
    assert.equal(r.allowed, true);
    await s.undo(limits, 1, r.stamp);
    assert.equal(await s.count(k('k'), HOUR, T0 + 200), 1);
    assert.equal((await s.hitMany(limits, 1, T0 + 300)).allowed, true);
    // Two limits, several slots; undoing everything leaves nothing behind.
    const two = [
      { key: k('a'), limit: 10, windowMs: HOUR },
      { key: k('b'), limit: 10, windowMs: 24 * HOUR },
    ];
    const h1 = await s.hitMany(two, 2, T0);
    const h2 = await s.hitMany(two, 3, T0 + 30 * 60_000);
    await s.undo(two, 3, h2.stamp);
    assert.equal(await s.count(k('a'), HOUR, T0 + 31 * 60_000), 2);
    assert.equal(await s.count(k('b'), 24 * HOUR, T0 + 31 * 60_000), 2);
    await s.undo(two, 2, h1.stamp);
    await s.undo(two, 2, h1.stamp); // nothing left to take: no effect
    assert.equal(await s.count(k('a'), HOUR, T0 + 31 * 60_000), 0);
    await s.del(k('k'));
    assert.equal(await liveKeys(), 0);
  });

  it('record adds unconditionally and count reads the window', async () => {
    const { store: s } = await make();
    for (let i = 1; i <= 30; i++) assert.equal(await s.record(k('f'), 15 * 60_000, 1, T0 + i * 1000), i);
    assert.equal(await s.count(k('f'), 15 * 60_000, T0 + 15 * 60_000), 30);
    assert.equal(await s.count(k('f'), 15 * 60_000, T0 + 16 * 60_000 + 2000), 0);
    assert.equal(await s.count(k('nothing'), HOUR, T0), 0);
  });

  it('a new window for a key applies from then on (a policy reload)', async () => {
    const { store: s } = await make();
    for (let i = 0; i < 5; i++) await s.hit(k('k'), 100, HOUR, 1, T0 + i * 60_000);
    // Read with a 2-minute window at +5 min: the events of +3 and +4 min count (their
    // slots end after +3 min), the older ones have left the new window.
    assert.equal(await s.count(k('k'), 2 * 60_000, T0 + 5 * 60_000), 2);
  });

  it('a clock stepped back inserts in order', async () => {
    const { store: s } = await make();
    await s.hit(k('k'), 100, HOUR, 1, T0 + 20 * 60_000);
    await s.hit(k('k'), 100, HOUR, 1, T0); // an earlier stamp
    assert.equal(await s.count(k('k'), HOUR, T0 + 20 * 60_000), 2);
    // The earlier one leaves first.
    assert.equal(await s.count(k('k'), HOUR, slotStamp(HOUR, T0) + HOUR), 1);
  });

  it('the same key twice in one hitMany is checked against what stood before', async () => {
    const { store: s } = await make();
    const limits = [
      { key: k('k'), limit: 2, windowMs: HOUR },
      { key: k('k'), limit: 2, windowMs: HOUR },
    ];
    const r = await s.hitMany(limits, 1, T0);
    assert.equal(r.allowed, true);
    assert.deepEqual(r.results.map((x) => x.count), [1, 1]);
    assert.equal(await s.count(k('k'), HOUR, T0), 2);
  });

  it('keeps slots bounded: a day of steady hits is at most ~600 slots per key', async () => {
    const { store: s, slots } = await make();
    const day = 24 * HOUR;
    for (let t = 0; t < day; t += 60_000) await s.hit(k('k'), 1e9, day, 1, T0 + t);
    assert.equal(await s.count(k('k'), day, T0 + day - 1), day / 60_000);
    const n = await slots(k('k'));
    assert.ok(n <= 601, `${n} slots`);
  });

  it('counters expire with their TTL and vanish at zero', async () => {
    const { store: s, liveKeys } = await make();
    assert.equal(await s.incr(k('c'), 1, 1000, T0), 1);
    assert.equal(await s.incr(k('c'), 1, 1000, T0 + 10), 2);
    assert.equal(await s.ttl(k('c'), T0 + 10), 1000);
    assert.equal(await s.get(k('c'), T0 + 1009), 2);
    assert.equal(await s.get(k('c'), T0 + 1010), 0);
    assert.equal(await s.ttl(k('c'), T0 + 1010), 0);
    // An expired counter starts again from zero.
    assert.equal(await s.incr(k('c'), 5, 1000, T0 + 2000), 5);
    assert.equal(await s.incr(k('c'), -5, 1000, T0 + 2000), 0);
    assert.equal(await s.incr(k('d'), 1, 1000, T0), 1);
    assert.equal(await s.incr(k('d'), -1, 1000, T0), 0);
    assert.equal(await s.incr(k('d'), -1, 1000, T0), 0, 'never negative');
    assert.equal(await s.get(k('absent'), T0), 0);
    assert.equal(await s.ttl(k('absent'), T0), 0);
    assert.equal(await liveKeys(), 0);
  });

  it('sliding sets count distinct members in the window', async () => {
    const { store: s, liveKeys } = await make();
    assert.equal(await s.addToSet(k('s'), 'a.example', HOUR, T0), 1);
    assert.equal(await s.addToSet(k('s'), 'b.example', HOUR, T0 + 1000), 2);
    assert.equal(await s.addToSet(k('s'), 'a.example', HOUR, T0 + 2000), 2);
    assert.equal(await s.setSize(k('s'), HOUR, T0 + HOUR + 999), 2);
    assert.equal(await s.setSize(k('s'), HOUR, T0 + HOUR + 1500), 1);
    assert.equal(await s.setSize(k('s'), HOUR, T0 + HOUR + 2000), 0);
    assert.equal(await s.setSize(k('never'), HOUR, T0), 0);
    assert.equal(await liveKeys(), 0);
  });

  it('rankings: the newest score wins, the highest come first, the unseen leave, the lowest go past the cap', async () => {
    const { store: s, liveKeys } = await make();
    assert.equal(await s.rank(k('r'), [['account:a', 5], ['ip:127.0.0.9', 12]], HOUR, 3, T0), 2);
    assert.equal(await s.rank(k('r'), [['account:b', 7.5]], HOUR, 3, T0 + 1000), 3);
    assert.equal(await s.rank(k('r'), [['account:a', 2]], HOUR, 3, T0 + 2000), 3);
    assert.deepEqual(await s.top(k('r'), 10, HOUR, T0 + 3000), [['ip:127.0.0.9', 12], ['account:b', 7.5], ['account:a', 2]]);
    assert.deepEqual(await s.top(k('r'), 1, HOUR, T0 + 3000), [['ip:127.0.0.9', 12]]);
    assert.deepEqual(await s.top(k('r'), 0, HOUR, T0 + 3000), []);
    // ip:127.0.0.9 was last seen at T0, account:b at T0 + 1000: they leave the window in that order.
    assert.deepEqual(await s.top(k('r'), 10, HOUR, T0 + HOUR), [['account:b', 7.5], ['account:a', 2]]);
    assert.deepEqual(await s.top(k('r'), 10, HOUR, T0 + HOUR + 1500), [['account:a', 2]]);
    assert.deepEqual(await s.top(k('r'), 10, HOUR, T0 + HOUR + 2000), []);
    assert.deepEqual(await s.top(k('never'), 10, HOUR, T0), []);
    // Bounded: past rankingCap(max) the lowest scores go until max remain (ties: lexically lowest first).
    const many = Array.from({ length: 11 }, (_, i) => [`m${String(i).padStart(2, '0')}`, i < 2 ? 0 : i] as const);
    assert.equal(await s.rank(k('c'), many.slice(0, 10), HOUR, 10, T0), 10);
    assert.equal(await s.rank(k('c'), many.slice(10), HOUR, 10, T0), 11, 'within the cap (10 + 1): kept');
    assert.equal(await s.rank(k('c'), [['m99', 1]], HOUR, 10, T0), 10, 'past it: back to 10');
    const left = (await s.top(k('c'), 20, HOUR, T0)).map(([m]) => m);
    assert.deepEqual(left, ['m10', 'm09', 'm08', 'm07', 'm06', 'm05', 'm04', 'm03', 'm02', 'm99']);
    await s.del(k('c'));
    assert.deepEqual(await s.top(k('c'), 20, HOUR, T0), []);
    assert.equal(await liveKeys(), 0);
  });

  it('del removes a key whatever it holds', async () => {
    const { store: s, liveKeys } = await make();
    await s.hit(k('q'), 10, HOUR, 3, T0);
    await s.incr(k('c'), 2, HOUR, T0);
    await s.addToSet(k('s'), 'x', HOUR, T0);
    for (const key of [k('q'), k('c'), k('s')]) await s.del(key);
    assert.equal(await s.count(k('q'), HOUR, T0), 0);
    assert.equal(await s.get(k('c'), T0), 0);
    assert.equal(await s.setSize(k('s'), HOUR, T0), 0);
    assert.equal(await liveKeys(), 0);
    await s.del(k('never-existed'));
  });

  it('is atomic under concurrent callers: exactly the limit is allowed', async () => {
    const { store: s } = await make();
    const limits = [
      { key: k('h'), limit: 37, windowMs: HOUR },
      { key: k('d'), limit: 1000, windowMs: 24 * HOUR },
    ];
    const all = await Promise.all(Array.from({ length: 120 }, (_, i) => s.hitMany(limits, 1, T0 + i)));
    assert.equal(all.filter((r) => r.allowed).length, 37);
    assert.equal(await s.count(k('h'), HOUR, T0 + 200), 37);
    assert.equal(await s.count(k('d'), 24 * HOUR, T0 + 200), 37);
  });

  it('keeps subjects apart', async () => {
    const { store: s } = await make();
    await s.hit(k('q', 'alice'), 1, HOUR, 1, T0);
    assert.equal((await s.hit(k('q', 'alice'), 1, HOUR, 1, T0)).allowed, false);
    assert.equal((await s.hit(k('q', 'bob'), 1, HOUR, 1, T0)).allowed, true);
  });

  it('turn: one start every interval, taken only within maxWait, refused turns take nothing', async () => {
    const { store: s } = await make();
    const starts: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t = await s.turn(k('rate'), 200, 500, T0);
      assert.equal(t.ok, true, `turn ${i + 1}`);
      starts.push(t.at);
    }
    assert.deepEqual(starts, [T0, T0 + 200, T0 + 400]);
    // The fourth would start 600 ms from now, past maxWait: refused with that start, twice (nothing taken).
    assert.deepEqual(await s.turn(k('rate'), 200, 500, T0), { ok: false, at: T0 + 600 });
    assert.deepEqual(await s.turn(k('rate'), 200, 500, T0 + 50), { ok: false, at: T0 + 600 });
    // At that time it is granted at once; after a pause the rate does not save up turns (no burst).
    assert.deepEqual(await s.turn(k('rate'), 200, 500, T0 + 600), { ok: true, at: T0 + 600 });
    assert.deepEqual(await s.turn(k('rate'), 200, 0, T0 + 10_000), { ok: true, at: T0 + 10_000 });
    assert.deepEqual(await s.turn(k('rate'), 200, 0, T0 + 10_000), { ok: false, at: T0 + 10_200 });
    // Another key is another rate.
    assert.deepEqual(await s.turn(k('rate2'), 200, 0, T0 + 10_000), { ok: true, at: T0 + 10_000 });
  });

  it('turn: a fractional interval (3/s) keeps its fraction', async () => {
    const { store: s } = await make();
    const starts: number[] = [];
    for (let i = 0; i < 4; i++) starts.push((await s.turn(k('third'), 1000 / 3, 5000, T0)).at);
    assert.equal(starts[0], T0);
    assert.ok(Math.abs(starts[3]! - (T0 + 1000)) < 0.01, `the fourth turn one second on, got ${starts[3]! - T0}`);
    await assert.rejects(() => s.turn(k('bad'), 0, 100, T0), /interval/);
    await assert.rejects(() => s.turn(k('bad'), Number.NaN, 100, T0), /interval/);
  });

  it('turn: concurrent callers get distinct starts, one interval apart', async () => {
    const { store: s } = await make();
    const all = await Promise.all(Array.from({ length: 60 }, () => s.turn(k('race'), 10, 10_000, T0)));
    assert.ok(all.every((t) => t.ok));
    assert.deepEqual(
      all.map((t) => t.at).sort((a, b) => a - b),
      Array.from({ length: 60 }, (_, i) => T0 + i * 10),
    );
  });

  it('setUntil: the first record running wins, an ended one is replaced, kept for its TTL', async () => {
    const { store: s } = await make();
    assert.equal(await s.getUntil(k('susp'), T0), undefined);
    assert.deepEqual(await s.setUntil(k('susp'), T0 + 60_000, 'first', 300_000, T0), { until: T0 + 60_000, value: 'first', set: true });
    // A second writer while it runs gets the first one back.
    assert.deepEqual(await s.setUntil(k('susp'), T0 + 90_000, 'second', 300_000, T0 + 1000), { until: T0 + 60_000, value: 'first', set: false });
    assert.deepEqual(await s.getUntil(k('susp'), T0 + 59_999), { until: T0 + 60_000, value: 'first' });
    // Ended but kept (the caller still reads it to recover): returned, and replaced by the next writer.
    assert.deepEqual(await s.getUntil(k('susp'), T0 + 120_000), { until: T0 + 60_000, value: 'first' });
    assert.deepEqual(await s.setUntil(k('susp'), T0 + 180_000, 'third', 10_000, T0 + 120_000), { until: T0 + 180_000, value: 'third', set: true });
    // Kept at least until its end, even with a shorter TTL; gone after.
    assert.deepEqual(await s.getUntil(k('susp'), T0 + 179_999), { until: T0 + 180_000, value: 'third' });
    assert.equal(await s.getUntil(k('susp'), T0 + 180_001), undefined);
    assert.deepEqual(await s.setUntil(k('susp'), T0 + 200_000, 'fourth', 1000, T0 + 180_001), { until: T0 + 200_000, value: 'fourth', set: true });
  });

  it('setUntil: of concurrent writers exactly one sets it, everyone gets its record', async () => {
    const { store: s } = await make();
    const all = await Promise.all(Array.from({ length: 20 }, (_, i) => s.setUntil(k('race-susp'), T0 + 60_000 + i, `w${i}`, 60_000, T0)));
    assert.equal(all.filter((r) => r.set).length, 1);
    const winner = all.find((r) => r.set)!;
    for (const r of all) assert.deepEqual({ until: r.until, value: r.value }, { until: winner.until, value: winner.value });
  });
}
