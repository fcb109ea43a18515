/**
 * Egress pools in the delivery agent, over real SMTP on loopback: a test
 * relay on 127.0.0.2 records, per message, the client address and the EHLO
 * name it saw, and how many sessions were open at once from each source
 * address. Pools bind to distinct 127.0.0.x addresses.
 *
 *   bulk        127.0.0.20, 127.0.0.21   EHLO bulk.out.test      1 session per destination
 *   wide        127.0.0.22               EHLO wide.out.test      relay.concurrencyPerDestination (5)
 *   quarantine  127.0.0.23               EHLO quarantine.out.test
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { At, ConfigError } from '../../src/config/validate';
import { parseRelayConfig } from '../../src/relay/config';
import { createDeliveryAgent } from '../../src/relay/deliver';
import { parseEgressPools, parsePoolSelection, selectEgressPool } from '../../src/relay/egress';
import type { DeliveryAgent } from '../../src/relay/types';
import { startTestMx, type TestMx } from '../helpers/test-mx';
import { captureLogger, job, relayConfig } from './fixtures';

let mx: TestMx;
/** Sessions open now / at most at once, per client address. */
const open = new Map<string, number>();
const maxOpen = new Map<string, number>();

before(async () => {
  mx = await startTestMx({
    host: '127.0.0.2',
    // Keeps each transaction in flight long enough for concurrent deliveries to overlap.
    dataDelayMs: 150,
    extra: {
      onConnect(session, cb) {
        const n = (open.get(session.remoteAddress) ?? 0) + 1;
        open.set(session.remoteAddress, n);
        maxOpen.set(session.remoteAddress, Math.max(n, maxOpen.get(session.remoteAddress) ?? 0));
        cb();
      },
      onClose(session) {
        open.set(session.remoteAddress, (open.get(session.remoteAddress) ?? 1) - 1);
      },
    },
  });
});
after(() => mx.close());

const POOLS = {
  bulk: { addresses: ['127.0.0.20', '127.0.0.21'], heloName: 'bulk.out.test', maxConnectionsPerDestination: 1 },
  wide: { addresses: ['127.0.0.22'], heloName: 'wide.out.test' },
  quarantine: { addresses: ['127.0.0.23'], heloName: 'quarantine.out.test' },
};

function agentWith(selection: Record<string, unknown> = { default: 'wide', quarantine: 'quarantine' }): DeliveryAgent {
  const at = new At('smarthost.yaml', 'relay');
  const pools = parseEgressPools(POOLS, at.child('pools'));
  const cfg = relayConfig(undefined, 25, {
    relayhost: { host: '127.0.0.2', port: mx.port, tls: 'none' },
    pools,
    poolSelection: parsePoolSelection(selection, at.child('poolSelection'), pools),
    concurrencyPerDestination: 5,
    // No reuse: every transaction opens a session, so round-robin and limits are visible.
    poolIdleMs: 0,
  });
  return createDeliveryAgent(cfg, { hostname: 'gw.test', logger: captureLogger().logger });
}

function reset(): void {
  mx.messages.length = 0;
  maxOpen.clear();
}

describe('egress pools', () => {
  it('leaves from the recorded pool: its addresses round-robin, its EHLO name', async () => {
    reset();
    const agent = agentWith();
    try {
      for (let i = 0; i < 4; i++) assert.equal((await agent.deliver(job([`b${i}@dest.test`], { pool: 'bulk' })))[0]!.kind, 'delivered');
      assert.equal((await agent.deliver(job(['w@dest.test'], { pool: 'wide' })))[0]!.kind, 'delivered');
    } finally {
      await agent.close();
    }
    const seen = mx.messages.map((m) => `${m.rcptTo[0]} ${m.remoteAddress} ${m.helo}`);
    assert.deepEqual(seen, [
      'b0@dest.test 127.0.0.20 bulk.out.test',
      'b1@dest.test 127.0.0.21 bulk.out.test',
      'b2@dest.test 127.0.0.20 bulk.out.test',
      'b3@dest.test 127.0.0.21 bulk.out.test',
      'w@dest.test 127.0.0.22 wide.out.test',
    ]);
  });

  it('a message without a pool, or whose pool left the config, leaves from the default pool', async () => {
    reset();
    const agent = agentWith();
    try {
      await agent.deliver(job(['none@dest.test']));
      await agent.deliver(job(['gone@dest.test'], { pool: 'removed-since' }));
    } finally {
      await agent.close();
    }
    assert.deepEqual(mx.messages.map((m) => m.remoteAddress), ['127.0.0.22', '127.0.0.22']);
  });

  it('a message released from hold leaves from the quarantine pool', async () => {
    reset();
    const agent = agentWith();
    try {
      await agent.deliver(job(['held@dest.test'], { pool: 'bulk', released: true }));
    } finally {
      await agent.close();
    }
    assert.deepEqual(mx.messages.map((m) => `${m.remoteAddress} ${m.helo}`), ['127.0.0.23 quarantine.out.test']);
  });

  it("enforces each pool's own per-destination connection limit; extra jobs wait, none fail", async () => {
    reset();
    const agent = agentWith();
    try {
      const jobs = [
        ...Array.from({ length: 6 }, (_, i) => job([`lim${i}@dest.test`], { pool: 'bulk' })),
        ...Array.from({ length: 6 }, (_, i) => job([`wide${i}@dest.test`], { pool: 'wide' })),
      ];
      const outcomes = await Promise.all(jobs.map((j) => agent.deliver(j)));
      assert.ok(outcomes.every(([o]) => o!.kind === 'delivered'), JSON.stringify(outcomes));
    } finally {
      await agent.close();
    }
    const bulk = (maxOpen.get('127.0.0.20') ?? 0) + (maxOpen.get('127.0.0.21') ?? 0);
    // bulk: at most 1 session at a time (summing per-address maxima can only overcount).
    assert.ok((maxOpen.get('127.0.0.20') ?? 0) <= 1 && (maxOpen.get('127.0.0.21') ?? 0) <= 1, `bulk sessions at once: ${JSON.stringify([...maxOpen])}`);
    assert.ok(bulk >= 1);
    // wide has no limit of its own: relay.concurrencyPerDestination lets it overlap (so the test could see overlap).
    assert.ok((maxOpen.get('127.0.0.22') ?? 0) > 1, `wide sessions at once: ${maxOpen.get('127.0.0.22')}`);
  });
});

describe('egress pool configuration', () => {
  const at = new At('smarthost.yaml', 'relay');
  const refuses = (relay: Record<string, unknown>, key: string, reason: RegExp): void => {
    assert.throws(
      () => parseRelayConfig({ dns: {}, ...relay }, at, '/tmp'),
      (e: unknown) => e instanceof ConfigError && e.file === 'smarthost.yaml' && e.key === key && reason.test(e.reason),
      `${key} ${reason}`,
    );
  };

  it('names file and key for bad pools and unknown pool references', () => {
    refuses({ pools: { biz: { addresses: ['10.0.0.300'], heloName: 'o.test' } } }, 'relay.pools.biz.addresses[0]', /not an IP address/);
    refuses({ pools: { biz: { addresses: [], heloName: 'o.test' } } }, 'relay.pools.biz.addresses', /at least one/);
    refuses({ pools: { biz: { addresses: ['192.0.2.1', '2001:db8::1'], heloName: 'o.test' } } }, 'relay.pools.biz.addresses[1]', /mixes IPv4 and IPv6/);
    refuses({ pools: { biz: { addresses: ['192.0.2.1'] } } }, 'relay.pools.biz.heloName', /required|missing|expected/);
    refuses({ pools: { biz: { addresses: ['192.0.2.1'], heloName: 'o.test', maxConnectionsPerDestination: 0 } } }, 'relay.pools.biz.maxConnectionsPerDestination', /./);
    const pools = { biz: { addresses: ['192.0.2.1'], heloName: 'o.test' } };
    refuses({ pools, poolSelection: { byPlan: { business: 'bizz' } } }, 'relay.poolSelection.byPlan.business', /unknown pool "bizz"/);
    refuses({ pools, poolSelection: { byClass: { residential: 'res' } } }, 'relay.poolSelection.byClass.residential', /unknown pool "res"/);
    refuses({ pools, poolSelection: { default: 'nope' } }, 'relay.poolSelection.default', /unknown pool/);
    refuses({ pools, poolSelection: { quarantine: 'q' } }, 'relay.poolSelection.quarantine', /unknown pool/);
    refuses({ pools, poolSelection: { byNetblock: {} } }, 'relay.poolSelection.byNetblock', /unknown key/);
  });

  it('selects by plan first, then class, then default, naming the rule', () => {
    const pools = parseEgressPools({ biz: { addresses: ['192.0.2.1'], heloName: 'b.test' }, res: { addresses: ['192.0.2.2'], heloName: 'r.test' } }, at.child('pools'));
    const sel = parsePoolSelection({ byPlan: { business: 'biz' }, byClass: { residential: 'res' }, default: 'res' }, at.child('poolSelection'), pools);
    assert.deepEqual(selectEgressPool(sel, { plan: 'business', netblockClass: 'residential' }), { pool: 'biz', rule: 'relay.poolSelection.byPlan.business' });
    assert.deepEqual(selectEgressPool(sel, { netblockClass: 'residential' }), { pool: 'res', rule: 'relay.poolSelection.byClass.residential' });
    assert.deepEqual(selectEgressPool(sel, { plan: 'default' }), { pool: 'res', rule: 'relay.poolSelection.default' });
    assert.equal(selectEgressPool(undefined, { plan: 'business' }), undefined);
  });
});
