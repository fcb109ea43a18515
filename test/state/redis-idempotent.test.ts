/**
 * A timed-out command may still run in Redis (its reply was only late), and
 * a replay batch that timed out may have run too: the resilient store must
 * count each hit, record, refund and release exactly once. A private
 * redis-server is made slow for a while with CLIENT PAUSE from a second
 * connection: ALL holds every command (the wrapper's call times out, then
 * Redis runs it); WRITE lets PING through but holds the scripts, so the
 * wrapper recovers, replays, times out and replays again.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import pino from 'pino';
import { createState, parseStateConfig, type StateRuntime } from '../../src/state/config';
import { At } from '../../src/config/validate';
import { startRedis, uniquePrefix, type PrivateRedis } from '../fleet/redis-server';
import { waitUntil } from '../helpers/wait-until';

const HOUR = 3_600_000;
const TIMEOUT_MS = 200;
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

describe('resilient store: a late reply is not counted twice (private redis-server)', { timeout: 60_000 }, () => {
  let redis: PrivateRedis;
  let pauser: Redis;
  const runtimes: StateRuntime[] = [];

  const make = async (): Promise<StateRuntime> => {
    const cfg = parseStateConfig(
      { backend: 'redis', failMode: 'open', keyPrefix: uniquePrefix('idem'), probeInterval: '100ms', redis: { url: redis.url, commandTimeout: `${TIMEOUT_MS}ms`, connectTimeout: '1s', maxReconnectDelay: '100ms' } },
      new At('test'),
      (p) => p,
    );
    const rt = createState(cfg, logger);
    runtimes.push(rt);
    await rt.start();
    return rt;
  };
  /** Hold Redis' commands (ALL) or its scripts (WRITE) for `ms`, from another connection. */
  const pause = async (ms: number, mode: 'ALL' | 'WRITE') => {
    assert.equal(await pauser.call('CLIENT', 'PAUSE', String(ms), mode), 'OK');
  };
  const recovered = async (rt: StateRuntime) => {
    await waitUntil('recovery and replay', async () => !rt.degraded() && rt.status().journal === 0);
    // Let every late command still queued in Redis run before counting.
    await pauser.ping();
  };

  before(async () => {
    redis = await startRedis();
    pauser = new Redis(redis.url);
  });
  afterEach(async () => {
    await pauser.call('CLIENT', 'UNPAUSE');
    for (const rt of runtimes.splice(0)) await rt.close();
  });
  after(async () => {
    pauser.disconnect();
    await redis.close();
  });

  it('a hit whose reply came after the timeout is replayed without counting it again', async () => {
    const rt = await make();
    const s = rt.store;
    const lim = [
      { key: 'sh:q:{a:late}:messagesPerHour', limit: 100, windowMs: HOUR },
      { key: 'sh:q:{a:late}:messagesPerDay', limit: 1000, windowMs: 24 * HOUR },
    ];
    for (let i = 0; i < 3; i++) assert.equal((await s.hitMany(lim, 1, Date.now())).allowed, true);
    await pause(3 * TIMEOUT_MS, 'ALL');
    assert.equal((await s.hitMany(lim, 1, Date.now())).allowed, true, 'served locally after the timeout');
    assert.equal(rt.degraded(), true);
    for (let i = 0; i < 2; i++) await s.hitMany(lim, 1, Date.now());
    await recovered(rt);
    for (const l of lim) assert.equal(await s.count(l.key, l.windowMs, Date.now()), 3 + 1 + 2, l.key);
    // Markers are kept 15 minutes at most, not for the day-long window (Redis memory).
    const markers = await pauser.keys('*#once:*');
    assert.ok(markers.length >= 6, `markers: ${markers.length}`);
    for (const m of markers) {
      const ttl = Number(await pauser.pttl(m));
      assert.ok(ttl > 0 && ttl <= 15 * 60_000, `${m} kept ${ttl} ms`);
    }
  });

  it('a replay batch that timed out and ran anyway is not applied again', async () => {
    const rt = await make();
    const s = rt.store;
    const key = 'sh:q:{a:batch}:messagesPerHour';
    const lim = [{ key, limit: 100, windowMs: HOUR }];
    await s.hitMany(lim, 1, Date.now());
    // Scripts are held, PING is not: a read times out (degraded), 5 hits and a
    // record are counted locally; the connection holding the read is killed,
    // so the reconnected wrapper's PING passes, its replay batch times out, and
    // once the pause ends the batch runs and is replayed again.
    await pause(6 * TIMEOUT_MS, 'WRITE');
    await s.count(key, HOUR, Date.now());
    assert.equal(rt.degraded(), true);
    for (let i = 0; i < 5; i++) await s.hitMany(lim, 1, Date.now());
    await s.record('sh:af:{ip:127.0.0.7}', HOUR, 1, Date.now());
    await pauser.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    // A batch in flight leaves the journal; a batch that timed out is put back.
    let inFlight = false;
    let putBack = false;
    await waitUntil('recovery and replay', async () => {
      const { journal, degraded } = rt.status();
      if (degraded && journal === 0) inFlight = true;
      else if (degraded && inFlight) putBack = true;
      return !degraded && journal === 0;
    });
    await pauser.ping();
    assert.ok(putBack, 'a replay batch timed out and was put back for another replay');
    assert.equal(await s.count(key, HOUR, Date.now()), 1 + 5);
    assert.equal(await s.count('sh:af:{ip:127.0.0.7}', HOUR, Date.now()), 1);
  });

  it('a refund and a release that timed out are applied once', async () => {
    const rt = await make();
    const s = rt.store;
    const lim = [{ key: 'sh:q:{a:refund}:recipientsPerHour', limit: 100, windowMs: HOUR }];
    const hits = [];
    for (let i = 0; i < 3; i++) hits.push(await s.hitMany(lim, 1, Date.now()));
    await s.incr('sh:c:{a:refund}', 3, HOUR, Date.now());
    await pause(3 * TIMEOUT_MS, 'ALL');
    await s.undo(lim, 1, hits[0]!.stamp);
    assert.equal(rt.degraded(), true, 'the refund timed out');
    await recovered(rt);
    await pause(3 * TIMEOUT_MS, 'ALL');
    await s.incr('sh:c:{a:refund}', -1, HOUR, Date.now());
    assert.equal(rt.degraded(), true, 'the release timed out');
    await recovered(rt);
    assert.equal(await s.count(lim[0]!.key, HOUR, Date.now()), 2, 'one refund of one hit');
    assert.equal(await s.get('sh:c:{a:refund}', Date.now()), 2, 'one release of one connection');
  });
});
