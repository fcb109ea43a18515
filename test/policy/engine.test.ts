/**
 * The policy engine at unit level, with an injected clock and a memory
 * store: restriction-list semantics (first refusal wins, permit, hold,
 * warnOnly, stated defaults, built-in gates), quotas at their edge and one
 * past it across the sliding window, what is counted and what is taken
 * back, connection counts, failed-AUTH delays and lockouts, sender
 * identity, account state, DNSBL actions per listener against a real DNS
 * server, and the log line and observer call of each decision.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { keys } from '../../src/state/keys';
import { slotStamp } from '../../src/state/store';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { account, engineFor, intercept, removePolicyDirs, submission, T0, type TestEngine } from './fixtures';

const NB = 'netblocks:\n  - { cidr: 198.51.100.0/24, class: residential-dynamic }\n  - { cidr: 203.0.113.0/24, class: business }\n  - { cidr: 2001:db8:1000::/36, class: residential-dynamic }\n';
const HOUR = 3_600_000;

after(removePolicyDirs);

describe('restriction lists', () => {
  it('the netblock gate is built in: no permit can open the intercept port to outsiders', async () => {
    const { engine } = await engineFor({
      'netblocks.yaml': NB,
      'everyone.txt': '0.0.0.0/0\n::/0\n',
      'rules.yaml': 'stages:\n  connect:\n    - { id: allow.all, check: client-list, file: everyone.txt, onMatch: permit }\n',
    });
    const out = await engine.connect({ listener: { name: 'intercept', role: 'intercept' } as never, ip: '192.0.2.1' });
    assert.deepEqual(out.verdict, { action: 'reject', stage: 'connect', rule: 'relay.netblock-gate', reply: 'relay_denied' });
    const inside = await engine.connect({ listener: { name: 'intercept', role: 'intercept' } as never, ip: '::ffff:198.51.100.7' });
    assert.equal(inside.verdict.action, 'accept');
    assert.equal(inside.verdict.rule, 'allow.all');
    assert.equal(inside.netblockClass, 'residential-dynamic');
  });

  it('first refusal wins; permit stops the list; hold does not hide a later refusal; the default ends it', async () => {
    const { engine } = await engineFor({
      'netblocks.yaml': NB,
      'vip.txt': 'vip@dest.example\n',
      'trap.txt': 'trap@dest.example\n',
      'watch.txt': 'dest.example\n',
      'rules.yaml': `
defaults: { rcpt: { action: reject, reply: recipient_relay_denied } }
stages:
  rcpt:
    - { id: rcpt.vip, check: recipient-list, file: vip.txt, onMatch: permit }
    - { id: rcpt.watch, check: recipient-list, file: watch.txt, onMatch: hold }
    - { id: rcpt.trap, check: recipient-list, file: trap.txt, onMatch: reject }
    - { id: rcpt.known, check: recipient-list, file: watch.txt, onMatch: permit }
`,
    });
    const r = async (rcpt: string) => (await engine.evaluate('rcpt', { ...intercept('198.51.100.7'), mailFrom: 'a@home.example', rcpt }, 'live')).verdict;
    assert.deepEqual(await r('vip@dest.example'), { action: 'accept', stage: 'rcpt', rule: 'rcpt.vip' });
    assert.deepEqual(await r('trap@dest.example'), { action: 'reject', stage: 'rcpt', rule: 'rcpt.trap', reply: 'policy_reject' });
    // Held by rcpt.watch, then permitted by rcpt.known: the hold stands, with what the rule matched (kept with the message).
    assert.deepEqual(await r('x@dest.example'), { action: 'hold', stage: 'rcpt', rule: 'rcpt.watch', values: { rcpt: 'x@dest.example', list: 'watch.txt', match: 'dest.example (watch.txt:1)' } });
    // Nothing matched: the stated default.
    assert.deepEqual(await r('x@other.example'), { action: 'reject', stage: 'rcpt', rule: 'rcpt.default', reply: 'recipient_relay_denied' });
  });

  it('warnOnly rules log what they would do and change nothing', async () => {
    const { engine, logs } = await engineFor({
      'netblocks.yaml': NB,
      'block.txt': '198.51.100.0/24\n',
      'rules.yaml': 'stages:\n  connect:\n    - { id: trial.block, check: client-list, file: block.txt, onMatch: reject, warnOnly: true }\n',
    });
    const r = await engine.evaluate('connect', intercept('198.51.100.7'), 'live');
    assert.equal(r.verdict.action, 'accept');
    // The trace (explain) marks it.
    const x = await engine.evaluate('connect', intercept('198.51.100.7'), 'explain');
    assert.equal(x.steps.find((s) => s.rule === 'trial.block')?.warnOnly, true);
    assert.ok(logs.some((l) => l.rule === 'trial.block' && l.would === 'reject' && l.warnOnly === true));
  });

  it('selectors: listeners, classes and plans', async () => {
    const { engine } = await engineFor({
      'netblocks.yaml': NB,
      'all.txt': '0.0.0.0/0\n',
      'quotas.yaml': 'plans: { residential: {}, business: {} }\nclassPlans: { business: business, residential-dynamic: residential }\n',
      'rules.yaml': `
stages:
  connect:
    - { id: only.business, check: client-list, file: all.txt, onMatch: hold, classes: [business] }
    - { id: only.submission, check: client-list, file: all.txt, onMatch: reject, listeners: [submission] }
    - { id: only.residential, check: client-list, file: all.txt, onMatch: tempfail, plans: [residential], listeners: [intercept] }
`,
    });
    assert.equal((await engine.evaluate('connect', intercept('203.0.113.5'), 'live')).verdict.rule, 'only.business');
    assert.equal((await engine.evaluate('connect', submission('192.0.2.1'), 'live')).verdict.rule, 'only.submission');
    const res = await engine.evaluate('connect', intercept('198.51.100.5'), 'explain');
    assert.equal(res.verdict.rule, 'only.residential');
    assert.equal(res.steps.find((s) => s.rule === 'only.business')?.outcome, 'skipped');
  });

  it('refuses mail on mx listeners except for relayDomains', async () => {
    const { engine } = await engineFor({ 'netblocks.yaml': NB, 'rules.yaml': 'relayDomains: [isp.example]\n' });
    const mx = { listener: { name: 'mx', role: 'mx' as const }, ip: '192.0.2.1', mailFrom: 'x@y.example' };
    assert.equal((await engine.evaluate('rcpt', { ...mx, rcpt: 'a@isp.example' }, 'live')).verdict.action, 'accept');
    assert.deepEqual((await engine.evaluate('rcpt', { ...mx, rcpt: 'a@elsewhere.example' }, 'live')).verdict, { action: 'reject', stage: 'rcpt', rule: 'relay.mx-domains', reply: 'recipient_relay_denied' });
  });

  it('address-literal recipients are refused by a built-in gate on every listener: no permit skips it', async () => {
    const { engine, logs } = await engineFor({
      'netblocks.yaml': NB,
      'everyone.txt': '0.0.0.0/0\n::/0\n',
      'rules.yaml': 'relayDomains: [isp.example]\nstages:\n  rcpt:\n    - { id: allow.all, check: client-list, file: everyone.txt, onMatch: permit }\n',
    });
    const mx = { listener: { name: 'mx', role: 'mx' as const }, ip: '192.0.2.1' };
    const refused = { action: 'reject', stage: 'rcpt', rule: 'relay.address-literal', reply: 'literal_recipient' };
    // As the session gives them, and as Postfix's policy service or milter may (case as written).
    for (const rcpt of ['x@[192.0.2.1]', 'x@[IPv6:::1]', 'X@[ipv6:2001:DB8::1]', '"a@b"@[10.0.0.1]']) {
      for (const who of [intercept('198.51.100.7'), submission('198.51.100.7', account('alice@isp.example')), mx]) {
        assert.deepEqual((await engine.evaluate('rcpt', { ...who, mailFrom: 'a@home.example', rcpt }, 'live')).verdict, refused, `${who.listener.name} ${rcpt}`);
      }
    }
    // Not a literal: the rules decide as before.
    assert.equal((await engine.evaluate('rcpt', { ...intercept('198.51.100.7'), rcpt: 'x@dest.example' }, 'live')).verdict.rule, 'allow.all');
    assert.equal((await engine.evaluate('rcpt', { ...intercept('198.51.100.7'), rcpt: 'postmaster' }, 'live')).verdict.rule, 'allow.all');
    assert.equal((await engine.evaluate('rcpt', { ...mx, rcpt: 'x@elsewhere.example' }, 'live')).verdict.rule, 'relay.mx-domains');
    // Logged like every refusal, and explained with the domain it saw.
    const line = logs.find((l) => l.evt === 'policy' && l.rule === 'relay.address-literal' && l.rcpt === 'x@[192.0.2.1]');
    assert.ok(line, JSON.stringify(logs));
    assert.equal(line.action, 'reject');
    assert.equal(line.reply, 'literal_recipient');
    const x = await engine.evaluate('rcpt', { ...intercept('198.51.100.7'), rcpt: 'x@[IPv6:::1]' }, 'explain');
    assert.deepEqual(x.steps[0], { rule: 'relay.address-literal', check: 'address-literal', builtin: true, outcome: 'reject', reply: 'literal_recipient', inputs: { domain: '[IPv6:::1]' }, note: 'the recipient domain is an address literal' });
  });

  it('logs every live decision with its rule id and tells the observer', async () => {
    const seen: string[] = [];
    const { engine, logs } = await engineFor({ 'netblocks.yaml': NB }, { observer: { verdict: (v) => seen.push(`${v.stage}:${v.action}:${v.rule}`) } });
    await engine.connect({ listener: { name: 'intercept', role: 'intercept' } as never, ip: '192.0.2.9' });
    assert.deepEqual(seen, ['connect:reject:relay.netblock-gate']);
    const line = logs.find((l) => l.evt === 'policy' && l.rule === 'relay.netblock-gate');
    assert.ok(line, JSON.stringify(logs));
    assert.equal(line.level, 30);
    assert.equal(line.ip, '192.0.2.9');
    await engine.evaluate('connect', intercept('198.51.100.1'), 'explain');
    assert.equal(seen.length, 1, 'explain is not a live decision');
  });
});

describe('quotas', () => {
  const QUOTAS = `
plans:
  residential: { messagesPerHour: 2, recipientsPerHour: 3, recipientsPerDay: 5, recipientsPerMessage: 2, concurrentConnections: 2, maxMessageSize: 10k }
  business: { recipientsPerHour: 3, onExceed: hold }
defaultPlan: residential
classPlans: { residential-dynamic: residential, business: business }
overrides:
  accounts:
    bob@isp.example: { messagesPerHour: 3 }
  ips:
    198.51.100.99: { recipientsPerHour: unlimited }
`;

  it('recipients per hour: up to the edge, one past it refused and not counted, and the window slides', async () => {
    const { engine, store, clock } = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': QUOTAS });
    const ip = '198.51.100.7';
    const rcpt = async (n: number) => (await engine.evaluate('rcpt', { ...intercept(ip), mailFrom: 'a@h.example', recipients: [], rcpt: `r${n}@d.example` }, 'live')).verdict;
    for (let i = 1; i <= 3; i++) {
      assert.equal((await rcpt(i)).action, 'accept', `rcpt ${i}`);
      clock.now += 60_000;
    }
    const over = await rcpt(4);
    assert.equal(over.action, 'tempfail');
    assert.equal(over.reply, 'rate_limited');
    assert.equal(over.rule, 'quota.recipients:recipientsPerHour');
    assert.match(over.detail!, /recipientsPerHour 3 reached; try again in \d+m/);
    const key = keys.quota({ kind: 'ip', id: ip }, 'recipientsPerHour');
    assert.equal(await store.count(key, HOUR, clock.now), 3, 'the refused RCPT was not counted');
    assert.equal(await store.count(keys.quota({ kind: 'ip', id: ip }, 'recipientsPerDay'), 24 * HOUR, clock.now), 3, 'nor in the daily count');
    // The first recipient leaves the window (an hour and its slot later): exactly one more fits.
    clock.now = slotStamp(HOUR, T0) + HOUR;
    assert.equal((await rcpt(5)).action, 'accept');
    assert.equal((await rcpt(6)).action, 'tempfail');
    // The daily limit (5) bites next, even when the hour has room.
    clock.now += 2 * HOUR;
    assert.equal((await rcpt(7)).action, 'accept');
    const daily = await rcpt(8);
    assert.equal(daily.rule, 'quota.recipients:recipientsPerDay');
  });

  it('recipients per message, message size, and an override lifting a limit', async () => {
    const { engine } = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': QUOTAS });
    const f = { ...intercept('198.51.100.8'), mailFrom: 'a@h.example' };
    assert.equal((await engine.evaluate('rcpt', { ...f, recipients: ['a@x'], rcpt: 'b@x' }, 'live')).verdict.action, 'accept');
    const third = (await engine.evaluate('rcpt', { ...f, recipients: ['a@x', 'b@x'], rcpt: 'c@x' }, 'live')).verdict;
    assert.deepEqual([third.action, third.reply, third.rule], ['tempfail', 'too_many_recipients', 'quota.recipients:recipientsPerMessage']);
    const big = (await engine.evaluate('data', { ...f, recipients: ['a@x'], headerFrom: [], size: 20_000 }, 'live')).verdict;
    assert.deepEqual([big.action, big.reply, big.rule], ['reject', 'too_big', 'quota.size:maxMessageSize']);
    const vip = { ...intercept('198.51.100.99'), mailFrom: 'a@h.example', recipients: [] };
    for (let i = 0; i < 5; i++) assert.equal((await engine.evaluate('rcpt', { ...vip, rcpt: `r${i}@x` }, 'live')).verdict.action, 'accept');
  });

  it('messages per hour: checked at MAIL, counted once at end of DATA, per account with overrides', async () => {
    const alice = account('alice@isp.example');
    const bob = account('bob@isp.example');
    const { engine, store, clock } = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': QUOTAS }, { accounts: [alice, bob] });
    const send = async (a: typeof alice) => {
      const f = { ...submission('192.0.2.1', a), mailFrom: a.name };
      const m = (await engine.evaluate('mail', f, 'live')).verdict;
      if (m.action !== 'accept') return m;
      return (await engine.evaluate('data', { ...f, recipients: ['x@d.example'], headerFrom: [a.name], size: 100 }, 'live')).verdict;
    };
    assert.equal((await send(alice)).action, 'accept');
    // A MAIL that never reaches DATA counts nothing.
    await engine.evaluate('mail', { ...submission('192.0.2.1', alice), mailFrom: alice.name }, 'live');
    assert.equal(await store.count(keys.quota({ kind: 'a', id: alice.name }, 'messagesPerHour'), HOUR, clock.now), 1);
    assert.equal((await send(alice)).action, 'accept');
    const third = await send(alice);
    assert.deepEqual([third.stage, third.action, third.rule], ['mail', 'tempfail', 'quota.messages:messagesPerHour']);
    // bob's override: 3 per hour.
    for (let i = 0; i < 3; i++) assert.equal((await send(bob)).action, 'accept');
    assert.equal((await send(bob)).action, 'tempfail');
  });

  it('overrides bite without any plan, and where nothing limits, a live decision touches no state and explain still says unlimited', async () => {
    // No plans, no defaultPlan: only overrides. The shortcut for "no plan applies" must still find them.
    const only = 'overrides:\n  accounts:\n    bob@isp.example: { recipientsPerHour: 1 }\n  ips:\n    198.51.100.50: { recipientsPerHour: 1 }\n';
    const alice = account('alice@isp.example');
    const bob = account('bob@isp.example');
    const { engine } = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': only }, { accounts: [alice, bob] });
    const rcpt = async (f: ReturnType<typeof intercept>, n: number) => (await engine.evaluate('rcpt', { ...f, mailFrom: 'a@h.example', recipients: [], rcpt: `r${n}@d.example` }, 'live')).verdict;
    assert.equal((await rcpt(intercept('198.51.100.50'), 1)).action, 'accept');
    assert.deepEqual([(await rcpt(intercept('198.51.100.50'), 2)).action, (await rcpt(intercept('198.51.100.50'), 3)).rule], ['tempfail', 'quota.recipients:recipientsPerHour']);
    assert.equal((await rcpt(submission('192.0.2.1', bob), 1)).action, 'accept');
    assert.equal((await rcpt(submission('192.0.2.1', bob), 2)).rule, 'quota.recipients:recipientsPerHour');
    for (let i = 0; i < 5; i++) {
      assert.equal((await rcpt(intercept('198.51.100.51'), i)).action, 'accept', 'an address without an override is not limited');
      assert.equal((await rcpt(submission('192.0.2.1', alice), i)).action, 'accept', 'an account without an override is not limited');
    }

    // No quotas.yaml at all: the quota rules of every stage decide without one state operation.
    const none = await engineFor({ 'netblocks.yaml': NB }, { accounts: [alice] });
    const ops: string[] = [];
    for (const m of ['hit', 'hitMany', 'peekMany', 'get', 'incr', 'record', 'count'] as const) {
      const orig = none.store[m].bind(none.store) as (...a: unknown[]) => unknown;
      (none.store as unknown as Record<string, unknown>)[m] = (...a: unknown[]) => (ops.push(m), orig(...a));
    }
    for (const f of [intercept('198.51.100.7'), submission('192.0.2.1', alice)]) {
      const from = f.account?.name ?? 'a@h.example';
      const facts = { ...f, mailFrom: from, recipients: ['x@d.example'], rcpt: 'y@d.example', headerFrom: [from], size: 100 };
      for (const stage of ['mail', 'rcpt', 'data'] as const) assert.equal((await none.engine.evaluate(stage, facts, 'live')).verdict.action, 'accept', stage);
    }
    assert.deepEqual(ops, [], 'no state operations without quotas');
    const x = await none.engine.evaluate('rcpt', { ...intercept('198.51.100.7'), mailFrom: 'a@h.example', recipients: [], rcpt: 'y@d.example' }, 'explain');
    const step = x.steps.find((st) => st.rule === 'quota.recipients');
    assert.equal(step?.outcome, 'next');
    assert.deepEqual([step?.inputs?.recipientsPerHour, step?.inputs?.recipientsPerDay, step?.inputs?.plan], ['unlimited', 'unlimited', 'none']);
  });

  it('takes back what a quota counted when a later rule of the stage refuses', async () => {
    const { engine, store, clock } = await engineFor({
      'netblocks.yaml': NB,
      'quotas.yaml': QUOTAS,
      'trap.txt': 'trap@d.example\n',
      'rules.yaml': `
stages:
  rcpt:
    - { id: quota.recipients, check: quota, limits: [recipientsPerHour, recipientsPerDay] }
    - { id: rcpt.trap, check: recipient-list, file: trap.txt, onMatch: reject }
`,
    });
    const f = { ...intercept('198.51.100.7'), mailFrom: 'a@h.example', recipients: [] };
    assert.equal((await engine.evaluate('rcpt', { ...f, rcpt: 'ok@d.example' }, 'live')).verdict.action, 'accept');
    assert.equal((await engine.evaluate('rcpt', { ...f, rcpt: 'trap@d.example' }, 'live')).verdict.action, 'reject');
    const subj = { kind: 'ip' as const, id: '198.51.100.7' };
    assert.equal(await store.count(keys.quota(subj, 'recipientsPerHour'), HOUR, clock.now), 1);
    assert.equal(await store.count(keys.quota(subj, 'recipientsPerDay'), 24 * HOUR, clock.now), 1);
  });

  it('holds instead of deferring when the plan says so', async () => {
    const quotaHits: string[] = [];
    const { engine } = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': QUOTAS }, { observer: { quotaHit: (l) => quotaHits.push(l) } });
    const f = { ...intercept('203.0.113.5'), mailFrom: 'a@h.example', recipients: [] };
    for (let i = 0; i < 3; i++) assert.equal((await engine.evaluate('rcpt', { ...f, rcpt: `r${i}@x` }, 'live')).verdict.action, 'accept');
    const v = (await engine.evaluate('rcpt', { ...f, rcpt: 'r9@x' }, 'live')).verdict;
    assert.deepEqual([v.action, v.rule], ['hold', 'quota.recipients:recipientsPerHour']);
    assert.deepEqual(quotaHits, ['recipientsPerHour']);
  });

  it('counts connections per address (intercept) and per account (submission)', async () => {
    const alice = account('alice@isp.example');
    const { engine, store, clock } = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': QUOTAS }, { accounts: [alice] });
    const l = { name: 'intercept', role: 'intercept' } as never;
    const client = { listener: 'intercept', role: 'intercept' as const, ip: '198.51.100.7', tls: false };
    const first = await engine.connect({ listener: l, ip: client.ip });
    assert.equal(first.verdict.action, 'accept');
    assert.equal(first.countedConnection, true, 'a quota limits connections: counted');
    assert.equal((await engine.connect({ listener: l, ip: client.ip })).verdict.action, 'accept');
    const third = await engine.connect({ listener: l, ip: client.ip });
    assert.deepEqual([third.verdict.action, third.verdict.reply], ['tempfail', 'too_many_connections_ip']);
    engine.disconnect({ client, countedConnection: first.countedConnection, countedAccount: false });
    engine.disconnect({ client, countedConnection: third.countedConnection, countedAccount: false });
    await new Promise((r) => setImmediate(r));
    assert.equal(await store.get(keys.connections({ kind: 'ip', id: client.ip }), clock.now), 1);
    assert.equal((await engine.connect({ listener: l, ip: client.ip })).verdict.action, 'accept');

    // Submission: counted when AUTH succeeds, checked at MAIL, released at disconnect.
    const sclient = { listener: 'submission', role: 'submission' as const, ip: '192.0.2.1', tls: true, user: alice.name };
    for (let i = 0; i < 3; i++) await engine.auth({ client: sclient, user: alice.name, phase: 'after', ok: true });
    const mail = await engine.mail({ client: sclient, account: alice, mailFrom: alice.name, recipients: [] });
    assert.deepEqual([mail.action, mail.rule], ['tempfail', 'quota.connections:concurrentConnections']);
    engine.disconnect({ client: sclient, countedConnection: false, countedAccount: true });
    await new Promise((r) => setImmediate(r));
    assert.equal((await engine.mail({ client: sclient, account: alice, mailFrom: alice.name, recipients: [] })).action, 'accept');
  });

  it('counts an address\'s connections only when a quota limits them, and a reload in between never makes the count drift', async () => {
    const l = { name: 'intercept', role: 'intercept' } as never;
    const client = { listener: 'intercept', role: 'intercept' as const, ip: '198.51.100.8', tls: false };
    const key = keys.connections({ kind: 'ip', id: client.ip });
    // No plan limits connections: nothing is counted (one state-store round trip each way saved).
    const unlimited = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': 'plans:\n  residential: { messagesPerHour: 5 }\ndefaultPlan: residential\n' });
    const before = await unlimited.engine.connect({ listener: l, ip: client.ip });
    assert.equal(before.verdict.action, 'accept');
    assert.equal(before.countedConnection, false);
    assert.equal(await unlimited.store.get(key, unlimited.clock.now), 0, 'not counted');
    // A reload adds concurrentConnections 2 while that connection is open (same store).
    const limited = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': QUOTAS }, { store: unlimited.store });
    limited.clock.now = unlimited.clock.now;
    const a = await limited.engine.connect({ listener: l, ip: client.ip });
    assert.equal(a.countedConnection, true);
    // The connection from before the reload closes: it gives back nothing it did not take.
    limited.engine.disconnect({ client, countedConnection: before.countedConnection, countedAccount: false });
    await new Promise((r) => setImmediate(r));
    assert.equal(await limited.store.get(key, limited.clock.now), 1, 'the count did not drift below what is open and counted');
    assert.equal((await limited.engine.connect({ listener: l, ip: client.ip })).verdict.action, 'accept');
    const third = await limited.engine.connect({ listener: l, ip: client.ip });
    assert.deepEqual([third.verdict.action, third.verdict.reply], ['tempfail', 'too_many_connections_ip'], 'the limit holds for connections made after the reload');
  });

  it('a client Postfix authenticated (its SASL user, never counted here) does not take back the account\'s own connections', async () => {
    const alice = account('alice@isp.example');
    const { engine, store, clock } = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': QUOTAS }, { accounts: [alice] });
    const key = keys.connections({ kind: 'a', id: alice.name });
    // Three of alice's own AUTHed connections are open (the plan allows 2).
    const sclient = { listener: 'submission', role: 'submission' as const, ip: '192.0.2.1', tls: true, user: alice.name };
    for (let i = 0; i < 3; i++) await engine.auth({ client: sclient, user: alice.name, phase: 'after', ok: true });
    // Meanwhile the policy service and the milter connect and disconnect per request, with Postfix's SASL user.
    const viaPostfix = { listener: 'postfix-submission', role: 'submission' as const, ip: '192.0.2.9', tls: true, user: alice.name };
    for (let i = 0; i < 3; i++) engine.disconnect({ client: viaPostfix, countedConnection: false, countedAccount: false });
    await new Promise((r) => setImmediate(r));
    assert.equal(await store.get(key, clock.now), 3, 'nothing given back that was never taken');
    const mail = await engine.mail({ client: sclient, account: alice, mailFrom: alice.name, recipients: [] });
    assert.deepEqual([mail.action, mail.rule], ['tempfail', 'quota.connections:concurrentConnections'], 'the limit still holds');
  });

  it('counts an account\'s connections only when a quota limits them, and a reload in between never makes the count drift', async () => {
    const alice = account('alice@isp.example');
    const key = keys.connections({ kind: 'a', id: alice.name });
    const sclient = { listener: 'submission', role: 'submission' as const, ip: '192.0.2.1', tls: true, user: alice.name };
    const NO_LIMIT = 'plans:\n  residential: { messagesPerHour: 5 }\ndefaultPlan: residential\n';
    const unlimited = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': NO_LIMIT }, { accounts: [alice] });
    const { store, clock } = unlimited;
    // Every change to alice's counter, as the store is asked for it.
    const changes: number[] = [];
    const incr = store.incr.bind(store);
    store.incr = (k, by, ttlMs, now) => {
      if (k === key) changes.push(by);
      return incr(k, by, ttlMs, now);
    };
    const settled = () => new Promise((r) => setImmediate(r));
    const auth = async (e: TestEngine) => (await e.engine.auth({ client: sclient, user: alice.name, phase: 'after', ok: true })).countedAccount;

    // (a) No quota limits alice's connections: the AUTH counts nothing, the store holds no counter.
    const before = await auth(unlimited);
    assert.equal(before, false);
    assert.deepEqual(changes, [], 'not one state-store update');
    assert.equal(await store.get(key, clock.now), 0);
    assert.equal(await store.ttl(key, clock.now), 0, 'no counter at all');

    // (c) A reload adds concurrentConnections 2 (the residential plan) while that connection is open (same store).
    const limited = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': QUOTAS }, { accounts: [alice], store });
    limited.clock.now = clock.now;
    // (b) Connections authenticated after it are counted.
    const after = [await auth(limited), await auth(limited), await auth(limited)];
    assert.deepEqual(after, [true, true, true]);
    assert.equal(await store.get(key, clock.now), 3);
    // The connection from before the reload closes: it gives back nothing it did not take.
    limited.engine.disconnect({ client: sclient, countedConnection: false, countedAccount: before });
    await settled();
    assert.equal(await store.get(key, clock.now), 3, 'the count did not drift below what is open and counted');
    const mail = await limited.engine.mail({ client: sclient, account: alice, mailFrom: alice.name, recipients: [] });
    assert.deepEqual([mail.action, mail.rule], ['tempfail', 'quota.connections:concurrentConnections'], 'the limit holds for connections made after the reload');
    // (b) A counted connection is given back at disconnect.
    limited.engine.disconnect({ client: sclient, countedConnection: false, countedAccount: after[0]! });
    await settled();
    assert.equal(await store.get(key, clock.now), 2);

    // (c) A reload removes the limit: what was taken is still given back, and nothing more is counted.
    const lifted = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': NO_LIMIT }, { accounts: [alice], store });
    lifted.clock.now = clock.now;
    const late = await auth(lifted);
    assert.equal(late, false);
    for (const counted of [after[1]!, after[2]!, late]) lifted.engine.disconnect({ client: sclient, countedConnection: false, countedAccount: counted });
    await settled();
    assert.equal(await store.ttl(key, clock.now), 0, 'every counted connection given back, the counter gone');
    assert.deepEqual(changes, [1, 1, 1, -1, -1, -1], 'as many given back as taken, never one more');
  });

  it('an account\'s connections are limited by its plan and its override, and counted only then', async () => {
    const quotas = `
plans:
  residential: { concurrentConnections: 2 }
  open: { messagesPerHour: 5 }
defaultPlan: open
overrides:
  accounts:
    bob@isp.example: { concurrentConnections: 1 }
    carol@isp.example: { concurrentConnections: unlimited }
`;
    const people = [account('alice@isp.example'), account('bob@isp.example', { plan: 'open' }), account('carol@isp.example'), account('dave@isp.example', { plan: 'no-such-plan' })];
    const { engine, store, clock } = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': quotas }, { accounts: people });
    const counted: Record<string, boolean> = {};
    for (const a of people) {
      const client = { listener: 'submission', role: 'submission' as const, ip: '192.0.2.1', tls: true, user: a.name };
      counted[a.name] = (await engine.auth({ client, user: a.name, phase: 'after', ok: true })).countedAccount;
      assert.equal(await store.get(keys.connections({ kind: 'a', id: a.name }), clock.now), counted[a.name] ? 1 : 0, a.name);
    }
    // alice: her plan; bob: his override over an unlimited plan; carol: her override lifts the plan's; dave: defaultPlan.
    assert.deepEqual(counted, { 'alice@isp.example': true, 'bob@isp.example': true, 'carol@isp.example': false, 'dave@isp.example': false });
    // bob's second connection is one past his override's limit: MAIL reads what AUTH counted.
    const bob = people[1]!;
    const bclient = { listener: 'submission', role: 'submission' as const, ip: '192.0.2.2', tls: true, user: bob.name };
    assert.equal((await engine.auth({ client: bclient, user: bob.name, phase: 'after', ok: true })).countedAccount, true);
    const mail = await engine.mail({ client: bclient, account: bob, mailFrom: bob.name, recipients: [] });
    assert.deepEqual([mail.action, mail.rule], ['tempfail', 'quota.connections:concurrentConnections']);
    // A failed AUTH, and the before phase, never count.
    assert.equal((await engine.auth({ client: bclient, user: bob.name, phase: 'after', ok: false })).countedAccount, false);
    assert.equal((await engine.auth({ client: bclient, user: bob.name, phase: 'before' })).countedAccount, false);
    // Without an account store to read the plan from: counted while any plan or account override limits connections.
    const blind = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': quotas });
    assert.equal((await blind.engine.auth({ client: bclient, user: 'dave@isp.example', phase: 'after', ok: true })).countedAccount, true);
    const none = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': 'plans:\n  open: { messagesPerHour: 5 }\n' });
    assert.equal((await none.engine.auth({ client: bclient, user: 'dave@isp.example', phase: 'after', ok: true })).countedAccount, false);
  });

  it('counts IPv6 intercept clients per /64', async () => {
    const { engine } = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': QUOTAS });
    const r = (ip: string, n: number) => engine.evaluate('rcpt', { ...intercept(ip), mailFrom: 'a@h.example', recipients: [], rcpt: `r${n}@x` }, 'live');
    assert.equal((await r('2001:db8:1000:1::1', 1)).verdict.action, 'accept');
    assert.equal((await r('2001:db8:1000:1::2', 2)).verdict.action, 'accept');
    assert.equal((await r('2001:db8:1000:1:ffff::3', 3)).verdict.action, 'accept');
    assert.equal((await r('2001:db8:1000:1::4', 4)).verdict.action, 'tempfail', 'same /64');
    assert.equal((await r('2001:db8:1000:2::1', 5)).verdict.action, 'accept', 'another /64');
  });
});

describe('failed AUTH', () => {
  const QUOTAS = `
authFailures:
  perIp: { window: 15m, delayAfter: 2, delay: 100ms, maxDelay: 300ms, lockoutAfter: 4, lockout: 10m }
  perAccount: { window: 1h, delayAfter: 0, lockoutAfter: 6, lockout: 5m }
`;
  it('delays after a few failures, locks out before the password is checked, and lets go after the lockout', async () => {
    const { engine, clock, slept } = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': QUOTAS });
    const client = { listener: 'submission', role: 'submission' as const, ip: '192.0.2.66', tls: true };
    const attempt = async (user: string, ok = false) => {
      const v = await engine.auth({ client, user, phase: 'before' });
      if (v.action !== 'accept') return v;
      await engine.auth({ client, user, phase: 'after', ok });
      return v;
    };
    for (let i = 0; i < 2; i++) await attempt('alice@isp.example');
    assert.deepEqual(slept, []);
    await attempt('alice@isp.example'); // 3rd: waits 100 ms (2 failures so far)
    await attempt('alice@isp.example'); // 4th: waits 200 ms; now 4 failures: locked
    assert.deepEqual(slept, [100, 200]);
    const locked = await attempt('alice@isp.example', true);
    assert.deepEqual([locked.action, locked.reply, locked.rule], ['tempfail', 'auth_locked_out', 'auth.failures:address']);
    assert.match(locked.detail!, /try again in 10m/);
    // The same IP is locked for every account name.
    assert.equal((await attempt('bob@isp.example')).reply, 'auth_locked_out');
    clock.now += 10 * 60_000;
    const back = await engine.auth({ client, user: 'alice@isp.example', phase: 'before' });
    assert.equal(back.action, 'accept');
    assert.equal(slept.at(-1), 300, 'still slowed (capped) while failures are in the window');
  });

  it('locks an account out across addresses', async () => {
    const { engine } = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': QUOTAS });
    for (let i = 0; i < 6; i++) {
      const client = { listener: 'submission', role: 'submission' as const, ip: `192.0.2.${i + 1}`, tls: true };
      await engine.auth({ client, user: 'Carol@isp.example', phase: 'after', ok: false });
    }
    const client = { listener: 'submission', role: 'submission' as const, ip: '192.0.2.200', tls: true };
    const v = await engine.auth({ client, user: 'carol@isp.example', phase: 'before' });
    assert.deepEqual([v.action, v.rule], ['tempfail', 'auth.failures:account']);
  });

  it('reports the headroom before a delay or lockout (what lets the session run AUTHs in parallel)', async () => {
    const { engine, clock } = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': QUOTAS });
    const client = { listener: 'submission', role: 'submission' as const, ip: '192.0.2.77', tls: true };
    const room = (user = 'dave@isp.example') => engine.authGate({ client, user }).headroom();
    assert.equal(await room(), 2, 'min(delayAfter 2, lockoutAfter 4), no failures yet');
    await engine.auth({ client, user: 'dave@isp.example', phase: 'after', ok: false });
    assert.equal(await room(), 1);
    await engine.auth({ client, user: 'dave@isp.example', phase: 'after', ok: false });
    assert.equal(await room(), 0, 'the next attempt would be delayed');
    assert.equal(await room('erin@isp.example'), 0, 'the address counts for every account name');
    // The account's own failures count too, from any address.
    const other = { ...client, ip: '192.0.2.78' };
    const room2 = (user: string) => engine.authGate({ client: other, user }).headroom();
    assert.equal(await room2('frank@isp.example'), 2);
    for (let i = 0; i < 5; i++) await engine.auth({ client: { ...client, ip: `192.0.2.${100 + i}` }, user: 'frank@isp.example', phase: 'after', ok: false });
    assert.equal(await room2('frank@isp.example'), 1, 'account: lockoutAfter 6 − 5 failures');
    await engine.auth({ client: { ...client, ip: '192.0.2.110' }, user: 'frank@isp.example', phase: 'after', ok: false });
    assert.equal(await room2('frank@isp.example'), 0, 'account locked out');
    // Failures leave the window: full headroom again.
    clock.now += 2 * 60 * 60_000;
    assert.equal(await room(), 2);
    // An IPv6 client shares its key with its /64 (quotas.yaml ipv6Prefix).
    const k = (ip: string) => engine.authGate({ client: { ...client, ip }, user: 'x' }).key;
    assert.equal(k('2001:db8:1000:1::1'), k('2001:db8:1000:1::2'));
    assert.notEqual(k('2001:db8:1000:1::1'), k('2001:db8:1000:2::1'));
  });

  it('reports no limit when no auth-failures rule applies', async () => {
    const { engine } = await engineFor({ 'netblocks.yaml': NB, 'quotas.yaml': `
authFailures:
  perIp: { delayAfter: 0, lockoutAfter: 0 }
  perAccount: { delayAfter: 0, lockoutAfter: 0 }
` });
    const client = { listener: 'submission', role: 'submission' as const, ip: '192.0.2.79', tls: true };
    assert.equal(await engine.authGate({ client, user: 'a@isp.example' }).headroom(), Infinity);
  });
});

describe('sender identity and account state', () => {
  const IDENTITY = `
submission:
  relaxed: { envelopeSender: any, headerFrom: any }
  business: { headerFrom: envelope-domain }
  strict: { nullSender: reject, onMismatch: hold }
intercept:
  netblocks:
    - { cidr: 203.0.113.16/28, domains: [bakery.example, "*.bakery.example"] }
`;
  it('submission: own addresses per plan; intercept: configured domains per netblock', async () => {
    const senders = ['alice@isp.example', '@alice.example'];
    const alice = account('alice@isp.example', { senders });
    const relaxed = account('relaxed@isp.example', { senders, plan: 'relaxed' });
    const biz = account('biz@isp.example', { senders, plan: 'business' });
    const strict = account('strict@isp.example', { senders, plan: 'strict' });
    const { engine } = await engineFor({ 'netblocks.yaml': NB, 'identity.yaml': IDENTITY }, { accounts: [alice, relaxed, biz, strict] });
    const mail = async (a: typeof alice, from: string) => (await engine.evaluate('mail', { ...submission('192.0.2.1', a), mailFrom: from }, 'live')).verdict;
    const data = async (a: typeof alice, from: string, hdr: string[]) => (await engine.evaluate('data', { ...submission('192.0.2.1', a), mailFrom: from, recipients: ['x@y'], headerFrom: hdr, size: 1 }, 'live')).verdict;
    assert.equal((await mail(alice, 'shop@alice.example')).action, 'accept');
    assert.deepEqual(await mail(alice, 'ceo@bank.example'), { action: 'reject', stage: 'mail', rule: 'identity.envelope-sender', reply: 'sender_not_owned' });
    assert.equal((await mail(alice, '')).action, 'accept', 'null sender allowed by default');
    assert.deepEqual(await data(alice, 'alice@isp.example', ['ceo@bank.example']), { action: 'reject', stage: 'data', rule: 'identity.header-from', reply: 'header_from_not_owned' });
    assert.equal((await mail(relaxed, 'ceo@bank.example')).action, 'accept');
    assert.equal((await data(biz, 'shop@alice.example', ['sales@alice.example'])).action, 'accept', 'envelope-domain');
    assert.equal((await data(biz, 'shop@alice.example', ['sales@isp.example'])).action, 'reject');
    assert.equal((await mail(strict, '')).action, 'hold');

    const ic = async (ip: string, from: string) => (await engine.evaluate('mail', { ...intercept(ip), mailFrom: from }, 'live')).verdict;
    assert.equal((await ic('203.0.113.20', 'orders@bakery.example')).action, 'accept');
    assert.equal((await ic('203.0.113.20', 'x@mail.bakery.example')).action, 'accept');
    assert.deepEqual(await ic('203.0.113.20', 'x@other.example'), { action: 'reject', stage: 'mail', rule: 'identity.envelope-sender', reply: 'sender_not_permitted' });
    assert.equal((await ic('203.0.113.99', 'x@other.example')).action, 'accept', 'no domains configured for this block');
  });

  it('refuses an account suspended mid-session, and one bound to other networks', async () => {
    const accounts = [account('dave@isp.example'), account('erin@isp.example', { netblocks: ['business', '192.0.2.0/24'] })];
    const { engine } = await engineFor({ 'netblocks.yaml': NB }, { accounts });
    const dave = accounts[0]!;
    const f = { ...submission('192.0.2.1', dave), mailFrom: dave.name };
    assert.equal((await engine.evaluate('mail', f, 'live')).verdict.action, 'accept');
    accounts[0]!.suspended = true; // the account file changed while the session was open
    assert.deepEqual((await engine.evaluate('mail', f, 'live')).verdict, { action: 'reject', stage: 'mail', rule: 'account.state', reply: 'account_suspended' });
    const erin = accounts[1]!;
    const from = (ip: string) => engine.evaluate('mail', { ...submission(ip, erin), mailFrom: erin.name }, 'live');
    assert.equal((await from('192.0.2.77')).verdict.action, 'accept');
    assert.equal((await from('203.0.113.7')).verdict.action, 'accept');
    assert.deepEqual((await from('198.51.100.7')).verdict, { action: 'reject', stage: 'mail', rule: 'account.network', reply: 'account_network_denied' });
  });
});

describe('DNSBL actions per listener', () => {
  let dns: TestDns;
  before(async () => {
    dns = await startDnsServer();
    dns.set('7.100.51.198.zen.test', 'A', ['127.0.0.4']); // XBL
    dns.set('8.100.51.198.zen.test', 'A', ['127.0.0.10']); // PBL
    dns.set('9.100.51.198.zen.test', 'A', ['127.0.0.10', '127.0.0.3']); // PBL + CSS
    dns.set('10.100.51.198.zen.test', 'A', ['127.255.255.254']);
    dns.behave('11.100.51.198.zen.test', 'drop');
  });
  after(async () => {
    await dns.close();
  });
  const DNSBL = (server: string) => `
resolver: { servers: ["${server}"], timeout: 300ms, tries: 1 }
queryPrivate: true
zones:
  - name: zen
    zone: zen.test
    codes: { 127.0.0.2: sbl, 127.0.0.3: css, 127.0.0.4-127.0.0.7: xbl, 127.0.0.10-127.0.0.11: pbl }
    actions:
      xbl:
        intercept: { action: reject, reply: dnsbl_listed, detail: "see https://help.isp.example/xbl?ip={ip}" }
        submission: hold
      css: { intercept: reject, "*": accept }
      pbl: ignore
    onError: { intercept: tempfail, "*": accept }
`;

  it('reject with a help URL on intercept, hold on submission, PBL ignored, strongest meaning wins', async () => {
    const lookups: string[] = [];
    const { engine } = await engineFor({ 'netblocks.yaml': NB, 'dnsbl.yaml': DNSBL(dns.server) }, { observer: { dnsblLookup: (z, r) => lookups.push(`${z}:${r}`) } });
    const xbl = await engine.evaluate('connect', intercept('198.51.100.7'), 'live');
    assert.deepEqual(xbl.verdict, { action: 'reject', stage: 'connect', rule: 'dnsbl:zen.xbl', reply: 'dnsbl_listed', detail: '[198.51.100.7] listed at zen.test (xbl); see https://help.isp.example/xbl?ip=198.51.100.7' });
    const trace = await engine.evaluate('connect', intercept('198.51.100.7'), 'explain');
    assert.match(String(trace.steps.find((s) => s.check === 'dnsbl')!.inputs!.zen), /127\.0\.0\.4 \(xbl\) ttl 1m \[cached\]/);
    assert.equal((await engine.evaluate('connect', submission('198.51.100.7'), 'live')).verdict.action, 'hold');
    const pbl = await engine.evaluate('connect', intercept('198.51.100.8'), 'explain');
    assert.equal(pbl.verdict.action, 'accept');
    assert.match(pbl.steps.find((s) => s.check === 'dnsbl')!.note!, /ignored on this listener/);
    assert.equal((await engine.evaluate('connect', intercept('198.51.100.9'), 'live')).verdict.rule, 'dnsbl:zen.css');
    assert.deepEqual(lookups, ['zen:listed', 'zen:listed', 'zen:listed'], 'the second 198.51.100.7 lookup came from the cache');
  });

  it('a listing without a detail names the zone and meaning; several listings: configuration order, not DNS answer order', async () => {
    // Zone b (second in dnsbl.yaml) and zone a both list .20 and .21; within zone a, SBL
    // and XBL (both reject) come back in one order for .20 and the other for .21.
    dns.set('20.100.51.198.b.test', 'A', ['127.0.0.2']);
    dns.set('21.100.51.198.b.test', 'A', ['127.0.0.2']);
    dns.set('20.100.51.198.a.test', 'A', ['127.0.0.2', '127.0.0.4']);
    dns.set('21.100.51.198.a.test', 'A', ['127.0.0.4', '127.0.0.2']);
    dns.set('22.100.51.198.b.test', 'A', ['127.0.0.2']);
    const zone = (name: string) => `
  - name: ${name}
    zone: ${name}.test
    codes: { 127.0.0.2: sbl, 127.0.0.4: xbl }
    actions: { sbl: { intercept: reject }, xbl: { intercept: reject } }`;
    const yaml = `resolver: { servers: ["${dns.server}"], timeout: 300ms, tries: 1 }\nqueryPrivate: true\nzones:${zone('a')}${zone('b')}\n`;
    const { engine } = await engineFor({ 'netblocks.yaml': NB, 'dnsbl.yaml': yaml });
    for (const ip of ['198.51.100.20', '198.51.100.21']) {
      const v = (await engine.evaluate('connect', intercept(ip), 'live')).verdict;
      assert.deepEqual(v, { action: 'reject', stage: 'connect', rule: 'dnsbl:a.sbl', reply: 'dnsbl_listed', detail: `[${ip}] listed at a.test (sbl)` }, ip);
    }
    const onlyB = (await engine.evaluate('connect', intercept('198.51.100.22'), 'live')).verdict;
    assert.equal(onlyB.detail, '[198.51.100.22] listed at b.test (sbl)');
  });

  it('fail-closed on intercept (451 4.7.1) and fail-open elsewhere, for refusals and timeouts alike', async () => {
    const { engine } = await engineFor({ 'netblocks.yaml': NB, 'dnsbl.yaml': DNSBL(dns.server) });
    for (const ip of ['198.51.100.10', '198.51.100.11']) {
      const v = (await engine.evaluate('connect', intercept(ip), 'live')).verdict;
      assert.deepEqual([v.action, v.reply, v.rule], ['tempfail', 'dnsbl_tempfail', 'dnsbl:zen.error'], ip);
      assert.equal((await engine.evaluate('connect', submission(ip), 'live')).verdict.action, 'accept', ip);
    }
  });
});
