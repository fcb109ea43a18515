/**
 * Containment at unit level: signals in the state store (new recipients,
 * networks, body fingerprints, refused recipients), scoring against a plan's
 * thresholds, the responses through the real policy engine (throttle, hold,
 * suspend with the account's flag), the escape hatches (allow-lists,
 * marking a pattern legitimate), the event's log/observer/webhook, and the
 * webhook's retry until the desk answers 2xx.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import type { Account } from '../../src/accounts/store';
import path from 'node:path';
import { loadContainment, parseContainment } from '../../src/containment/config';
import { registerContainmentRoutes } from '../../src/containment/admin-routes';
import { ContainedHooks, Containment, type ContainmentEvent } from '../../src/containment/containment';
import type { AdminServer, ApiRequest, ApiResponse } from '../../src/admin/server';
import { WebhookNotifier } from '../../src/containment/notifier';
import { bodyFingerprint, networkOf, Signals } from '../../src/containment/signals';
import type { ClientInfo } from '../../src/envelope';
import { keys } from '../../src/state/keys';
import { MemoryStore } from '../../src/state/memory';
import { account, engineFor, removePolicyDirs, T0 } from '../policy/fixtures';

after(removePolicyDirs);

const HOUR = 3_600_000;
const silent = pino({ level: 'silent' });

describe('signals', () => {
  it('counts new recipients and domains once per 30 days, and distinct AUTH networks per hour', async () => {
    const store = new MemoryStore();
    const sig = new Signals(store);
    const s = { kind: 'a' as const, id: 'alice' };
    await sig.recordMessage(s, ['a@x.example', 'b@x.example'], 'fp1', T0);
    await sig.recordMessage(s, ['a@x.example', 'c@y.example'], 'fp1', T0 + 1000);
    let v = await sig.read(s, 'fp1', T0 + 2000);
    assert.equal(v.rcpt1h, 4);
    assert.equal(v.newRecipientsPerHour, 3);
    assert.equal(v.newDomainsPerHour, 2);
    assert.equal(v.sameBodyPerDay, 4);
    // Writing to known correspondents a day later adds nothing new.
    await sig.recordMessage(s, ['a@x.example'], 'fp2', T0 + 25 * HOUR);
    v = await sig.read(s, 'fp2', T0 + 25 * HOUR);
    assert.equal(v.newRecipientsPerHour, 0);
    assert.equal(v.newRecipientsPerDay, 0);
    assert.equal(v.sameBodyPerDay, 1);
    for (const ip of ['198.51.100.1', '198.51.100.200', '203.0.113.5', '2001:db8:1:2::1']) await sig.recordAuth(s, ip, T0 + 26 * HOUR);
    assert.equal((await sig.read(s, undefined, T0 + 26 * HOUR)).authNetworksPerHour, 3);
    assert.equal((await sig.read(s, undefined, T0 + 28 * HOUR)).authNetworksPerHour, 0);
  });

  it('networks are /24 and /48; fingerprints ignore case, digits, whitespace and URL query strings', () => {
    assert.equal(networkOf('::ffff:198.51.100.7'), '198.51.100.0/24');
    assert.equal(networkOf('2001:db8:1:2::1'), '2001:db8:1::/48');
    assert.equal(bodyFingerprint('Hello Bob,\r\n  win 1000 at http://x.example/a?id=77'), bodyFingerprint('hello bob, win 25 at http://x.example/a?id=12'));
    assert.notEqual(bodyFingerprint('hello'), bodyFingerprint('goodbye'));
  });
});

const CFG = parseContainment(
  {
    defaults: { newRecipientsPerHour: 5, newRecipientsPerDay: 0, newDomainsPerHour: 0, volumeFloor: 0, refusedPerHour: 3, authNetworksPerHour: 3, sameBodyPerDay: 8, responses: { throttle: 1, hold: 2, suspend: 3 } },
    plans: { residential: {}, business: { newRecipientsPerHour: 50 } },
    allow: { accounts: ['vip@isp.example'] },
  },
  'containment.yaml',
);

function setup(extra: { notifier?: WebhookNotifier; accounts?: Account[] } = {}) {
  const clock = { now: T0 };
  const store = new MemoryStore();
  const accounts = new Map((extra.accounts ?? []).map((a) => [a.name, a]));
  const events: ContainmentEvent[] = [];
  const c = new Containment(CFG, {
    store,
    logger: silent,
    clock: () => clock.now,
    accounts: { get: (n) => accounts.get(n), upsert: async (n, f) => void accounts.set(n, f(accounts.get(n))!) },
    planOf: (_client, a) => a?.plan ?? 'residential',
    observer: { event: (e) => events.push(e) },
    ...(extra.notifier ? { notifier: extra.notifier } : {}),
  });
  return { c, clock, store, accounts, events };
}

const client = (user: string): ClientInfo => ({ listener: 'submission', role: 'submission', ip: '198.51.100.7', tls: true, user });

describe('containment.yaml', () => {
  it('the shipped file loads; a bad value is refused with file and key', () => {
    const c = loadContainment(path.resolve(__dirname, '../../../policies'));
    assert.equal(c.enabled, true);
    assert.equal(c.plans.get('business')?.newRecipientsPerHour, 20);
    assert.equal(c.plans.get('residential')?.responses.hold, 2);
    assert.ok(c.allowPlans.has('unlimited'));
    assert.throws(() => parseContainment({ plans: { residential: { refusedPerHour: -1 } } }, 'c.yaml'), /c\.yaml: plans\.residential\.refusedPerHour: expected a number/);
    assert.throws(() => parseContainment({ bogus: 1 }, 'c.yaml'), /bogus/);
  });
});

describe('scoring and responses', () => {
  it('one signal throttles, two hold, three suspend; thresholds are per plan', async () => {
    const { c, events, accounts } = setup({ accounts: [account('bob@isp.example'), account('shop@isp.example', { plan: 'business' })] });
    const bob = accounts.get('bob@isp.example')!;
    const rc = (n: number, tag: string) => Array.from({ length: n }, (_, i) => `${tag}${i}@far${i}.example`);
    assert.equal(await c.atData(client('bob@isp.example'), rc(4, 'a'), 'fp-a', bob), undefined);
    // 5 new recipients: throttle.
    assert.equal((await c.atData(client('bob@isp.example'), rc(1, 'b'), 'fp-b', bob))?.rule, 'containment.throttle');
    // …and the same body to 8: hold.
    const held = await c.atData(client('bob@isp.example'), rc(4, 'c'), 'fp-a', bob);
    // The hold keeps what it rested on (the console's verdict trail): not recomputed later.
    assert.deepEqual({ ...held, values: undefined }, { action: 'hold', stage: 'data', rule: 'containment.hold', values: undefined });
    assert.equal(held?.values?.fired, 'newRecipientsPerHour sameBodyPerDay');
    assert.equal(held?.values?.newRecipientsPerHour, 9);
    assert.equal(held?.values?.sameBodyPerDay, 8);
    assert.equal(held?.values?.score, 2);
    // …and refused recipients: suspend, with the account flag set.
    await c.recordDoorRefusal(client('bob@isp.example'), 3);
    const v = await c.atData(client('bob@isp.example'), rc(1, 'd'), 'fp-a', bob);
    assert.equal(v?.action, 'reject');
    assert.equal(v?.reply, 'account_suspended');
    assert.equal(accounts.get('bob@isp.example')!.suspended, true);
    assert.deepEqual(events.map((e) => e.response), ['throttle', 'hold', 'suspend']);
    assert.deepEqual(events[2]!.fired, ['newRecipientsPerHour', 'refusedPerHour', 'sameBodyPerDay']);
    assert.equal(events[2]!.evidence.recentRecipients.length, 10);
    // The business plan allows more strangers.
    const shop = accounts.get('shop@isp.example')!;
    assert.equal(await c.atData(client('shop@isp.example'), rc(7, 'e'), 'fp-e', shop), undefined);
  });

  it('allow-lists exempt; marking a pattern legitimate multiplies thresholds and lifts the response', async () => {
    const { c, accounts } = setup({ accounts: [account('vip@isp.example'), account('club@isp.example')] });
    const many = (tag: string, n: number) => Array.from({ length: n }, (_, i) => `${tag}${i}@x${i}.example`);
    assert.equal(await c.atData(client('vip@isp.example'), many('v', 30), 'fp', accounts.get('vip@isp.example')), undefined);
    const club = accounts.get('club@isp.example')!;
    assert.equal((await c.atData(client('club@isp.example'), many('m', 9), 'fp', club))?.action, 'hold');
    // Held: MAIL goes on, DATA is held, until the desk decides.
    assert.equal(await c.gate(client('club@isp.example'), 'mail', club), undefined);
    assert.equal((await c.status({ kind: 'a', id: 'club@isp.example' })).response, 'hold');
    await c.markLegitimate({ kind: 'a', id: 'club@isp.example' });
    assert.equal((await c.status({ kind: 'a', id: 'club@isp.example' })).legitimate, true);
    assert.equal(await c.gate(client('club@isp.example'), 'mail', club), undefined);
    assert.equal(await c.atData(client('club@isp.example'), many('n', 30), 'fp2', club), undefined);
  });
});

describe('external signals (complaints, content verdicts, DNSBL listings)', () => {
  it('one verified complaint holds a residential account at once, with its event; bad arguments are refused', async () => {
    const { c, events, accounts } = setup({ accounts: [account('bob@isp.example')] });
    const r = await c.external({ account: 'Bob@isp.example' }, 'complaint');
    assert.deepEqual(r, { subject: 'account:bob@isp.example', response: 'hold', score: 2, fired: ['complaints'] });
    assert.deepEqual(events.map((e) => [e.response, e.subject]), [['hold', 'account:bob@isp.example']]);
    // Sticky: the next message is held without any new signal.
    assert.equal((await c.atData(client('bob@isp.example'), ['a@known.example'], 'fp', accounts.get('bob@isp.example')))?.action, 'hold');
    await assert.rejects(c.external({ account: 'bob@isp.example' }, 'bogus' as never), /unknown signal/);
    await assert.rejects(c.external({ account: 'bob@isp.example' }, 'complaint', 0.5), /integer/);
    await assert.rejects(c.external({} as never, 'complaint'), /account/);
  });

  it('content verdicts count per day; a DNSBL listing of an intercept address is recorded and cleared', async () => {
    const { c } = setup({ accounts: [account('bob@isp.example')] });
    assert.equal((await c.external({ account: 'bob@isp.example' }, 'contentSpam', 2)).response, 'none');
    assert.deepEqual((await c.external({ account: 'bob@isp.example' }, 'contentSpam')).fired, ['contentSpam']);
    const listed = await c.external({ ip: '198.18.0.9' }, 'dnsblListed', 1);
    assert.deepEqual([listed.response, listed.fired], ['hold', ['dnsblListed']]);
    await c.release({ kind: 'ip', id: '198.18.0.9' });
    assert.equal((await c.external({ ip: '198.18.0.9' }, 'dnsblListed', 0)).response, 'none');
  });
});

describe('admin routes', () => {
  it('status, legitimate and release by account or ip', async () => {
    const { c, accounts } = setup({ accounts: [account('club@isp.example')] });
    const routes = new Map<string, (r: ApiRequest) => Promise<ApiResponse>>();
    registerContainmentRoutes({ route: (m: string, p: string, h: (r: ApiRequest) => Promise<ApiResponse>) => void routes.set(`${m} ${p}`, h) } as unknown as AdminServer, () => c);
    const call = (k: string, q: string) => routes.get(k)!({ query: new URLSearchParams(q) } as unknown as ApiRequest);
    const club = accounts.get('club@isp.example')!;
    await c.atData(client('club@isp.example'), Array.from({ length: 9 }, (_, i) => `m${i}@x${i}.example`), 'fp', club);
    assert.equal(((await call('GET /api/containment', 'account=club@isp.example')).body as { response: string }).response, 'hold');
    assert.equal((await call('GET /api/containment', 'account=club@isp.example&ip=192.0.2.1')).status, 400);
    assert.equal((await call('GET /api/containment', '')).status, 200, 'no subject: the list of recent subjects');
    assert.equal((await call('POST /api/containment/legitimate', 'account=club@isp.example&for=bogus')).status, 400);
    const r = await call('POST /api/containment/legitimate', 'account=club@isp.example&for=7d');
    assert.deepEqual([r.status, (r.body as { response: string; legitimate: boolean }).response, (r.body as { legitimate: boolean }).legitimate], [200, 'none', true]);
    assert.equal((await call('POST /api/containment/release', 'ip=198.51.100.7')).status, 200);
  });
});

describe('through the real policy engine', () => {
  it('containment only makes verdicts stricter: static quotas still apply, containment holds and suspends', async () => {
    const bob = account('bob@isp.example');
    const t = await engineFor({ 'quotas.yaml': 'plans: { residential: { recipientsPerMessage: 3 } }\ndefaultPlan: residential\n' }, { accounts: [bob] });
    const { c } = setup({ accounts: [bob] });
    const hooks = new ContainedHooks(() => t.engine, c);
    const cl = client('bob@isp.example');
    const tx = { client: cl, account: bob, mailFrom: 'bob@isp.example' };
    const send = async (rcpts: string[], fp: string) => {
      const m = await hooks.mail({ ...tx, recipients: [] });
      if (m.action !== 'accept') return m;
      const ok: string[] = [];
      for (const r of rcpts) if ((await hooks.rcpt({ ...tx, recipients: ok, rcpt: r })).action === 'accept') ok.push(r);
      return hooks.data({ ...tx, recipients: ok, size: 100, headerFrom: ['bob@isp.example'], receivedCount: 0, bodyFingerprint: fp });
    };
    assert.equal((await send(['a@a.example', 'b@b.example'], 'x')).action, 'accept');
    // The 4th recipient is refused by the static quota (and counted as refused at our door).
    const v = await send(['c@c.example', 'd@d.example', 'e@e.example', 'f@f.example'], 'x');
    assert.equal(v.action, 'tempfail');
    assert.equal(v.rule, 'containment.throttle');
    assert.equal((await hooks.mail({ ...tx, recipients: [] })).rule, 'containment.throttle');
  });
});

describe('an AUTH that fails in containment after the engine counted it', () => {
  it("gives the account's open connection back, so a store failure does not leave it counted until its TTL", async () => {
    const bob = account('bob@isp.example');
    const t = await engineFor({ 'quotas.yaml': 'plans: { residential: { concurrentConnections: 2 } }\ndefaultPlan: residential\n' }, { accounts: [bob] });
    const { c } = setup({ accounts: [bob] });
    // The state store fails between the engine's count and containment's record of the AUTH.
    c.recordAuth = async () => {
      throw new Error('state store unavailable');
    };
    const hooks = new ContainedHooks(() => t.engine, c);
    const key = keys.connections({ kind: 'a', id: 'bob@isp.example' });
    await assert.rejects(hooks.auth({ client: client('bob@isp.example'), user: 'bob@isp.example', phase: 'after', ok: true }), /state store unavailable/);
    // The session never learns that the AUTH counted (it failed), so it never gives it back at close.
    assert.equal(await t.store.get(key, T0), 0, 'no open connection left counted by the failed AUTH');
  });
});

describe('abuse desk webhook', () => {
  it('retries with backoff until the desk answers 2xx, with the account, signals and evidence', async () => {
    const bodies: unknown[] = [];
    let calls = 0;
    const server = http.createServer((req, res) => {
      let b = '';
      req.on('data', (d: Buffer) => (b += d.toString()));
      req.on('end', () => {
        calls++;
        bodies.push(JSON.parse(b));
        res.statusCode = calls <= 2 ? 503 : 204;
        res.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const slept: number[] = [];
      const notifier = new WebhookNotifier({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
        maxAttempts: 5,
        initialBackoffMs: 100,
        maxBackoffMs: 150,
        timeoutMs: 2000,
        sleep: async (ms) => void slept.push(ms),
      });
      const { c, accounts } = setup({ notifier, accounts: [account('bob@isp.example')] });
      await c.atData(client('bob@isp.example'), ['a@1.example', 'b@2.example', 'c@3.example', 'd@4.example', 'e@5.example'], 'fp', accounts.get('bob@isp.example'));
      await notifier.idle();
      assert.equal(calls, 3);
      assert.deepEqual(slept, [100, 150]);
      const ev = bodies[2] as ContainmentEvent;
      assert.equal(ev.account, 'bob@isp.example');
      assert.equal(ev.response, 'throttle');
      assert.equal(ev.signals.newRecipientsPerHour, 5);
      assert.deepEqual(ev.evidence.recentRecipients.slice(0, 2), ['a@1.example', 'b@2.example']);
      // Gives up after maxAttempts.
      const r = await new WebhookNotifier({ url: 'http://127.0.0.1:1/', maxAttempts: 2, initialBackoffMs: 1, maxBackoffMs: 1, timeoutMs: 500, sleep: async () => undefined }).send({});
      assert.deepEqual(r, { ok: false, attempts: 2 });
    } finally {
      server.close();
    }
  });
});
