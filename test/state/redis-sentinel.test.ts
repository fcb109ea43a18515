/**
 * The state store through Redis Sentinel (state.redis.sentinels): a private
 * master, a replica and one sentinel. The master is killed; the sentinel
 * promotes the replica; the gateway's store runs degraded (fail open) in
 * between and then finds the new master by itself, with the counts that
 * were replicated plus those it counted meanwhile.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import pino from 'pino';
import { At } from '../../src/config/validate';
import { createState, parseStateConfig, type StateRuntime } from '../../src/state/config';
import { startRedis, startSentinel, uniquePrefix, type PrivateRedis, type PrivateSentinel } from '../fleet/redis-server';

const HOUR = 3_600_000;

async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('state store through Redis Sentinel', { timeout: 45_000 }, () => {
  let master: PrivateRedis;
  let replica: PrivateRedis;
  let sentinel: PrivateSentinel;
  let rt: StateRuntime | undefined;

  before(async () => {
    master = await startRedis();
    replica = await startRedis({ replicaOf: master.port });
    const r = new Redis(replica.port, '127.0.0.1');
    await until(async () => /master_link_status:up/.test(await r.info('replication')), 20_000, 'the replica to sync');
    r.disconnect();
    sentinel = await startSentinel(master, { downAfterMs: 800 });
    // The sentinel learns about the replica from the master's INFO.
    await until(() => /127\.0\.0\.1/.test(spawnSync('redis-cli', ['-p', String(sentinel.port), 'sentinel', 'replicas', 'mymaster'], { encoding: 'utf8' }).stdout), 20_000, 'the sentinel to see the replica');
  });
  after(async () => {
    await rt?.close();
    await sentinel.close();
    await replica.close();
    await master.close();
  });

  it('follows a failover to the promoted replica', async () => {
    const cfg = parseStateConfig(
      {
        backend: 'redis',
        failMode: 'open',
        keyPrefix: uniquePrefix('sentinel'),
        probeInterval: '100ms',
        redis: { sentinels: [`127.0.0.1:${sentinel.port}`], sentinelName: 'mymaster', commandTimeout: '300ms', connectTimeout: '1s', maxReconnectDelay: '200ms' },
      },
      new At('test'),
      (p) => p,
    );
    rt = createState(cfg, pino({ level: 'silent' }));
    await rt.start();
    assert.equal(rt.degraded(), false);
    const key = 'sh:af:{ip:192.0.2.1}';
    for (let i = 0; i < 5; i++) await rt.store.record(key, HOUR, 1, Date.now());
    const m = new Redis(master.port, '127.0.0.1');
    assert.equal(await m.call('WAIT', '1', '2000'), 1, 'replicated before the master dies');
    m.disconnect();

    await master.kill();
    for (let i = 0; i < 3; i++) await rt.store.record(key, HOUR, 1, Date.now());
    assert.equal(rt.degraded(), true);
    await until(() => !rt!.degraded(), 25_000, 'the store to find the promoted replica');
    const r = new Redis(replica.port, '127.0.0.1');
    try {
      assert.match(await r.info('replication'), /role:master/);
    } finally {
      r.disconnect();
    }
    assert.equal(await rt.store.count(key, HOUR, Date.now()), 8);
  });
});
