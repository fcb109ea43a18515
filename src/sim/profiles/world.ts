/**
 * The world the behaviour profiles write into: seeded randomness, address
 * and network generators, accounts and intercept hosts, and the mail they
 * send (who, when, from which address, to whom, what it says, how many
 * recipients bounce or complain).
 *
 * This module and its siblings describe BEHAVIOUR ONLY. They never import
 * the detector (src/containment), its configuration (the containment and
 * quota policy files) or anything else outside this directory (test/sim/profiles-
 * independence.test.ts enforces it): the shapes come from public
 * descriptions of abuse and of ordinary mail, not from the thresholds they
 * are measured against.
 */

export const MIN = 60_000;
export const HOUR = 60 * MIN;
export const DAY = 24 * HOUR;

/** mulberry32: a small, fast, seeded PRNG (deterministic across runs). */
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

export type Side = 'attacker' | 'legitimate' | 'background';

export interface SimActor {
  readonly id: number;
  /** Account name (submission) or host label (intercept). */
  readonly name: string;
  readonly kind: 'account' | 'host';
  readonly plan: 'residential' | 'business';
  readonly homeIp: string;
  /** The address book: correspondents known before the simulation starts come first. */
  readonly contacts: string[];
  /** How many of `contacts` were written to in the 30 days before the start (imported history). */
  readonly known: number;
  /** The usual display name in From. */
  readonly displayName: string;
  /** The profile this actor belongs to, and the instance (one victim, one campaign, one sender). */
  readonly profile: string;
  readonly instance: number;
}

/** What a message says, as far as a mail header and body go. */
export interface SimContent {
  readonly subject: string;
  readonly body: string;
  /** The From display name (default: the actor's usual one). */
  readonly fromName?: string;
  readonly replyTo?: string;
}

export interface SimMail {
  readonly t: number;
  readonly actor: number;
  /** The client address: the home line, a mobile or hotel network, a proxy, a bot. */
  readonly ip: string;
  readonly rcpts: readonly string[];
  /** How many of the recipients a remote server refuses (5xx, dead or mistyped address). */
  readonly invalid: number;
  /** How many recipients press "this is spam" (an ARF report comes back later). */
  readonly complaints: number;
  readonly content: SimContent;
  /**
   * The profile's own episode: an attacker's mail after the compromise, a
   * legitimate profile's burst (the invitation, the greetings, the trip);
   * false for ordinary life around it.
   */
  readonly episode: boolean;
  readonly profile: string;
  readonly instance: number;
}

export interface WorldSpan {
  /** Start of imported history (t = 0 of the simulation). */
  readonly start: number;
  /** Start of measurement (after the warm-up the detector learns from). */
  readonly measureStart: number;
  readonly end: number;
}

const BIG = ['gmail.com', 'yahoo.com', 'outlook.com', 'hotmail.com', 'icloud.com', 'aol.com', 'gmx.net', 'web.de', 'orange.fr', 'comcast.net'];
const WORDS = 'about after again agenda always answer april attached autumn before birthday bring budget call cancel chance change children coffee concert contract could dinner doctor dates draft early evening family final friday garden great happy holiday hotel house invoice island kitchen later letter lunch march meeting monday morning music notes office order party photos please quote recipe report school second sunday summer thanks ticket today travel trip tuesday update visit weekend winter would yesterday'.split(' ');

export class World {
  readonly actors: SimActor[] = [];
  readonly mail: SimMail[] = [];
  /** An intercept address appears on a DNSBL (Spamhaus XBL/CBL lists infected hosts it sees spamming). */
  readonly listings: Array<{ readonly t: number; readonly ip: string }> = [];
  private instances = 0;

  constructor(readonly r: () => number, readonly span: WorldSpan) {}

  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.r() * xs.length)]!;
  }

  int(lo: number, hi: number): number {
    return lo + Math.floor(this.r() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.r() < p;
  }

  poisson(lambda: number): number {
    let n = 0;
    let p = Math.exp(-lambda);
    let s = p;
    const u = this.r();
    while (u > s && n < 1000) {
      n++;
      p *= lambda / n;
      s += p;
    }
    return n;
  }

  /** Binomial(n, p) by counting: how many of n recipients do something. */
  some(n: number, p: number): number {
    let k = 0;
    for (let i = 0; i < n; i++) if (this.r() < p) k++;
    return k;
  }

  domain(): string {
    return this.r() < 0.65 ? this.pick(BIG) : `d${Math.floor(this.r() * 5000)}.example`;
  }

  addr(domain = this.domain()): string {
    return `u${Math.floor(this.r() * 1e9).toString(36)}@${domain}`;
  }

  addrs(n: number): string[] {
    return Array.from({ length: n }, () => this.addr());
  }

  /** An address on some network that is not the actor's: a bot, a proxy, a hotel. */
  foreignIp(): string {
    return `${11 + Math.floor(this.r() * 200)}.${Math.floor(this.r() * 256)}.${Math.floor(this.r() * 256)}.${1 + Math.floor(this.r() * 254)}`;
  }

  /** Words of ordinary prose (different every call: people write their own mail). */
  prose(n: number): string {
    return Array.from({ length: n }, () => this.pick(WORDS)).join(' ');
  }

  /** A random token of letters (a rotating subject line, a URL path). */
  token(n = 8): string {
    return Array.from({ length: n }, () => String.fromCharCode(97 + Math.floor(this.r() * 26))).join('');
  }

  newInstance(): number {
    return this.instances++;
  }

  account(o: { profile: string; instance: number; plan?: 'residential' | 'business'; contacts: string[]; known?: number }): SimActor {
    const id = this.actors.length;
    const a: SimActor = {
      id,
      name: `user${id}@isp.example`,
      kind: 'account',
      plan: o.plan ?? 'residential',
      homeIp: `100.${64 + (id >> 16)}.${(id >> 8) & 255}.${id & 255}`,
      contacts: o.contacts,
      known: o.known ?? o.contacts.length,
      displayName: `Person ${id}`,
      profile: o.profile,
      instance: o.instance,
    };
    this.actors.push(a);
    return a;
  }

  host(o: { profile: string; instance: number; contacts: string[] }): SimActor {
    const id = this.actors.length;
    const h = this.actors.filter((a) => a.kind === 'host').length;
    const a: SimActor = {
      id,
      name: `host${h}`,
      kind: 'host',
      plan: 'residential',
      homeIp: `198.18.${(h >> 8) & 255}.${h & 255}`,
      contacts: o.contacts,
      known: o.contacts.length,
      displayName: `Home ${h}`,
      profile: o.profile,
      instance: o.instance,
    };
    this.actors.push(a);
    return a;
  }

  send(a: SimActor, m: { t: number; ip?: string; rcpts: readonly string[]; invalid?: number; complaints?: number; content: SimContent; episode?: boolean }): void {
    if (m.t < this.span.start || m.t >= this.span.end || m.rcpts.length === 0) return;
    this.mail.push({
      t: Math.floor(m.t),
      actor: a.id,
      ip: m.ip ?? a.homeIp,
      rcpts: m.rcpts,
      invalid: Math.min(m.invalid ?? 0, m.rcpts.length),
      complaints: Math.min(m.complaints ?? 0, m.rcpts.length),
      content: m.content,
      episode: m.episode === true,
      profile: a.profile,
      instance: a.instance,
    });
  }

  /** A time in the measured window, at least `margin` before its end. */
  measuredTime(margin = 2 * DAY): number {
    const span = Math.max(HOUR, this.span.end - margin - this.span.measureStart);
    return this.span.measureStart + Math.floor(this.r() * span);
  }

  /** `t` moved to the given hour of its day (plus up to `spreadH` hours). */
  atHour(t: number, hour: number, spreadH = 0): number {
    const day = t - (t % DAY);
    return day + hour * HOUR + Math.floor(this.r() * spreadH * HOUR);
  }
}
