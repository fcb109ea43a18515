/**
 * The containment simulation: a seeded synthetic population driven through
 * the REAL policy engine (the same PolicyHooks the SMTP session calls:
 * connect, auth, mail, rcpt, data, disconnect) with an injected clock, once
 * with the static limits only (quotas as shipped, DNSBL refusal of listed
 * intercept hosts) and once with containment on top, over the same traffic.
 *
 * Population (per 2,000 accounts): residential people (a few messages a
 * day to their own correspondents), small businesses (tens a day, many
 * customers and domains), newsletter senders (weekly bursts to a list of
 * hundreds to thousands, 50 recipients a message), freelancers writing to
 * many domains; intercept-port hosts sending a few a day. 1.5% of accounts
 * are compromised at random times and used for a spam run in one of four
 * styles (fast burst from a botnet, slow drip under the static limits from
 * one address, many recipients per message, rotating bodies), and 2% of
 * intercept hosts get infected (fast spam; the address becomes DNSBL-listed
 * 45 minutes in). Relay feedback (remote 5xx for invalid recipients) arrives
 * 60 s after acceptance. The abuse desk reviews each hold two hours after
 * the event: a legitimate sender is marked legitimate (its held mail counts
 * as delayed), a compromised one stays contained.
 *
 * Deterministic: one seeded PRNG, traffic generated up front, ties broken
 * by sequence; the engine never sleeps (sleep injected as a no-op).
 *
 * Talks to: the policy engine, a memory state store, a temp policy dir.
 */
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import type { Account } from '../accounts/store';
import { loadContainment } from '../containment/config';
import { ContainedHooks, Containment, type ContainmentEvent } from '../containment/containment';
import { bodyFingerprint, type CSubject } from '../containment/signals';
import type { ClientInfo, Verdict } from '../envelope';
import { PolicyEngine } from '../policy/engine';
import { prefixOf } from '../policy/ip';
import { loadPolicy } from '../policy/load';
import { planFor } from '../policy/quotas';
import type { PolicyHooks } from '../policy/types';
import { MemoryStore } from '../state/memory';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T0 = Date.UTC(2024, 0, 1, 0, 0, 0);

export interface SimOptions {
  readonly seed: number;
  readonly accounts: number;
  readonly interceptHosts: number;
  /** Days of legitimate history before measuring (baselines). */
  readonly warmupDays: number;
  readonly measureDays: number;
  readonly compromisedRate: number;
  readonly infectedRate: number;
  /** Scales spam run lengths (1 = full). */
  readonly runScale: number;
  readonly policiesDir: string;
}

export const DEFAULT_OPTIONS: SimOptions = {
  seed: 42,
  accounts: 2000,
  interceptHosts: 200,
  warmupDays: 7,
  measureDays: 7,
  compromisedRate: 0.015,
  infectedRate: 0.02,
  runScale: 1,
  policiesDir: path.resolve(__dirname, '../../../policies'),
};

// ---- deterministic randomness ----

export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Kind = 'residential' | 'business' | 'newsletter' | 'freelancer' | 'host';
type Style = 'burst' | 'drip' | 'many-recipients' | 'rotating' | 'infected-host';

interface Actor {
  readonly id: number;
  readonly kind: Kind;
  readonly name: string;
  readonly plan: string;
  readonly homeIp: string;
  readonly contacts: string[];
  /** Contacts before the simulation starts (the rest are found during it). */
  readonly initialContacts: number;
  readonly incident?: Incident;
}

interface Incident {
  readonly id: number;
  readonly style: Style;
  readonly start: number;
  readonly actor: number;
}

interface Msg {
  readonly t: number;
  readonly seq: number;
  readonly actor: number;
  readonly ip: string;
  readonly rcpts: readonly string[];
  /** Recipients a remote server will refuse (5xx). */
  readonly invalid: number;
  readonly fp: string;
  readonly spam?: { incident: number; index: number };
  readonly measured: boolean;
}

const BIG = ['gmail.com', 'yahoo.com', 'outlook.com', 'hotmail.com', 'icloud.com', 'aol.com', 'gmx.net', 'web.de', 'orange.fr', 'comcast.net'];

function population(o: SimOptions, r: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const longTail = (n: number) => `d${Math.floor(r() * n)}.example`;
  const domain = () => (r() < 0.65 ? pick(BIG) : longTail(5000));
  const addr = () => `u${Math.floor(r() * 1e9).toString(36)}@${domain()}`;
  const actors: Actor[] = [];
  for (let i = 0; i < o.accounts; i++) {
    const x = r();
    const kind: Kind = x < 0.75 ? 'residential' : x < 0.9 ? 'business' : x < 0.95 ? 'newsletter' : 'freelancer';
    const nContacts = kind === 'residential' ? 5 + Math.floor(r() * 35) : kind === 'newsletter' ? 200 + Math.floor(r() * 1300) : 100 + Math.floor(r() * 600);
    const contacts = Array.from({ length: nContacts }, addr);
    actors.push({
      id: i,
      kind,
      name: `user${i}@isp.example`,
      plan: kind === 'business' || kind === 'newsletter' ? 'business' : 'residential',
      homeIp: `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
      contacts,
      initialContacts: contacts.length,
    });
  }
  for (let h = 0; h < o.interceptHosts; h++) {
    const i = actors.length;
    const contacts = Array.from({ length: 5 + Math.floor(r() * 20) }, addr);
    actors.push({ id: i, kind: 'host', name: `host${h}`, plan: 'residential', homeIp: `198.18.${h >> 8}.${h & 255}`, contacts, initialContacts: contacts.length });
  }
  return { actors, addr, domain, pick };
}

/** All traffic, legitimate and spam, in time order. */
export function generate(o: SimOptions) {
  const r = rng(o.seed);
  const { actors, addr, pick } = population(o, r);
  const measureStart = T0 + o.warmupDays * DAY;
  const end = measureStart + o.measureDays * DAY;
  const msgs: Omit<Msg, 'seq'>[] = [];
  const poisson = (lambda: number) => {
    let n = 0;
    let p = Math.exp(-lambda);
    let s = p;
    const u = r();
    while (u > s && n < 1000) {
      n++;
      p *= lambda / n;
      s += p;
    }
    return n;
  };
  // Incidents.
  const incidents: Incident[] = [];
  const accountsOnly = actors.filter((a) => a.kind !== 'host');
  const hosts = actors.filter((a) => a.kind === 'host');
  const nComp = Math.max(1, Math.round(accountsOnly.length * o.compromisedRate));
  const nInf = Math.max(1, Math.round(hosts.length * o.infectedRate));
  const styles: Style[] = ['burst', 'drip', 'many-recipients', 'rotating'];
  const chosen = new Set<number>();
  const choose = (pool: Actor[]) => {
    for (;;) {
      const a = pick(pool);
      if (!chosen.has(a.id)) {
        chosen.add(a.id);
        return a;
      }
    }
  };
  for (let k = 0; k < nComp + nInf; k++) {
    const a = k < nComp ? choose(accountsOnly) : choose(hosts);
    const style: Style = k < nComp ? styles[k % styles.length]! : 'infected-host';
    const start = measureStart + Math.floor(r() * (o.measureDays - 2) * DAY);
    const inc: Incident = { id: k, style, start, actor: a.id };
    incidents.push(inc);
    (actors[a.id] as { incident?: Incident }).incident = inc;
  }
  // Letters only: the fingerprint ignores digits (personalisation).
  const word = () => Array.from({ length: 12 }, () => String.fromCharCode(97 + Math.floor(r() * 26))).join('');
  const body = (tag: string) => bodyFingerprint(`hello ${tag.replace(/[0-9]/g, '')} ${word()} ${word()}`);
  // Legitimate traffic.
  for (const a of actors) {
    const stopAt = a.incident ? a.incident.start : end;
    const perDay = a.kind === 'residential' || a.kind === 'host' ? 0.5 + r() * 5 : a.kind === 'business' ? 10 + r() * 30 : a.kind === 'freelancer' ? 5 + r() * 10 : 1 + r() * 3;
    const pNew = a.kind === 'residential' || a.kind === 'host' ? 0.08 : a.kind === 'newsletter' ? 0.05 : 0.3;
    const weekday = Math.floor(r() * 7);
    const nlHour = 8 + Math.floor(r() * 10);
    const mobile = [`172.${16 + (a.id % 8)}.${(a.id * 7) & 255}.9`, `10.${a.id & 255}.3.4`];
    for (let d = 0; d < o.warmupDays + o.measureDays; d++) {
      const day = T0 + d * DAY;
      const n = poisson(perDay);
      for (let j = 0; j < n; j++) {
        const t = day + 7 * HOUR + Math.floor(r() * 16 * HOUR);
        if (t >= stopAt) continue;
        const x = r();
        const nR = a.kind === 'business' || a.kind === 'freelancer' ? (x < 0.8 ? 1 : 2) : x < 0.8 ? 1 : x < 0.98 ? 2 + Math.floor(r() * 4) : 8 + Math.floor(r() * 12);
        const rcpts = new Set<string>();
        for (let q = 0; q < nR; q++) {
          if (r() < pNew) {
            const nw = addr();
            a.contacts.push(nw);
            rcpts.add(nw);
          } else rcpts.add(pick(a.contacts));
        }
        const ip = a.kind === 'host' ? a.homeIp : r() < 0.1 ? pick(mobile) : a.homeIp;
        msgs.push({ t, actor: a.id, ip, rcpts: [...rcpts], invalid: r() < 0.01 ? 1 : 0, fp: body('legit'), measured: t >= measureStart });
      }
      if (a.kind === 'newsletter' && d % 7 === weekday) {
        const t0 = day + nlHour * HOUR;
        if (t0 >= stopAt) continue;
        // New subscribers since last week.
        const grow = Math.floor(a.contacts.length * 0.02 * r());
        for (let q = 0; q < grow; q++) a.contacts.push(addr());
        const fp = body('newsletter');
        for (let b = 0; b * 50 < a.contacts.length; b++) {
          const rcpts = a.contacts.slice(b * 50, b * 50 + 50);
          let invalid = 0;
          for (let q = 0; q < rcpts.length; q++) if (r() < 0.01) invalid++;
          msgs.push({ t: t0 + b * 10_000, actor: a.id, ip: a.homeIp, rcpts, invalid, fp, measured: t0 >= measureStart });
        }
      }
    }
  }
  // Spam runs.
  const botnet = () => `${11 + Math.floor(r() * 200)}.${Math.floor(r() * 256)}.${Math.floor(r() * 256)}.${1 + Math.floor(r() * 254)}`;
  const scale = (n: number) => Math.max(20, Math.round(n * o.runScale));
  for (const inc of incidents) {
    const a = actors[inc.actor]!;
    const spec = {
      burst: { n: scale(1500), every: 3_000, rcpts: 1, rotate: false, botnet: true },
      drip: { n: scale(600), every: 4 * MIN, rcpts: 1, rotate: false, botnet: false },
      'many-recipients': { n: scale(150), every: 30_000, rcpts: 40, rotate: false, botnet: false },
      rotating: { n: scale(1000), every: 6_000, rcpts: 2, rotate: true, botnet: true },
      'infected-host': { n: scale(2000), every: 5_000, rcpts: 1, rotate: true, botnet: false },
    }[inc.style];
    const singleIp = a.kind === 'host' ? a.homeIp : botnet();
    let fp = body(`spam${inc.id}`);
    for (let i = 0; i < spec.n; i++) {
      if (spec.rotate) fp = body(`spam${inc.id}-${i}`);
      const rcpts = new Set<string>();
      let invalid = 0;
      for (let q = 0; q < spec.rcpts; q++) {
        rcpts.add(addr());
        if (r() < 0.25) invalid++;
      }
      const t = inc.start + i * spec.every + Math.floor(r() * 1000);
      msgs.push({ t, actor: a.id, ip: spec.botnet ? botnet() : singleIp, rcpts: [...rcpts], invalid, fp, spam: { incident: inc.id, index: i + 1 }, measured: true });
    }
  }
  msgs.sort((x, y) => x.t - y.t);
  return { actors, incidents, msgs: msgs.map((m, seq) => ({ ...m, seq })) as Msg[], measureStart, end };
}

// ---- driving the engine ----

export interface PolicyReport {
  readonly name: string;
  readonly spamMessages: number;
  readonly spamLeft: number;
  readonly spamContainedRate: number;
  readonly leftPerIncident: { readonly median: number; readonly p95: number; readonly max: number };
  readonly detection: { readonly median: number; readonly p95: number; readonly undetected: number };
  readonly detectionByStyle: Record<string, number>;
  readonly legitMessages: number;
  readonly legitDelayed: number;
  readonly legitRefused: number;
  readonly legitDelayedRate: number;
  readonly events: Record<string, number>;
  /** Events on legitimate subjects: "kind:response:signal" → count. */
  readonly falsePositives: Record<string, number>;
  readonly webhookEvents: number;
}

export interface SimReport {
  readonly options: Omit<SimOptions, 'policiesDir'>;
  readonly population: Record<string, number>;
  readonly incidents: Record<string, number>;
  readonly legitMessages: number;
  readonly spamMessages: number;
  readonly static: PolicyReport;
  readonly dynamic: PolicyReport;
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

const quantile = (xs: number[], q: number): number => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
};

const LISTENERS = [
  { name: 'submission', role: 'submission' as const },
  { name: 'intercept', role: 'intercept' as const },
];

async function drive(name: 'static' | 'dynamic', o: SimOptions, world: ReturnType<typeof generate>): Promise<PolicyReport> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'smarthost-sim-'));
  try {
    writeFileSync(path.join(dir, 'netblocks.yaml'), NETBLOCKS);
    writeFileSync(path.join(dir, 'rules.yaml'), RULES);
    copyFileSync(path.join(o.policiesDir, 'quotas.yaml'), path.join(dir, 'quotas.yaml'));
    if (name === 'dynamic') copyFileSync(path.join(o.policiesDir, 'containment.yaml'), path.join(dir, 'containment.yaml'));
    const clock = { now: T0 };
    const store = new MemoryStore();
    const logger = pino({ level: 'silent' });
    const accounts = new Map<string, Account>();
    for (const a of world.actors) if (a.kind !== 'host') accounts.set(a.name, { name: a.name, passwordHash: 'x', senders: [a.name], plan: a.plan, suspended: false, netblocks: [] });
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
    const reviews: Array<{ t: number; subject: CSubject; actor: number | undefined }> = [];
    const actorBySubject = new Map<string, number>();
    for (const a of world.actors) actorBySubject.set(a.kind === 'host' ? `ip:${a.homeIp}` : `account:${a.name}`, a.id);
    let webhookEvents = 0;
    const cfg = loadContainment(dir);
    const containment = new Containment(cfg, {
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
          webhookEvents++;
          const who = world.actors[actorBySubject.get(e.subject) ?? -1];
          if (who && !who.incident) for (const f of e.fired) falsePositives[`${who.kind}:${e.response}:${f}`] = (falsePositives[`${who.kind}:${e.response}:${f}`] ?? 0) + 1;
          if (e.response !== 'throttle') {
            const subject: CSubject = e.account ? { kind: 'a', id: e.account } : { kind: 'ip', id: e.subject.slice(3) };
            reviews.push({ t: clock.now + 2 * HOUR, subject, actor: actorBySubject.get(e.subject) });
          }
        },
      },
    });
    const hooks: PolicyHooks = name === 'dynamic' ? new ContainedHooks(() => engine, containment) : engine;
    const feedback: Array<{ t: number; client: ClientInfo; n: number }> = [];
    const listed = new Set<string>();
    const listings = world.incidents.filter((i) => i.style === 'infected-host').map((i) => ({ t: i.start + 45 * MIN, ip: world.actors[i.actor]!.homeIp }));

    const spamLeft = new Map<number, number>();
    const detectedAt = new Map<number, number>();
    let spamMessages = 0;
    let spamLeftTotal = 0;
    let legit = 0;
    let legitDelayed = 0;
    let legitRefused = 0;

    const due = async (until: number) => {
      // Relay feedback, DNSBL listings, abuse desk reviews due before `until`, in time order.
      for (;;) {
        let best: { t: number; run: () => Promise<void>; drop: () => void } | undefined;
        const f = feedback[0];
        if (f && f.t <= until) best = { t: f.t, run: () => containment.relayBounced(f.client, f.n), drop: () => feedback.shift() };
        const l = listings[0];
        if (l && l.t <= until && (!best || l.t < best.t))
          best = {
            t: l.t,
            run: async () => {
              listed.add(l.ip);
              if (name === 'dynamic') await containment.external({ ip: l.ip }, 'dnsblListed', 1);
            },
            drop: () => listings.shift(),
          };
        const rv = reviews[0];
        if (rv && rv.t <= until && (!best || rv.t < best.t))
          best = {
            t: rv.t,
            run: async () => {
              const a = rv.actor === undefined ? undefined : world.actors[rv.actor];
              if (a && !a.incident) await containment.markLegitimate(rv.subject);
            },
            drop: () => reviews.shift(),
          };
        if (!best) return;
        best.drop();
        clock.now = Math.max(clock.now, best.t);
        await best.run();
      }
    };

    const first = name === 'static' ? Math.max(T0, world.measureStart - DAY) : T0;
    // History before the simulation: each sender's correspondents of the last 30 days.
    if (name === 'dynamic') {
      for (const a of world.actors) {
        const subject: CSubject = a.kind === 'host' ? { kind: 'ip', id: a.homeIp } : { kind: 'a', id: a.name };
        await containment.signals.learnRecipients(subject, a.contacts.slice(0, a.initialContacts), T0);
      }
      containment.learning = true;
    }
    for (const m of world.msgs) {
      if (m.t < first) continue;
      if (containment.learning && m.t >= world.measureStart) containment.learning = false;
      await due(m.t);
      clock.now = Math.max(clock.now, m.t);
      const a = world.actors[m.actor]!;
      const outcome = await send(hooks, a, m, accounts, listed);
      if (outcome.accepted && m.invalid > 0 && name === 'dynamic') {
        const client: ClientInfo = a.kind === 'host' ? { listener: 'intercept', role: 'intercept', ip: m.ip, tls: false } : { listener: 'submission', role: 'submission', ip: m.ip, tls: true, user: a.name };
        feedback.push({ t: clock.now + MIN, client, n: Math.min(m.invalid, outcome.rcpts) });
      }
      if (!m.measured) continue;
      if (m.spam) {
        spamMessages++;
        if (outcome.accepted) {
          spamLeftTotal++;
          spamLeft.set(m.spam.incident, (spamLeft.get(m.spam.incident) ?? 0) + 1);
        } else if (!detectedAt.has(m.spam.incident)) detectedAt.set(m.spam.incident, m.spam.index);
      } else {
        legit++;
        if (outcome.action === 'reject') legitRefused++;
        else if (!outcome.accepted) legitDelayed++;
      }
    }
    const runLen = new Map<number, number>();
    for (const m of world.msgs) if (m.spam) runLen.set(m.spam.incident, Math.max(runLen.get(m.spam.incident) ?? 0, m.spam.index));
    const detections: number[] = [];
    const byStyle: Record<string, number[]> = {};
    let undetected = 0;
    for (const inc of world.incidents) {
      const d = detectedAt.get(inc.id);
      if (d === undefined) undetected++;
      const v = d ?? runLen.get(inc.id) ?? 0;
      detections.push(v);
      (byStyle[inc.style] ??= []).push(v);
    }
    const left = world.incidents.map((i) => spamLeft.get(i.id) ?? 0);
    return {
      name,
      spamMessages,
      spamLeft: spamLeftTotal,
      spamContainedRate: spamMessages ? 1 - spamLeftTotal / spamMessages : 1,
      leftPerIncident: { median: quantile(left, 0.5), p95: quantile(left, 0.95), max: Math.max(0, ...left) },
      detection: { median: quantile(detections, 0.5), p95: quantile(detections, 0.95), undetected },
      detectionByStyle: Object.fromEntries(Object.entries(byStyle).map(([k, v]) => [k, quantile(v, 0.5)])),
      legitMessages: legit,
      legitDelayed,
      legitRefused,
      legitDelayedRate: legit ? (legitDelayed + legitRefused) / legit : 0,
      events,
      falsePositives,
      webhookEvents,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One message through the hooks, as a session would (one message per connection). */
async function send(hooks: PolicyHooks, a: Actor, m: Msg, accounts: Map<string, Account>, listed: Set<string>): Promise<{ accepted: boolean; action: Verdict['action']; rcpts: number }> {
  const host = a.kind === 'host';
  if (host && listed.has(a.homeIp)) return { accepted: false, action: 'reject', rcpts: 0 }; // dnsbl.yaml: XBL refused on intercept
  const listener = host ? { name: 'intercept', role: 'intercept' as const } : { name: 'submission', role: 'submission' as const };
  const conn = await hooks.connect({ listener: listener as never, ip: m.ip });
  const base: ClientInfo = { listener: listener.name, role: listener.role, ip: m.ip, tls: !host, ...(conn.netblockClass ? { netblockClass: conn.netblockClass } : {}) };
  const client: ClientInfo = host ? base : { ...base, user: a.name };
  try {
    if (conn.verdict.action !== 'accept') return { accepted: false, action: conn.verdict.action, rcpts: 0 };
    const account = host ? undefined : accounts.get(a.name);
    if (!host && hooks.auth) {
      if (account?.suspended) return { accepted: false, action: 'reject', rcpts: 0 }; // AUTH refuses a suspended account
      await hooks.auth({ client, user: a.name, phase: 'before' });
      await hooks.auth({ client, user: a.name, phase: 'after', ok: true });
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
    const facts = { ...tx, recipients: ok, size: 2000, headerFrom: [mailFrom], receivedCount: 0, bodyFingerprint: m.fp };
    const dv = await hooks.data(facts);
    if (dv.action === 'accept') await hooks.accepted?.(facts);
    return { accepted: dv.action === 'accept', action: dv.action, rcpts: ok.length };
  } finally {
    hooks.disconnect?.({ client });
  }
}

export async function simulate(opts: Partial<SimOptions> = {}): Promise<SimReport> {
  const t0 = performance.now();
  const o: SimOptions = { ...DEFAULT_OPTIONS, ...opts };
  const world = generate(o);
  const population: Record<string, number> = {};
  for (const a of world.actors) population[a.kind] = (population[a.kind] ?? 0) + 1;
  const incidents: Record<string, number> = {};
  for (const i of world.incidents) incidents[i.style] = (incidents[i.style] ?? 0) + 1;
  const stat = await drive('static', o, world);
  const dyn = await drive('dynamic', o, world);
  const { policiesDir: _p, ...shown } = o;
  return {
    options: shown,
    population,
    incidents,
    legitMessages: dyn.legitMessages,
    spamMessages: dyn.spamMessages,
    static: stat,
    dynamic: dyn,
    ms: Math.round(performance.now() - t0),
  };
}
