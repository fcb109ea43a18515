/**
 * Console sessions: logging in with an admin token gives a random session id
 * (an HttpOnly, SameSite=Strict cookie) so the token itself is sent once, in a
 * POST body, and never sits in a URL, the browser history or a log. Each
 * session carries its own CSRF token for the action forms. Kept in memory
 * (bounded): a restart logs the desk out, which is the safe way round.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Access } from '../admin/server';

export interface Session {
  readonly id: string;
  /** 'operate': the operator token logged in; 'read': the read-only one. */
  readonly role: Access;
  readonly csrf: string;
  expiresAt: number;
  /** What the last action did, shown once on the next page. */
  flash?: string;
}

const MAX_SESSIONS = 1000;

export class Sessions {
  private readonly byId = new Map<string, Session>();

  constructor(private readonly ttlMs: number, private readonly clock: () => number = Date.now) {}

  create(role: Access): Session {
    const now = this.clock();
    for (const [id, s] of this.byId) if (s.expiresAt <= now) this.byId.delete(id);
    // Past the cap the oldest session goes (Map keeps insertion order).
    if (this.byId.size >= MAX_SESSIONS) this.byId.delete(this.byId.keys().next().value!);
    const s: Session = { id: randomBytes(32).toString('base64url'), role, csrf: randomBytes(32).toString('base64url'), expiresAt: now + this.ttlMs };
    this.byId.set(s.id, s);
    return s;
  }

  /** The live session with this id (sliding expiry), or undefined. */
  get(id: string | undefined): Session | undefined {
    if (!id) return undefined;
    const s = this.byId.get(id);
    if (!s) return undefined;
    const now = this.clock();
    if (s.expiresAt <= now) {
      this.byId.delete(id);
      return undefined;
    }
    s.expiresAt = now + this.ttlMs;
    return s;
  }

  end(id: string): void {
    this.byId.delete(id);
  }
}

/** Whether a form's CSRF field is this session's token (constant time). */
export function csrfMatches(s: Session, given: string | null): boolean {
  return sameSecret(s.csrf, given);
}

/** Two secrets, both present and equal (constant time). */
export function sameSecret(expected: string | undefined, given: string | null | undefined): boolean {
  if (!expected || !given) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Failed logins per client address: after `max` failures within `windowMs`
 * the address may not try again until the window has passed (429). Bounded:
 * past 10,000 addresses the oldest entry is dropped.
 */
export class LoginLimiter {
  private readonly failures = new Map<string, { count: number; since: number }>();

  constructor(private readonly max: number, private readonly windowMs: number, private readonly clock: () => number = Date.now) {}

  blocked(ip: string): boolean {
    const f = this.failures.get(ip);
    if (!f) return false;
    if (this.clock() - f.since >= this.windowMs) {
      this.failures.delete(ip);
      return false;
    }
    return f.count >= this.max;
  }

  failed(ip: string): void {
    const f = this.failures.get(ip);
    if (f && this.clock() - f.since < this.windowMs) f.count++;
    else {
      if (this.failures.size >= 10_000) this.failures.delete(this.failures.keys().next().value!);
      this.failures.set(ip, { count: 1, since: this.clock() });
    }
  }

  succeeded(ip: string): void {
    this.failures.delete(ip);
  }
}
