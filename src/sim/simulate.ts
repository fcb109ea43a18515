/**
 * The containment evaluation: the behaviour profiles (./profiles, written
 * from public descriptions of abuse and of ordinary mail, blind to the
 * detector) make a seeded world; its mail is driven through the REAL policy
 * engine (the same PolicyHooks the SMTP session calls: connect, auth, mail,
 * rcpt, data, accepted, disconnect) with an injected clock, once with the
 * static limits only (quotas as shipped, DNSBL refusal of listed intercept
 * hosts) and once with containment (policies/containment.yaml) on top.
 * Each message's traits (body fingerprint, link domains, Reply-To, display
 * name) come from the same messageTraits() the session uses.
 *
 * Around the conversation: relay feedback (remote 5xx for dead recipients)
 * 60 s after acceptance; complaints (ARF, verified) 30 minutes after
 * acceptance; DNSBL listings of infected hosts when the profile says; the
 * abuse desk reviews each hold two hours after the event (a legitimate
 * sender is marked legitimate, its held mail counted as delayed; an
 * attacker stays contained).
 *
 * Reported per profile: attackers: share of the episode's messages not
 * accepted (contained) and messages until the first one not accepted
 * (detection, per instance: median, p95; an undetected instance counts its
 * whole run); legitimate profiles: share of the episode's messages delayed
 * (tempfail, hold) or refused. Deterministic: traffic generated up front,
 * ties broken by order; the engine never sleeps.
 *
 * Talks to: the policy engine, containment, a memory state store, a temp
 * policy dir.
 */
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import type { Account } from '../accounts/store';
import { loadContainment } from '../containment/config';
import { ContainedHooks, Containment, type ContainmentEvent } from '../containment/containment';
import type { CSubject } from '../containment/signals';
import type { ClientInfo, Verdict } from '../envelope';
import { messageTraits, type MessageTraits } from '../message-traits';
import { PolicyEngine } from '../policy/engine';
import { prefixOf } from '../policy/ip';
import { loadPolicy } from '../policy/load';
import { planFor } from '../policy/quotas';
import type { PolicyHooks } from '../policy/types';
import { MemoryStore } from '../state/memory';
import { DAY, HOUR, makeWorld, MIN, PROFILES, type SimActor, type SimMail, type World, type WorldOptions } from './profiles';

const T0 = Date.UTC(2024, 0, 1, 0, 0, 0);

/** The world's options (src/sim/profiles) but its start, which the simulation fixes, plus the policy to run. */
export interface SimOptions extends Omit<WorldOptions, 'start'> {
  readonly policiesDir: string;
}

export const DEFAULT_OPTIONS: SimOptions = {
  seed: 1,
  warmupDays: 14,
  measureDays: 7,
  background: 300,
  hosts: 30,
  instances: 6,
  policiesDir: path.resolve(__dirname, '../../../policies'),
};

/** The seed set of the published table and of the test. */
export const SEEDS: readonly number[] = [1, 2, 3];

export interface ProfileResult {
  readonly profile: string;
  readonly side: 'attacker' | 'legitimate' | 'background';
  readonly instances: number;
  /** Episode messages measured (attackers: abuse; legitimate: the burst; background: all). */
  readonly messages: number;
  /** Not accepted: tempfail, hold or refusal. */
  readonly stopped: number;
  readonly refused: number;
  /** stopped / messages (attackers: contained; legitimate: delayed or refused). */
  readonly rate: number;
  /** Per instance: messages until the first one stopped (attackers). */
  readonly detections: readonly number[];
  readonly undetected: number;
}

export interface RunReport {
  readonly name: 'static' | 'dynamic';
  readonly profiles: readonly ProfileResult[];
  /** Containment events on legitimate and background senders: "profile:response:signal" → count. */
  readonly falsePositives: Record<string, number>;
  readonly events: Record<string, number>;
}

export interface SimReport {
  readonly options: Omit<SimOptions, 'policiesDir'>;
  readonly messages: number;
  readonly static: RunReport;
  readonly dynamic: RunReport;
  readonly ms: number;
}

const NETBLOCKS = `netblocks:
  - { cidr: 127.0.0.0/8, class: local }
  - { cidr: 198.18.0.0/15, class: residential-dynamic }
  - { cidr: 198.51.100.128/25, class: residential-static }
  - { cidr: 203.0.113.0/24, class: business }
`;

const RULES = `stages:
  connect:
    - { id: quota.connections, check: quota, limits: [concurrentConnections] }
  auth:
    - { id: auth.failures, check: auth-failures }
  mail:
    - { id: account.state, check: account-state }
    - { id: quota.messages, check: quota, limits: [messagesPerHour] }
  rcpt:
    - { id: quota.recipients, check: quota, limits: [recipientsPerMessage, recipientsPerHour, recipientsPerDay] }
  data:
    - { id: quota.size, check: quota, limits: [maxMessageSize] }
    - { id: quota.messages, check: quota, limits: [messagesPerHour] }
`;

export const quantile = (xs: readonly number[], q: number): number => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
};

const LISTENERS = [
  { name: 'submission', role: 'submission' as const },
  { name: 'intercept', role: 'intercept' as const },
];

/** The simulated message as the session would see it: its header fields and body. */
export function traitsOf(a: SimActor, m: SimMail): MessageTraits {
  const c = m.content;
  const headers = [
    { name: 'from', value: `"${c.fromName ?? a.displayName}" <${a.kind === 'host' ? `someone@home${a.id}.example` : a.name}>` },
    { name: 'subject', value: c.subject },
    ...(c.replyTo ? [{ name: 'reply-to', value: c.replyTo }] : []),
  ];
  return messageTraits(headers, c.body);
}

const subjectOf = (a: SimActor): CSubject => (a.kind === 'host' ? { kind: 'ip', id: a.homeIp } : { kind: 'a', id: a.name });

async function drive(name: 'static' | 'dynamic', o: SimOptions, world: World, containmentFile?: string): Promise<RunReport> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'smarthost-sim-'));
  try {
    writeFileSync(path.join(dir, 'netblocks.yaml'), NETBLOCKS);
    writeFileSync(path.join(dir, 'rules.yaml'), RULES);
    copyFileSync(path.join(o.policiesDir, 'quotas.yaml'), path.join(dir, 'quotas.yaml'));
    if (name === 'dynamic') copyFileSync(containmentFile ?? path.join(o.policiesDir, 'containment.yaml'), path.join(dir, 'containment.yaml'));
    const clock = { now: T0 };
    const store = new MemoryStore();
    const logger = pino({ level: 'silent' });
    const accounts = new Map<string, Account>();
    for (const a of world.actors) if (a.kind === 'account') accounts.set(a.name, { name: a.name, passwordHash: 'x', senders: [a.name], plan: a.plan, suspended: false, netblocks: [] });
    const accountStore = {
      get: (n: string) => accounts.get(n.toLowerCase()),
      upsert: async (n: string, change: (a: Account | undefined) => Account | undefined) => {
        const next = change(accounts.get(n.toLowerCase()));
        if (next) accounts.set(n.toLowerCase(), next);
      },
    };
    const policy = loadPolicy(dir, { listeners: LISTENERS });
    const engine = new PolicyEngine(policy, { store, logger, clock: () => clock.now, sleep: async () => undefined, accounts: accountStore });
    const events: Record<string, number> = {};
    const falsePositives: Record<string, number> = {};
    const reviews: Array<{ t: number; subject: CSubject; actor: SimActor | undefined }> = [];
    const actorBySubject = new Map<string, SimActor>();
    for (const a of world.actors) actorBySubject.set(a.kind === 'host' ? `ip:${a.homeIp}` : `account:${a.name}`, a);
    const attackerProfiles = new Set(PROFILES.filter((p) => p.side === 'attacker').map((p) => p.name));
    const containment = new Containment(loadContainment(dir), {
      store,
      logger,
      clock: () => clock.now,
      accounts: accountStore,
      planOf: (client, account) =>
        client.role === 'submission' ? planFor(policy.quotas, { account: account ?? accounts.get((client.user ?? '').toLowerCase()) }) : planFor(policy.quotas, { cls: policy.netblocks.match(client.ip)?.cls ?? '' }),
      ipSubject: (ip) => prefixOf(ip, policy.quotas.ipv6Prefix) ?? ip,
      observer: {
        event: (e: ContainmentEvent) => {
          events[e.response] = (events[e.response] ?? 0) + 1;
          const who = actorBySubject.get(e.subject);
          if (who && !attackerProfiles.has(who.profile)) for (const f of e.fired) falsePositives[`${who.profile}:${e.response}:${f}`] = (falsePositives[`${who.profile}:${e.response}:${f}`] ?? 0) + 1;
          if (e.response !== 'throttle') {
            const subject: CSubject = e.account ? { kind: 'a', id: e.account } : { kind: 'ip', id: e.subject.slice(3) };
            reviews.push({ t: clock.now + 2 * HOUR, subject, actor: who });
          }
        },
      },
    });
    const hooks: PolicyHooks = name === 'dynamic' ? new ContainedHooks(() => engine, containment) : engine;
    // Queued events outside the conversation, each list in time order.
    const bounces: Array<{ t: number; client: ClientInfo; n: number }> = [];
    const complaints: Array<{ t: number; a: SimActor; n: number }> = [];
    const listings = [...world.listings];
    const listed = new Set<string>();
    // The abuse desk reviews a hold: an attacker's episode stays contained; anyone else is marked legitimate.
    const attacking = new Set<number>();

    const due = async (until: number) => {
      for (;;) {
        const heads = [
          bounces[0] && { t: bounces[0].t, run: async () => {
            const b = bounces.shift()!;
            await containment.relayBounced(b.client, b.n);
          } },
          complaints[0] && { t: complaints[0].t, run: async () => {
            const c = complaints.shift()!;
            await containment.external(c.a.kind === 'host' ? { ip: c.a.homeIp } : { account: c.a.name }, 'complaint', c.n);
          } },
          listings[0] && { t: listings[0].t, run: async () => {
            const l = listings.shift()!;
            listed.add(l.ip);
            if (name === 'dynamic') await containment.external({ ip: l.ip }, 'dnsblListed', 1);
          } },
          reviews[0] && { t: reviews[0].t, run: async () => {
            const rv = reviews.shift()!;
            if (rv.actor && !attacking.has(rv.actor.id)) await containment.markLegitimate(rv.subject);
          } },
        ].filter((x): x is { t: number; run: () => Promise<void> } => !!x && x.t <= until);
        if (heads.length === 0) return;
        const next = heads.reduce((a, b) => (b.t < a.t ? b : a));
        clock.now = Math.max(clock.now, next.t);
        await next.run();
      }
    };

    // The static limits only look back a day; containment learns from the whole warm-up.
    const first = name === 'static' ? world.span.measureStart - DAY : world.span.start;
    if (name === 'dynamic') {
      // History before the simulation: each sender's correspondents of the last 30 days.
      for (const a of world.actors) await containment.signals.learnRecipients(subjectOf(a), a.contacts.slice(0, a.known), world.span.start);
      containment.learning = true;
    }
    const stats = new Map<string, { side: ProfileResult['side']; messages: number; stopped: number; refused: number; instances: Set<number> }>();
    const seen = new Map<number, number>();
    const detectedAt = new Map<number, number>();
    const runLength = new Map<number, number>();
    for (const m of world.mail) {
      if (m.t < first) continue;
      if (containment.learning && m.t >= world.span.measureStart) containment.learning = false;
      await due(m.t);
      clock.now = Math.max(clock.now, m.t);
      const a = world.actors[m.actor]!;
      const isAttack = m.episode && attackerProfiles.has(m.profile);
      if (isAttack) attacking.add(a.id);
      const outcome = await send(hooks, a, m, accounts, listed);
      if (outcome.accepted && name === 'dynamic') {
        const client: ClientInfo = a.kind === 'host' ? { listener: 'intercept', role: 'intercept', ip: m.ip, tls: false } : { listener: 'submission', role: 'submission', ip: m.ip, tls: true, user: a.name };
        if (m.invalid > 0) bounces.push({ t: clock.now + MIN, client, n: Math.min(m.invalid, outcome.rcpts) });
        if (m.complaints > 0) complaints.push({ t: clock.now + 30 * MIN, a, n: m.complaints });
      }
      if (m.t < world.span.measureStart) continue;
      const counted = m.profile === 'background' || m.episode;
      if (!counted) continue;
      const side: ProfileResult['side'] = m.profile === 'background' ? 'background' : attackerProfiles.has(m.profile) ? 'attacker' : 'legitimate';
      let s = stats.get(m.profile);
      if (!s) stats.set(m.profile, (s = { side, messages: 0, stopped: 0, refused: 0, instances: new Set() }));
      s.messages++;
      s.instances.add(m.instance);
      if (!outcome.accepted) {
        s.stopped++;
        if (outcome.action === 'reject') s.refused++;
      }
      if (isAttack) {
        const index = (seen.get(m.instance) ?? 0) + 1;
        seen.set(m.instance, index);
        runLength.set(m.instance, index);
        if (!outcome.accepted && !detectedAt.has(m.instance)) detectedAt.set(m.instance, index);
      }
    }
    const profiles: ProfileResult[] = [];
    for (const p of ['background', ...PROFILES.map((x) => x.name)]) {
      const s = stats.get(p);
      if (!s) continue;
      const detections: number[] = [];
      let undetected = 0;
      if (s.side === 'attacker') {
        for (const inst of s.instances) {
          const d = detectedAt.get(inst);
          if (d === undefined) undetected++;
          detections.push(d ?? runLength.get(inst) ?? 0);
        }
      }
      profiles.push({ profile: p, side: s.side, instances: s.instances.size, messages: s.messages, stopped: s.stopped, refused: s.refused, rate: s.messages ? s.stopped / s.messages : 0, detections, undetected });
    }
    return { name, profiles, falsePositives, events };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One message through the hooks, as a session would (one message per connection). */
async function send(hooks: PolicyHooks, a: SimActor, m: SimMail, accounts: Map<string, Account>, listed: Set<string>): Promise<{ accepted: boolean; action: Verdict['action']; rcpts: number }> {
  const host = a.kind === 'host';
  if (host && listed.has(a.homeIp)) return { accepted: false, action: 'reject', rcpts: 0 }; // dnsbl.yaml: XBL refused on intercept
  const listener = host ? { name: 'intercept', role: 'intercept' as const } : { name: 'submission', role: 'submission' as const };
  const conn = await hooks.connect({ listener: listener as never, ip: m.ip });
  const base: ClientInfo = { listener: listener.name, role: listener.role, ip: m.ip, tls: !host, ...(conn.netblockClass ? { netblockClass: conn.netblockClass } : {}) };
  const client: ClientInfo = host ? base : { ...base, user: a.name };
  // What the AUTH counted of the account's connections, given back at the disconnect.
  let countedAccount = false;
  try {
    if (conn.verdict.action !== 'accept') return { accepted: false, action: conn.verdict.action, rcpts: 0 };
    const account = host ? undefined : accounts.get(a.name);
    if (!host && hooks.auth) {
      if (account?.suspended) return { accepted: false, action: 'reject', rcpts: 0 }; // AUTH refuses a suspended account
      await hooks.auth({ client, user: a.name, phase: 'before' });
      countedAccount = (await hooks.auth({ client, user: a.name, phase: 'after', ok: true })).countedAccount;
    }
    const mailFrom = host ? `someone@home${a.id}.example` : a.name;
    const tx = { client, ...(account ? { account } : {}), mailFrom };
    const mv = await hooks.mail({ ...tx, recipients: [] });
    if (mv.action === 'reject' || mv.action === 'tempfail') return { accepted: false, action: mv.action, rcpts: 0 };
    const ok: string[] = [];
    let last: Verdict = mv;
    for (const rcpt of m.rcpts) {
      const rv = await hooks.rcpt({ ...tx, recipients: ok, rcpt });
      if (rv.action === 'accept' || rv.action === 'hold') ok.push(rcpt);
      else last = rv;
    }
    if (ok.length === 0) return { accepted: false, action: last.action, rcpts: 0 };
    const traits = traitsOf(a, m);
    const facts = { ...tx, recipients: ok, size: 2000, headerFrom: [mailFrom], receivedCount: 0, traits };
    const dv = await hooks.data(facts);
    if (dv.action === 'accept') await hooks.accepted?.(facts);
    return { accepted: dv.action === 'accept', action: dv.action, rcpts: ok.length };
  } finally {
    hooks.disconnect?.({ client, countedConnection: conn.countedConnection, countedAccount });
  }
}

export function worldFor(o: SimOptions): World {
  const { policiesDir: _policy, ...world } = o;
  return makeWorld({ ...world, start: T0 });
}

/**
 * One seed: the world, driven with static limits and with containment.
 * `containmentFile` replaces policies/containment.yaml (a red run with a
 * signal switched off).
 */
export async function simulate(opts: Partial<SimOptions> = {}, containmentFile?: string): Promise<SimReport> {
  const t0 = performance.now();
  const o: SimOptions = { ...DEFAULT_OPTIONS, ...opts };
  const world = worldFor(o);
  const stat = await drive('static', o, world);
  const dyn = await drive('dynamic', o, world, containmentFile);
  const { policiesDir: _p, ...shown } = o;
  return { options: shown, messages: world.mail.length, static: stat, dynamic: dyn, ms: Math.round(performance.now() - t0) };
}

/** Results of several seeds merged per profile (detections pooled over instances). */
export function mergeSeeds(reports: readonly SimReport[], run: 'static' | 'dynamic'): ProfileResult[] {
  const by = new Map<string, ProfileResult>();
  for (const r of reports) {
    for (const p of r[run].profiles) {
      const m = by.get(p.profile);
      by.set(
        p.profile,
        m
          ? { ...m, instances: m.instances + p.instances, messages: m.messages + p.messages, stopped: m.stopped + p.stopped, refused: m.refused + p.refused, rate: (m.stopped + p.stopped) / Math.max(1, m.messages + p.messages), detections: [...m.detections, ...p.detections], undetected: m.undetected + p.undetected }
          : p,
      );
    }
  }
  return [...by.values()];
}

/** The per-profile table: containment beside the static limits. */
export function table(reports: readonly SimReport[]): string {
  const dyn = mergeSeeds(reports, 'dynamic');
  const stat = new Map(mergeSeeds(reports, 'static').map((p) => [p.profile, p]));
  const pct = (x: number) => `${(x * 100).toFixed(x < 0.01 && x > 0 ? 2 : 1)}%`;
  const lines = [
    `seeds ${reports.map((r) => r.options.seed).join(', ')}; per seed: ${reports[0]?.options.background} background accounts + ${reports[0]?.options.hosts} hosts, ${reports[0]?.options.instances} instances per attacker profile and ${reports[0]?.options.legitimateInstances ?? reports[0]?.options.instances} per legitimate one, ${reports[0]?.options.warmupDays}d warm-up + ${reports[0]?.options.measureDays}d measured`,
    '| profile | side | instances | messages | containment: stopped | detection median / p95 (undetected) | static limits: stopped | detection median / p95 (undetected) |',
    '|---|---|---:|---:|---:|---|---:|---|',
  ];
  for (const p of dyn) {
    const s = stat.get(p.profile);
    const det = (x: ProfileResult | undefined) => (x && x.side === 'attacker' ? `${quantile(x.detections, 0.5)} / ${quantile(x.detections, 0.95)} (${x.undetected})` : '—');
    lines.push(`| ${p.profile} | ${p.side} | ${p.instances} | ${p.messages} | ${pct(p.rate)} (${p.stopped}) | ${det(p)} | ${s ? `${pct(s.rate)} (${s.stopped})` : '—'} | ${det(s)} |`);
  }
  return lines.join('\n');
}
