/**
 * The connection pool: how many SMTP sessions may be open, per destination
 * and in total, and which idle sessions can be reused.
 *
 * A *lease* is the right to hold one session to one destination (a routes.ts
 * key), optionally inside a *group* of destinations with a limit of its own
 * (a mailbox provider seen from one egress pool, shaping.ts: its
 * maxConnections across all the domains it hosts). It counts against the destination's limit (concurrencyPerDestination)
 * and the global one (maxConnections) from the moment it is granted — while
 * the holder is still connecting — until it is released. A lease either comes
 * with an idle session to reuse or with none (the holder opens one). When no
 * lease can be granted the caller waits in a FIFO queue (a queue, not a
 * failure); a waiter for one destination never blocks waiters for others.
 * When the global (or the group's) limit is reached, an idle session of
 * another destination (of the group) is closed to make room.
 *
 * Released sessions stay idle for poolIdleMs, are closed after
 * maxMessagesPerConnection transactions, and are dropped as soon as the
 * server closes them. A session that errored is never pooled. The pool does
 * not talk SMTP itself beyond closing: RSET on reuse is the caller's job.
 */
import { closeSession, type Session } from './client';

export interface PoolLimits {
  readonly perDestination: number;
  readonly total: number;
  readonly idleMs: number;
  readonly maxMessagesPerConnection: number;
}

/** A group of destinations sharing a session limit. */
export interface LeaseGroup {
  readonly key: string;
  readonly limit: number;
}

export interface Lease {
  readonly dest: string;
  readonly group?: string;
  /** Transactions per session for this lease (else the pool's maxMessagesPerConnection). */
  readonly maxMessages?: number;
  /** An idle session to reuse (after RSET), or undefined: open a new one. */
  readonly idle?: Session;
}

interface Idle {
  readonly session: Session;
  readonly timer: NodeJS.Timeout;
  readonly onEnd: () => void;
}

interface Dest {
  /** Leases granted plus idle sessions. */
  open: number;
  group?: string;
  /** Most recently released last. */
  idle: Idle[];
}

interface Waiter {
  readonly dest: string;
  readonly limit: number;
  readonly group?: LeaseGroup;
  readonly maxMessages?: number;
  readonly grant: (lease: Lease | null) => void;
}

export interface PoolStats {
  readonly total: number;
  readonly idle: number;
  readonly waiting: number;
}

export class ConnectionPool {
  private readonly dests = new Map<string, Dest>();
  private readonly waiters: Waiter[] = [];
  /** Per group: leases granted plus idle sessions of its destinations. */
  private readonly groupOpen = new Map<string, number>();
  private total = 0;
  private closed = false;

  constructor(private readonly limits: PoolLimits) {}

  /**
   * A lease for `dest`, waiting for room if needed; null once the pool is
   * closed. `perDestination` overrides the limit for this destination (an
   * egress pool's own; its destinations are keyed by pool).
   */
  acquire(dest: string, perDestination = this.limits.perDestination, shape?: { group?: LeaseGroup; maxMessages?: number }): Promise<Lease | null> {
    if (this.closed) return Promise.resolve(null);
    return new Promise((grant) => {
      this.waiters.push({ dest, limit: perDestination, group: shape?.group, maxMessages: shape?.maxMessages, grant });
      this.pump();
    });
  }

  /**
   * Give a lease back. With a healthy session and `reusable`, the session is
   * kept idle for the next lease of the same destination; otherwise closed.
   */
  release(lease: Lease, session: Session | undefined, reusable: boolean): void {
    const d = this.dest(lease.dest);
    const keep =
      session !== undefined &&
      reusable &&
      !this.closed &&
      !session.broken &&
      !session.conn.destroyed &&
      session.messages < Math.min(this.limits.maxMessagesPerConnection, lease.maxMessages ?? Infinity) &&
      this.limits.idleMs > 0;
    if (session && !keep) closeSession(session);
    if (keep && session) {
      const timer = setTimeout(() => this.dropIdle(lease.dest, session, true), this.limits.idleMs);
      timer.unref();
      const onEnd = (): void => this.dropIdle(lease.dest, session, false);
      session.conn.once('end', onEnd);
      d.idle.push({ session, timer, onEnd });
    } else {
      this.forget(lease.dest, d);
    }
    this.pump();
  }

  /** Stop granting leases, fail waiters, close idle sessions. Leased sessions close on release. */
  close(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w.grant(null);
    for (const [name, d] of this.dests) {
      for (const i of d.idle.splice(0)) {
        this.unwatch(i);
        closeSession(i.session);
        this.forget(name, d);
      }
    }
  }

  stats(): PoolStats {
    let idle = 0;
    for (const d of this.dests.values()) idle += d.idle.length;
    return { total: this.total, idle, waiting: this.waiters.length };
  }

  private dest(name: string): Dest {
    let d = this.dests.get(name);
    if (!d) {
      d = { open: 0, idle: [] };
      this.dests.set(name, d);
    }
    return d;
  }

  private forget(name: string, d: Dest): void {
    d.open--;
    this.total--;
    if (d.group !== undefined) {
      const n = (this.groupOpen.get(d.group) ?? 1) - 1;
      if (n <= 0) this.groupOpen.delete(d.group);
      else this.groupOpen.set(d.group, n);
    }
    if (d.open === 0) this.dests.delete(name);
  }

  private unwatch(i: Idle): void {
    clearTimeout(i.timer);
    i.session.conn.off('end', i.onEnd);
  }

  private dropIdle(name: string, session: Session, quit: boolean): void {
    const d = this.dests.get(name);
    const at = d ? d.idle.findIndex((i) => i.session === session) : -1;
    if (!d || at < 0) return;
    const [i] = d.idle.splice(at, 1);
    this.unwatch(i);
    if (quit) closeSession(session);
    else session.broken = true;
    this.forget(name, d);
    this.pump();
  }

  /** Grant whatever can be granted, in FIFO order per destination. */
  private pump(): void {
    for (let n = 0; n < this.waiters.length; ) {
      const w = this.waiters[n];
      const lease = this.tryGrant(w);
      if (lease) {
        this.waiters.splice(n, 1);
        w.grant(lease);
      } else n++;
    }
  }

  private tryGrant(w: Waiter): Lease | null {
    const name = w.dest;
    const shape = { ...(w.group ? { group: w.group.key } : {}), ...(w.maxMessages !== undefined ? { maxMessages: w.maxMessages } : {}) };
    const groupOpen = (): number => (w.group ? (this.groupOpen.get(w.group.key) ?? 0) : 0);
    const groupFull = (): boolean => w.group !== undefined && groupOpen() >= w.group.limit;
    // A group whose limit was cut (a throttle reply): surplus idle sessions are closed rather than reused.
    while (w.group && groupOpen() > w.group.limit && this.evictIdle('', w.group.key));
    const d = this.dest(name);
    const idle = d.idle.pop();
    if (idle) {
      this.unwatch(idle);
      return { dest: name, idle: idle.session, ...shape };
    }
    const giveUp = (): null => {
      if (d.open === 0) this.dests.delete(name);
      return null;
    };
    if (d.open >= w.limit) return giveUp();
    if (groupFull() && !this.evictIdle(name, w.group!.key)) return giveUp();
    if (this.total >= this.limits.total && !this.evictIdle(name)) return giveUp();
    d.open++;
    this.total++;
    if (w.group) {
      d.group = w.group.key;
      this.groupOpen.set(w.group.key, (this.groupOpen.get(w.group.key) ?? 0) + 1);
    }
    return { dest: name, ...shape };
  }

  /** Close an idle session (its oldest) of another destination (of the group) to free a slot. */
  private evictIdle(except: string, group?: string): boolean {
    let victim: { name: string; d: Dest } | undefined;
    for (const [name, d] of this.dests) {
      if (name !== except && d.idle.length > 0 && (group === undefined || d.group === group)) {
        victim = { name, d };
        break;
      }
    }
    if (!victim) return false;
    const i = victim.d.idle.shift() as Idle;
    this.unwatch(i);
    closeSession(i.session);
    this.forget(victim.name, victim.d);
    return true;
  }
}
