/**
 * Several gateways as one (fleet mode, `state.backend: redis`): what an
 * operator does on one gateway holds on all of them.
 *
 *   suspensions  P+sh:fleet:suspended  hash  account → {reason, by, at}
 *                Every gateway keeps a copy in memory (the account store
 *                consults it on every lookup, so AUTH and the account-state
 *                rule see it), updated at once by an event and re-read every
 *                syncInterval and after every reconnection (pub/sub is
 *                fire-and-forget; the hash is the truth). While Redis is
 *                away a gateway keeps enforcing the last copy it had.
 *   quota clears through the state store itself (del of the subject's keys):
 *                with Redis that is the fleet's one copy.
 *   reload       an event every gateway answers by reloading and publishing
 *                its result; the asking gateway collects the answers of the
 *                live gateways (the node registry) for a bounded time.
 *   registry     P+sh:fleet:nodes  hash  node → {host, pid, started, seen,
 *                policyVersion, degraded}, refreshed every heartbeat.
 *   events       channel P+sh:fleet:events, JSON {type, origin, ...}.
 *
 * A suspension here is an overlay on the accounts file: it suspends an
 * account everywhere; lifting it does not lift a suspension written in a
 * gateway's own accounts file (`smarthost account suspend`).
 *
 * With the memory backend (one gateway) there is no fleet: quota clears and
 * reloads act on this gateway, suspensions are refused (use the CLI).
 *
 * In a multi-process gateway the primary is the fleet member (registry,
 * reloads, which it passes to its workers); workers only follow
 * suspensions.
 *
 * Talks to: Redis (its own keys, pub/sub on a second connection), the
 * state store, the account store, the app's reload. Trusts: the admin API
 * (authenticated) for what it asks; fleet members for their events.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { AccountStore } from '../accounts/store';
import type { Logger } from '../log';
import { accountSubject, ipSubject } from '../policy/checks/common';
import type { PolicySet } from '../policy/load';
import { RATE_LIMITS, type LimitName } from '../policy/quotas';
import type { ReloadResult } from '../policy/runtime';
import { keys, type Subject } from '../state/keys';
import type { RedisClient } from '../state/redis';
import type { StateStatus } from '../state/resilient';
import type { StateStore } from '../state/store';

export interface Suspension {
  readonly account: string;
  readonly reason?: string;
  readonly by?: string;
  /** ms since the epoch */
  readonly at: number;
}

export interface FleetNode {
  readonly node: string;
  readonly host: string;
  readonly pid: number;
  readonly started: number;
  readonly seen: number;
  readonly policyVersion: number;
  readonly degraded: boolean;
  readonly alive: boolean;
}

export interface NodeReload {
  readonly node: string;
  readonly ok: boolean;
  readonly version: number;
  readonly error?: string;
}

export interface FleetReload {
  readonly ok: boolean;
  readonly results: readonly NodeReload[];
  /** Live nodes that did not answer in time. */
  readonly missing: readonly string[];
}

type FleetEvent =
  | { type: 'suspend'; origin: string; suspension: Suspension }
  | { type: 'unsuspend'; origin: string; account: string }
  | { type: 'reload'; origin: string; id: string }
  | { type: 'reload-result'; origin: string; id: string; result: NodeReload };

export class FleetUnavailableError extends Error {}

export interface FleetDeps {
  readonly role: 'single' | 'primary' | 'worker';
  readonly logger: Logger;
  readonly accounts: AccountStore;
  readonly store: StateStore;
  readonly storeStatus: () => StateStatus;
  /** The shared Redis (fleet mode); absent with the memory backend. */
  readonly redis?: RedisClient;
  readonly keyPrefix: string;
  /** This gateway's reload (policy, DKIM keys, ...). */
  readonly reload: () => Promise<{ ok: boolean; policy: ReloadResult }>;
  readonly policy: () => { readonly version: number; readonly policy: PolicySet };
  readonly nodeName?: string;
  readonly heartbeatMs?: number;
  readonly syncIntervalMs?: number;
}

const STALE_AFTER_BEATS = 3;
const FORGET_AFTER_MS = 3_600_000;

export class Fleet {
  readonly node: string;
  private readonly started = Date.now();
  private readonly suspended = new Map<string, Suspension>();
  private sub: RedisClient | undefined;
  private timers: NodeJS.Timeout[] = [];
  private readonly waiting = new Map<string, (r: NodeReload) => void>();
  private readonly onReady = () => void this.sync().catch(() => undefined);
  private readonly k: { nodes: string; suspended: string; events: string };

  constructor(private readonly deps: FleetDeps) {
    this.node = deps.nodeName ?? `${os.hostname()}:${process.pid}`;
    const p = deps.keyPrefix;
    this.k = { nodes: `${p}sh:fleet:nodes`, suspended: `${p}sh:fleet:suspended`, events: `${p}sh:fleet:events` };
    if (deps.redis) deps.accounts.setSuspensionOverlay((name) => this.suspended.has(name.toLowerCase()));
  }

  /** Fleet mode (a shared Redis) or a gateway on its own. */
  get shared(): boolean {
    return this.deps.redis !== undefined;
  }

  private get member(): boolean {
    return this.deps.role !== 'worker';
  }

  async start(): Promise<void> {
    const redis = this.deps.redis;
    if (!redis) return;
    this.sub = redis.duplicate();
    this.sub.on('error', () => undefined); // reconnection noise; the state store logs outages
    this.sub.on('message', (_channel: string, text: string) => this.onEvent(text));
    // ioredis re-subscribes by itself after a reconnection; the hash is re-read then.
    await this.sub.subscribe(this.k.events).catch((err: Error) => this.deps.logger.warn({ evt: 'fleet', err: err.message }, 'fleet: cannot subscribe yet (will on reconnection)'));
    redis.on('ready', this.onReady);
    await this.sync().catch((err: Error) => this.deps.logger.warn({ evt: 'fleet', err: err.message }, 'fleet: suspensions not loaded yet (Redis unavailable)'));
    const every = (ms: number, fn: () => Promise<unknown>) => {
      const t = setInterval(() => void fn().catch(() => undefined), ms);
      t.unref();
      this.timers.push(t);
    };
    every(this.deps.syncIntervalMs ?? 5000, () => this.sync());
    if (this.member) {
      await this.heartbeat().catch(() => undefined);
      every(this.deps.heartbeatMs ?? 5000, () => this.heartbeat());
    }
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.deps.redis?.removeListener('ready', this.onReady);
    if (this.member && this.deps.redis?.status === 'ready') await this.deps.redis.hdel(this.k.nodes, this.node).catch(() => undefined);
    if (this.sub) this.sub.disconnect();
    this.sub = undefined;
  }

  // ---- events ----

  private publish(e: FleetEvent): Promise<number> {
    return this.deps.redis!.publish(this.k.events, JSON.stringify(e));
  }

  private onEvent(text: string): void {
    try {
      this.handle(JSON.parse(text) as FleetEvent);
    } catch (err) {
      // A malformed event (another version, a stray publisher) is dropped, never fatal.
      this.deps.logger.warn({ evt: 'fleet', err: (err as Error).message }, 'fleet: ignored a malformed event');
    }
  }

  private handle(e: FleetEvent): void {
    switch (e.type) {
      case 'suspend':
        this.suspended.set(e.suspension.account.toLowerCase(), e.suspension);
        if (e.origin !== this.node) this.deps.logger.info({ evt: 'fleet', action: 'suspend', account: e.suspension.account, origin: e.origin }, 'account suspended fleet-wide');
        break;
      case 'unsuspend':
        this.suspended.delete(e.account.toLowerCase());
        if (e.origin !== this.node) this.deps.logger.info({ evt: 'fleet', action: 'unsuspend', account: e.account, origin: e.origin }, 'fleet-wide suspension lifted');
        break;
      case 'reload':
        if (this.member) void this.answerReload(e.id, e.origin);
        break;
      case 'reload-result':
        (this.waiting.get(`${e.id}\n${e.result.node}`) ?? this.waiting.get(`${e.id}\n*`))?.(e.result);
        break;
    }
  }

  private async answerReload(id: string, origin: string): Promise<void> {
    let result: NodeReload;
    try {
      const r = await this.deps.reload();
      result = { node: this.node, ok: r.ok, version: r.policy.version, ...(r.policy.error ? { error: r.policy.error } : {}) };
    } catch (err) {
      result = { node: this.node, ok: false, version: this.deps.policy().version, error: (err as Error).message };
    }
    this.deps.logger.info({ evt: 'reload', what: 'fleet', origin, ok: result.ok, version: result.version }, 'reloaded on a fleet request');
    await this.publish({ type: 'reload-result', origin: this.node, id, result }).catch(() => undefined);
  }

  // ---- suspensions ----

  /** Re-read the suspension hash (the truth; events are only fast). */
  async sync(): Promise<void> {
    const redis = this.deps.redis;
    if (!redis) return;
    const all = await redis.hgetall(this.k.suspended);
    const next = new Map<string, Suspension>();
    for (const [name, json] of Object.entries(all)) {
      try {
        next.set(name, JSON.parse(json) as Suspension);
      } catch {
        next.set(name, { account: name, at: 0 });
      }
    }
    for (const name of [...this.suspended.keys()]) if (!next.has(name)) this.suspended.delete(name);
    for (const [name, s] of next) this.suspended.set(name, s);
  }

  isSuspended(account: string): boolean {
    return this.suspended.has(account.toLowerCase());
  }

  suspensions(): Suspension[] {
    return [...this.suspended.values()].sort((a, b) => a.account.localeCompare(b.account));
  }

  private requireRedis(what: string): RedisClient {
    if (!this.deps.redis) throw new FleetUnavailableError(`${what} needs the fleet's shared state (state.backend: redis); on a single gateway use \`smarthost account suspend|unsuspend\``);
    return this.deps.redis;
  }

  async suspend(account: string, opts: { reason?: string; by?: string } = {}): Promise<Suspension> {
    const redis = this.requireRedis('a fleet-wide suspension');
    const s: Suspension = { account: account.toLowerCase(), ...(opts.reason ? { reason: opts.reason } : {}), ...(opts.by ? { by: opts.by } : {}), at: Date.now() };
    await this.guard(redis.hset(this.k.suspended, s.account, JSON.stringify(s)));
    this.suspended.set(s.account, s);
    await this.guard(this.publish({ type: 'suspend', origin: this.node, suspension: s }));
    this.deps.logger.info({ evt: 'fleet', action: 'suspend', account: s.account, reason: s.reason }, 'account suspended fleet-wide');
    return s;
  }

  /** Lift a fleet-wide suspension; says whether there was one. */
  async unsuspend(account: string): Promise<boolean> {
    const redis = this.requireRedis('lifting a fleet-wide suspension');
    const name = account.toLowerCase();
    const n = await this.guard(redis.hdel(this.k.suspended, name));
    this.suspended.delete(name);
    await this.guard(this.publish({ type: 'unsuspend', origin: this.node, account: name }));
    this.deps.logger.info({ evt: 'fleet', action: 'unsuspend', account: name, was: n > 0 }, 'fleet-wide suspension lifted');
    return n > 0;
  }

  private async guard<T>(p: Promise<T>): Promise<T> {
    try {
      return await p;
    } catch (err) {
      throw new FleetUnavailableError(`fleet state unavailable: ${(err as Error).message}`);
    }
  }

  // ---- quota and lockout clears ----

  /** The counter subject of an account name or a client address (IPv6 by its quota prefix). */
  subject(who: { account?: string; ip?: string }): Subject {
    if (who.account) return accountSubject(who.account);
    return ipSubject({ ip: who.ip!, data: this.deps.policy().policy } as Parameters<typeof ipSubject>[0]);
  }

  /** Forget a subject's quota counts (all rate limits, or those named). Returns the keys cleared. */
  async clearQuotas(who: { account?: string; ip?: string }, limits: readonly LimitName[] = RATE_LIMITS): Promise<string[]> {
    const s = this.subject(who);
    const cleared = limits.map((l) => keys.quota(s, l));
    for (const k of cleared) await this.deps.store.del(k);
    this.deps.logger.info({ evt: 'fleet', action: 'clear-quotas', subject: `${s.kind}:${s.id}`, limits }, 'quota counts cleared');
    return cleared;
  }

  /** Lift an AUTH lockout and forget the failures behind it. */
  async clearLockout(who: { account?: string; ip?: string }): Promise<string[]> {
    const s = this.subject(who);
    const cleared = [keys.authLock(s), keys.authFailures(s)];
    for (const k of cleared) await this.deps.store.del(k);
    this.deps.logger.info({ evt: 'fleet', action: 'clear-lockout', subject: `${s.kind}:${s.id}` }, 'AUTH lockout cleared');
    return cleared;
  }

  // ---- reload ----

  /** Reload every live gateway; waits up to timeoutMs for their answers. */
  async reloadAll(timeoutMs = 5000): Promise<FleetReload> {
    if (!this.deps.redis) {
      const r = await this.deps.reload();
      const result: NodeReload = { node: this.node, ok: r.ok, version: r.policy.version, ...(r.policy.error ? { error: r.policy.error } : {}) };
      return { ok: r.ok, results: [result], missing: [] };
    }
    const expected = new Set((await this.guard(this.nodes())).filter((n) => n.alive).map((n) => n.node));
    expected.add(this.node);
    const id = randomBytes(8).toString('hex');
    const results: NodeReload[] = [];
    const done = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      const left = new Set(expected);
      const collect = (r: NodeReload) => {
        results.push(r);
        left.delete(r.node);
        if (left.size === 0) {
          clearTimeout(timer);
          resolve();
        }
      };
      for (const n of expected) this.waiting.set(`${id}\n${n}`, collect);
      // Answers from nodes not in the registry yet are collected too.
      this.waiting.set(`${id}\n*`, collect);
    });
    await this.guard(this.publish({ type: 'reload', origin: this.node, id }));
    await done;
    for (const key of [...this.waiting.keys()]) if (key.startsWith(`${id}\n`)) this.waiting.delete(key);
    const answered = new Set(results.map((r) => r.node));
    const missing = [...expected].filter((n) => !answered.has(n)).sort();
    results.sort((a, b) => a.node.localeCompare(b.node));
    return { ok: missing.length === 0 && results.every((r) => r.ok), results, missing };
  }

  // ---- registry ----

  private async heartbeat(): Promise<void> {
    const redis = this.deps.redis!;
    const now = Date.now();
    const me = { host: os.hostname(), pid: process.pid, started: this.started, seen: now, policyVersion: this.deps.policy().version, degraded: this.deps.storeStatus().degraded };
    await redis.hset(this.k.nodes, this.node, JSON.stringify(me));
    // Forget gateways gone for long (a crash leaves its entry behind).
    const all = await redis.hgetall(this.k.nodes);
    const gone = Object.entries(all)
      .filter(([, json]) => {
        try {
          return (JSON.parse(json) as { seen: number }).seen < now - FORGET_AFTER_MS;
        } catch {
          return true;
        }
      })
      .map(([n]) => n);
    if (gone.length > 0) await redis.hdel(this.k.nodes, ...gone);
  }

  /** The fleet's gateways as the registry knows them (alive: seen within 3 heartbeats). */
  async nodes(): Promise<FleetNode[]> {
    if (!this.deps.redis) {
      return [{ node: this.node, host: os.hostname(), pid: process.pid, started: this.started, seen: Date.now(), policyVersion: this.deps.policy().version, degraded: false, alive: true }];
    }
    const all = await this.deps.redis.hgetall(this.k.nodes);
    const now = Date.now();
    const staleMs = STALE_AFTER_BEATS * (this.deps.heartbeatMs ?? 5000);
    const out: FleetNode[] = [];
    for (const [node, json] of Object.entries(all)) {
      try {
        const v = JSON.parse(json) as Omit<FleetNode, 'node' | 'alive'>;
        out.push({ node, ...v, alive: v.seen >= now - staleMs });
      } catch {
        // a foreign or broken entry: not ours to show
      }
    }
    return out.sort((a, b) => a.node.localeCompare(b.node));
  }
}
