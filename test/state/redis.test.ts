/**
 * The Redis state store against a private redis-server (and a one-node
 * Redis Cluster): the same behavioural suite as the memory store, run
 * against both, plus what only Redis has: keys really expiring with their
 * window, the key layout (prefix, hash tags, one slot per subject) and
 * CROSSSLOT protection on a cluster.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { keys } from '../../src/state/keys';
import { MemoryStore } from '../../src/state/memory';
import { hasHashTag, RedisStore } from '../../src/state/redis';
import { startRedis, uniquePrefix, type PrivateRedis } from '../fleet/redis-server';
import { HOUR, storeSuite, T0, type SuiteStore } from './store-suite';

async function liveKeys(client: Redis | Cluster, prefix: string): Promise<number> {
  const nodes = client instanceof Cluster ? client.nodes('master') : [client];
  let n = 0;
  for (const node of nodes) n += (await node.keys(`${prefix}*`)).length + (await node.keys(`{${prefix}*`)).length;
  return n;
}

describe('state store behaviour: memory', () => {
  storeSuite(async () => {
    const s = new MemoryStore();
    return {
      store: s,
      liveKeys: async () => s.size(),
      slots: async (key) => {
        const log = (s as unknown as { logs: Map<string, { ts: number[]; head: number }> }).logs.get(key);
        return log ? log.ts.length - log.head : 0;
      },
    };
  });
});

describe('state store behaviour: redis', { timeout: 30_000 }, () => {
  let redis: PrivateRedis;
  const clients: Redis[] = [];
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await redis.close();
  });
  storeSuite(async (): Promise<SuiteStore> => {
    const client = new Redis(redis.port, '127.0.0.1', { lazyConnect: false });
    clients.push(client);
    const prefix = uniquePrefix('suite');
    const s = new RedisStore(client, { keyPrefix: prefix, ownsClient: false });
    return { store: s, liveKeys: () => liveKeys(client, prefix), slots: async (key) => client.zcard(s.stampsKey(key)) };
  });
});

describe('state store behaviour: redis cluster (one node, all slots)', { timeout: 30_000 }, () => {
  let redis: PrivateRedis;
  const clients: Cluster[] = [];
  before(async () => {
    redis = await startRedis({ cluster: true });
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await redis.close();
  });
  storeSuite(async (): Promise<SuiteStore> => {
    const client = new Cluster([{ host: '127.0.0.1', port: redis.port }]);
    clients.push(client);
    const prefix = uniquePrefix('cluster');
    const s = new RedisStore(client, { keyPrefix: prefix, ownsClient: false });
    return { store: s, liveKeys: () => liveKeys(client, prefix), slots: async (key) => client.zcard(s.stampsKey(key)) };
  });

  it('keys of one subject share a hash slot; two subjects in one operation are refused (CROSSSLOT)', async () => {
    const client = new Cluster([{ host: '127.0.0.1', port: redis.port }]);
    clients.push(client);
    const s = new RedisStore(client, { keyPrefix: uniquePrefix('xslot'), ownsClient: false });
    const alice = { kind: 'a' as const, id: 'alice@isp.test' };
    const both = [
      { key: keys.quota(alice, 'recipientsPerHour'), limit: 10, windowMs: HOUR },
      { key: keys.quota(alice, 'recipientsPerDay'), limit: 100, windowMs: 24 * HOUR },
    ];
    assert.equal((await s.hitMany(both, 1, T0)).allowed, true);
    const mixed = [both[0]!, { key: keys.quota({ kind: 'a', id: 'bob@isp.test' }, 'recipientsPerDay'), limit: 100, windowMs: 24 * HOUR }];
    await assert.rejects(s.hitMany(mixed, 1, T0), /CROSSSLOT/);
  });
});

describe('redis store specifics', { timeout: 30_000 }, () => {
  let redis: PrivateRedis;
  let client: Redis;
  before(async () => {
    redis = await startRedis();
    client = new Redis(redis.port, '127.0.0.1');
  });
  after(async () => {
    client.disconnect();
    await redis.close();
  });

  it('lays keys out as documented: prefix + keys.ts key, companion in the same slot', async () => {
    const prefix = uniquePrefix('layout');
    const s = new RedisStore(client, { keyPrefix: prefix, ownsClient: false });
    const key = keys.quota({ kind: 'a', id: 'alice@isp.test' }, 'messagesPerHour');
    await s.hit(key, 100, HOUR, 1, Date.now());
    assert.equal(await client.hget(`${prefix}${key}`, 't'), '1');
    assert.equal(await client.zcard(`${prefix}${key}#z`), 1);
    // Untagged keys get their own name as the tag of the companion.
    assert.equal(s.stampsKey('plain'), `{${prefix}plain}#z`);
    assert.equal(hasHashTag('a{b}c'), true);
    assert.equal(hasHashTag('a{}c'), false);
    assert.throws(() => new RedisStore(client, { keyPrefix: 'x{y}' }), /braces/);
  });

  it('keys expire in Redis itself with their window (nothing left to collect)', async () => {
    const prefix = uniquePrefix('ttl');
    const s = new RedisStore(client, { keyPrefix: prefix, ownsClient: false });
    const now = Date.now();
    await s.hit('{x}:log', 10, 300, 1, now);
    await s.incr('{x}:ctr', 1, 300, now);
    await s.addToSet('{x}:set', 'm', 300, now);
    const pttl = await client.pttl(`${prefix}{x}:log`);
    assert.ok(pttl > 0 && pttl <= 300 + 1, `log pttl ${pttl}`);
    assert.ok((await client.pttl(`${prefix}{x}:log#z`)) > 0);
    assert.ok((await client.pttl(`${prefix}{x}:ctr`)) > 0);
    assert.ok((await client.pttl(`${prefix}{x}:set`)) > 0);
    await new Promise((r) => setTimeout(r, 450));
    assert.equal(await liveKeys(client, prefix), 0);
  });

  it('a long window sets a long expiry, refreshed by each write', async () => {
    const prefix = uniquePrefix('ttl2');
    const s = new RedisStore(client, { keyPrefix: prefix, ownsClient: false });
    await s.hit('{y}:day', 10, 24 * HOUR, 1, Date.now());
    const pttl = await client.pttl(`${prefix}{y}:day`);
    assert.ok(pttl > 24 * HOUR - 5000 && pttl <= 24 * HOUR + 144_000, `pttl ${pttl}`);
  });

  it('survives a restart of Redis (scripts reloaded, NOSCRIPT handled)', async () => {
    const c = new Redis(redis.port, '127.0.0.1', { retryStrategy: () => 50 });
    try {
      const s = new RedisStore(c, { keyPrefix: uniquePrefix('restart'), ownsClient: false });
      assert.equal((await s.hit('{z}:k', 5, HOUR, 1, T0)).count, 1);
      await client.script('FLUSH'); // as after a restart: the script cache is empty
      assert.equal((await s.hit('{z}:k', 5, HOUR, 1, T0)).count, 2);
    } finally {
      c.disconnect();
    }
  });

  it('refuses costs and clocks that are not whole numbers', async () => {
    const s = new RedisStore(client, { keyPrefix: uniquePrefix('whole'), ownsClient: false });
    await assert.rejects(s.hit('{w}:k', 5, HOUR, 1.5, T0), /whole number/);
  });
});
