/**
 * The resilient store over a private redis-server that the tests kill,
 * hang (SIGSTOP) and restart: fail open counts locally and replays into
 * Redis when it returns; fail closed refuses with StateUnavailableError;
 * neither ever waits longer than the command timeout; releases
 * (decrements, undo, del) are never refused and reach Redis later; bugs
 * are not mistaken for outages.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import pino from 'pino';
import { createState, parseStateConfig, type StateRuntime } from '../../src/state/config';
import { At } from '../../src/config/validate';
import { isStateUnavailable, ResilientStore } from '../../src/state/resilient';
import { startRedis, uniquePrefix, type PrivateRedis } from '../fleet/redis-server';

const HOUR = 3_600_000;
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('resilient state store (private redis-server)', { timeout: 60_000 }, () => {
  let redis: PrivateRedis;
  const runtimes: StateRuntime[] = [];

  const make = async (failMode: 'open' | 'closed', extra: Record<string, unknown> = {}): Promise<StateRuntime> => {
    const cfg = parseStateConfig(
      { backend: 'redis', failMode, keyPrefix: uniquePrefix(failMode), probeInterval: '100ms', redis: { url: redis.url, commandTimeout: '200ms', connectTimeout: '1s', maxReconnectDelay: '100ms', ...extra } },
      new At('test'),
      (p) => p,
    );
    const rt = createState(cfg, logger);
    runtimes.push(rt);
    await rt.start();
    assert.equal(rt.degraded(), false);
    return rt;
  };

  before(async () => {
    redis = await startRedis();
  });
  afterEach(async () => {
    redis.signal('SIGCONT');
    if (!redis.running()) await redis.start();
    for (const rt of runtimes.splice(0)) await rt.close();
  });
  after(async () => {
    await redis.close();
  });

  it('fail open: counts locally during an outage and replays into Redis when it returns', async () => {
    const rt = await make('open');
    const s = rt.store;
    const lim = [{ key: 'sh:q:{a:alice}:messagesPerHour', limit: 100, windowMs: HOUR }];
    for (let i = 0; i < 10; i++) assert.equal((await s.hitMany(lim, 1, Date.now())).allowed, true);
    await redis.kill();
    const t0 = Date.now();
    const r = await s.hitMany(lim, 1, Date.now());
    assert.ok(Date.now() - t0 < 1000, 'no long wait on a dead Redis');
    assert.equal(r.allowed, true);
    assert.equal(r.results[0]!.count, 1, 'counted locally, from zero');
    assert.equal(rt.degraded(), true);
    assert.match(rt.readinessWarning() ?? '', /failing open/);
    assert.equal(rt.readinessFailure(), undefined);
    for (let i = 0; i < 4; i++) await s.hitMany(lim, 1, Date.now());
    // A refund of a local hit, and a connection opened and one closed during the outage.
    const refunded = await s.hitMany(lim, 1, Date.now());
    await s.undo(lim, 1, refunded.stamp);
    await s.incr('sh:c:{a:alice}', 1, HOUR, Date.now());
    assert.equal(rt.status().journal, 6 + 1);
    await redis.start();
    await until(() => !rt.degraded(), 10_000, 'recovery');
    assert.equal(rt.status().journal, 0);
    // The restarted Redis (no persistence) lost the 10 from before; the 5 of the
    // outage were replayed (the refunded one taken back).
    assert.equal(await s.count(lim[0]!.key, HOUR, Date.now()), 5);
    assert.equal(await s.get('sh:c:{a:alice}', Date.now()), 1, 'the open connection moved into Redis');
    assert.equal(await s.incr('sh:c:{a:alice}', -1, HOUR, Date.now()), 0);
  });

  it('fail open: a Redis that keeps its data sees before + during', async () => {
    const rt = await make('open');
    const s = rt.store;
    const key = 'sh:af:{ip:127.0.0.9}';
    for (let i = 0; i < 3; i++) await s.record(key, HOUR, 1, Date.now());
    // A hung Redis (SIGSTOP): the connection stays open, commands time out.
    redis.signal('SIGSTOP');
    const t0 = Date.now();
    assert.equal(await s.record(key, HOUR, 1, Date.now()), 1);
    const waited = Date.now() - t0;
    assert.ok(waited >= 150 && waited < 1000, `bounded by the command timeout (${waited} ms)`);
    // Degraded: the next calls do not wait at all.
    // 20 calls that each waited for the 200 ms command timeout would take 4 s; the bound is far
    // from both that and from what a loaded machine needs for 20 in-memory calls.
    const t1 = Date.now();
    for (let i = 0; i < 20; i++) await s.record(key, HOUR, 1, Date.now());
    const took = Date.now() - t1;
    assert.ok(took < 1000, `the breaker is open: no timeouts per call (20 calls took ${took} ms)`);
    redis.signal('SIGCONT');
    await until(() => !rt.degraded(), 10_000, 'recovery');
    // 3 before, 21 during; the call that timed out also ran once Redis woke up,
    // and its replay carried the same id: counted once (redis-idempotent.test.ts).
    assert.equal(await s.count(key, HOUR, Date.now()), 3 + 21);
  });

  it('fail closed: refuses with StateUnavailableError, never refuses a release, and recovers', async () => {
    const rt = await make('closed');
    const s = rt.store;
    const lim = [{ key: 'sh:q:{a:bob}:recipientsPerHour', limit: 10, windowMs: HOUR }];
    const before = await s.hitMany(lim, 1, Date.now());
    await s.incr('sh:c:{ip:127.0.0.5}', 2, HOUR, Date.now());
    await redis.kill();
    await assert.rejects(s.hitMany(lim, 1, Date.now()), (err: unknown) => isStateUnavailable(err) && (err as { reply: string }).reply === 'state_unavailable');
    assert.equal(rt.degraded(), true);
    assert.match(rt.readinessFailure() ?? '', /failing closed/);
    await assert.rejects(s.get('sh:c:{ip:127.0.0.5}', Date.now()), isStateUnavailable);
    await assert.rejects(s.incr('sh:c:{ip:127.0.0.5}', 1, HOUR, Date.now()), isStateUnavailable);
    // Releases are accepted and owed to Redis.
    assert.equal(await s.incr('sh:c:{ip:127.0.0.5}', -1, HOUR, Date.now()), 0);
    await s.undo(lim, 1, before.stamp);
    await s.del('sh:q:{a:bob}:recipientsPerDay');
    assert.equal(rt.status().journal, 3);
    await redis.start();
    await until(() => !rt.degraded(), 10_000, 'recovery');
    assert.equal(rt.readinessFailure(), undefined);
    assert.equal((await s.hitMany(lim, 1, Date.now())).allowed, true);
  });

  it('fail closed on a hung Redis: refuses within the command timeout', async () => {
    const rt = await make('closed');
    await rt.store.hit('{h}:k', 10, HOUR, 1, Date.now());
    redis.signal('SIGSTOP');
    const t0 = Date.now();
    await assert.rejects(rt.store.hit('{h}:k', 10, HOUR, 1, Date.now()), isStateUnavailable);
    assert.ok(Date.now() - t0 < 1000);
    redis.signal('SIGCONT');
    await until(() => !rt.degraded(), 10_000, 'recovery');
    // The refused call had reached Redis before it hung, and ran when it woke up: the
    // count errs on the safe side (refused, yet counted).
    assert.equal((await rt.store.hit('{h}:k', 10, HOUR, 1, Date.now())).count, 3);
  });

  it('starts degraded when Redis is not there, and joins when it comes', async () => {
    await redis.kill();
    const cfg = parseStateConfig({ backend: 'redis', failMode: 'open', keyPrefix: uniquePrefix('late'), probeInterval: '100ms', redis: { url: redis.url, connectTimeout: '300ms', maxReconnectDelay: '100ms' } }, new At('t'), (p) => p);
    const rt = createState(cfg, logger);
    runtimes.push(rt);
    const t0 = Date.now();
    await rt.start();
    assert.ok(Date.now() - t0 < 2000, 'start does not wait for Redis forever');
    assert.equal(rt.degraded(), true);
    assert.equal((await rt.store.hit('{l}:k', 5, HOUR, 1, Date.now())).allowed, true);
    await redis.start();
    await until(() => !rt.degraded(), 10_000, 'recovery');
    assert.equal(await rt.store.count('{l}:k', HOUR, Date.now()), 1);
  });

  it('a full journal drops its oldest operations and says so', async () => {
    const rt = await make('open');
    const s = rt.store as ResilientStore;
    const cfgMax = 100_000;
    assert.equal(rt.status().dropped, 0);
    await redis.kill();
    (s as unknown as { opts: { journalMax: number } }).opts.journalMax = 10;
    for (let i = 0; i < 25; i++) await s.record('{j}:k', HOUR, 1, Date.now());
    assert.ok(rt.status().journal <= 10, `journal ${rt.status().journal}`);
    const dropped = rt.status().dropped;
    assert.ok(dropped >= 15, `dropped ${dropped}`);
    (s as unknown as { opts: { journalMax: number } }).opts.journalMax = cfgMax;
    await redis.start();
    await until(() => !rt.degraded(), 10_000, 'recovery');
    // Only what the journal kept reached the restarted Redis.
    assert.equal(await s.count('{j}:k', HOUR, Date.now()), 25 - dropped);
  });

  it('a bug is not an outage: errors from Redis itself are thrown as they are', async () => {
    const rt = await make('open');
    const store = rt.store as ResilientStore;
    await (rt.redis as import('ioredis').Redis).set(`${rt.keyPrefix}{b}:str`, 'not a hash');
    await assert.rejects(store.hit('{b}:str', 5, HOUR, 1, Date.now()), /WRONGTYPE/);
    assert.equal(rt.degraded(), false);
  });

  it('validates the config section', () => {
    const at = new At('smarthost.yaml', 'state');
    assert.throws(() => parseStateConfig({ backend: 'redis' }, at, (p) => p), /exactly one of url/);
    assert.throws(() => parseStateConfig({ backend: 'redis', redis: { url: 'x', cluster: ['a:1'] } }, at, (p) => p), /exactly one/);
    assert.throws(() => parseStateConfig({ backend: 'redis', redis: { url: 'http://x' } }, at, (p) => p), /redis:\/\//);
    assert.throws(() => parseStateConfig({ backend: 'memory', redis: { url: 'redis://x' } }, at, (p) => p), /backend: redis/);
    assert.throws(() => parseStateConfig({ keyPrefix: 'a{b}' }, at, (p) => p), /braces/);
    assert.throws(() => parseStateConfig({ failMode: 'maybe' }, at, (p) => p), /open, closed/);
    const c = parseStateConfig({ backend: 'redis', failMode: 'closed', redis: { sentinels: ['10.0.0.1', '10.0.0.2:26380'], sentinelName: 'mail' } }, at, (p) => p);
    assert.deepEqual(c.redis!.sentinels, [
      { host: '10.0.0.1', port: 26379 },
      { host: '10.0.0.2', port: 26380 },
    ]);
    assert.equal(c.redis!.commandTimeoutMs, 250);
    assert.equal(parseStateConfig(undefined, at, (p) => p).backend, 'memory');
  });
});
