/**
 * AUTH scheduling per address. Brute force versus NAT:
 *
 * The auth-failures policy (quotas.yaml authFailures) delays attempts
 * after `delayAfter` failures and locks out at `lockoutAfter`, judging
 * each attempt by the failures counted BEFORE it. Attempts running side by
 * side do not see each other's failures, so a guesser with 20 parallel
 * connections would get ~20 hashes past the lockout and skip the delays.
 * Running every attempt of an address one at a time
 * closes that, but makes everyone behind one address (an office NAT, a
 * CGNAT pool) wait for each other's password hash, and for an attacker's
 * delays, even when nobody has failed.
 *
 * So: an attempt runs in parallel with the others from its address only
 * while the attempts in flight stay below the headroom the policy reports
 * (PolicyHooks.authGate: min(delayAfter, lockoutAfter) less the failures
 * in the window, for the address and the account; 0 when locked out;
 * Infinity without an auth-failures rule). Then even if every attempt in flight
 * fails, none of them could have been delayed or refused had they run one
 * at a time: each one's outcome is the serial outcome, and the number of
 * hashes before a lockout stays at lockoutAfter. Past that point (the
 * address has failed, or a burst exhausts the headroom), attempts queue
 * one at a time behind the in-flight ones, and the policy's
 * delays apply one after the other. A clean address thus gets up to
 * min(delayAfter, lockoutAfter) parallel AUTHs (5 with the defaults).
 *
 * The headroom read is a store read; attempts that finish while it is
 * outstanding are counted as failures (`done`), so a decision never
 * misses a failure recorded in between. Scope: this process and listener
 * (the scheduler is per listener); `key` is the policy's address subject (IPv6 by prefix).
 *
 * It lives in the policy layer because it is policy (how many attempts an
 * address may have in flight, derived from the auth-failures rule); the
 * SMTP session only hands it each attempt.
 */
import type { AuthGate } from './types';

/** One address's AUTH attempts (the entry is dropped when none is inside run()). */
interface AddressState {
  /** Attempts admitted to run in parallel, not finished yet. */
  inFlight: number;
  /** Attempts finished so far (either way): a decision counts those that finished while it read the headroom. */
  done: number;
  /** Tail of the one-at-a-time queue; set while an attempt waits in it or runs from it. */
  tail?: Promise<void>;
  /** Wake-ups for the head of that queue, called when inFlight drops to 0. */
  drained: Array<() => void>;
  /** Attempts inside run() for this address. */
  users: number;
}

export class AuthScheduler {
  private readonly addresses = new Map<string, AddressState>();

  /**
   * Runs one AUTH attempt (`attempt`: verify the password and answer) under
   * the address's schedule: in parallel while the gate's headroom allows,
   * else one at a time. `fallbackKey` (the client address) when the policy
   * gives no gate.
   */
  async run(gate: AuthGate | undefined, fallbackKey: string, attempt: () => Promise<void>): Promise<void> {
    const key = gate?.key ?? fallbackKey;
    let g = this.addresses.get(key);
    if (!g) {
      g = { inFlight: 0, done: 0, drained: [], users: 0 };
      this.addresses.set(key, g);
    }
    g.users++;
    try {
      if (gate && !g.tail) {
        const done0 = g.done;
        let room = 0;
        try {
          room = await gate.headroom();
        } catch {
          // The state store is down, say: the one-at-a-time path's policy check reports it.
        }
        if (!g.tail && g.inFlight + (g.done - done0) < room) {
          g.inFlight++;
          try {
            await attempt();
          } finally {
            g.inFlight--;
            g.done++;
            if (g.inFlight === 0) for (const wake of g.drained.splice(0)) wake();
          }
          return;
        }
      }
      await this.alone(g, attempt);
    } finally {
      if (--g.users === 0) this.addresses.delete(key);
    }
  }

  /** One at a time: after the queued attempts before it and once no parallel attempt is in flight. */
  private async alone(g: AddressState, attempt: () => Promise<void>): Promise<void> {
    const prev = g.tail ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    g.tail = tail;
    await prev;
    try {
      if (g.inFlight > 0) await new Promise<void>((r) => g.drained.push(r));
      await attempt();
    } finally {
      g.done++;
      release();
      if (g.tail === tail) g.tail = undefined;
    }
  }
}
