/**
 * The policy in force, and reloading it: a reload validates the whole
 * policy directory into a new engine and swaps it in with one assignment;
 * sessions ask `current()` at every phase, so open sessions carry on and
 * their next command meets the new policy. An invalid policy is refused
 * with file, key and reason, and the last good one stays in force. The
 * state store and the DNSBL answer cache are shared by successive engines,
 * so counters and cached lookups survive reloads.
 *
 * Companions are the policy files read by other modules (containment.yaml,
 * content.yaml, feedback.yaml): each is loaded (validated) together with
 * the policy files and applied only after every file of the reload was
 * valid, so an invalid companion refuses the whole reload like an invalid
 * rules.yaml, and the last good set stays in force.
 *
 * Talks to: the filesystem (through load.ts), the logger, the observer.
 */
import type { Account } from '../accounts/store';
import { ConfigError } from '../config/validate';
import type { ListenerRole } from '../envelope';
import type { Logger } from '../log';
import type { UserHash } from '../user-hash';
import type { StateStore } from '../state/store';
import { DnsblCache } from './dnsbl';
import { PolicyEngine } from './engine';
import { loadPolicy } from './load';
import type { PolicyObserver } from './types';

export interface RuntimeOptions {
  readonly dir: string;
  readonly listeners: ReadonlyArray<{ readonly name: string; readonly role: ListenerRole }>;
  readonly store: StateStore;
  readonly logger: Logger;
  readonly accounts?: { get(name: string): Account | undefined };
  readonly observer?: PolicyObserver;
  readonly clock?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly userHash?: UserHash;
}

/** A policy file read by another module, reloaded with the policy (see above). */
export interface PolicyCompanion<T = unknown> {
  /** Validate the file(s) of `dir`; throw ConfigError (file, key, reason) when invalid. */
  load(dir: string): T;
  /** Put a loaded value in force (called after every load of the reload succeeded). */
  apply(value: T): void;
}

export interface ReloadResult {
  readonly ok: boolean;
  /** The version in force after the attempt. */
  readonly version: number;
  readonly files: readonly string[];
  readonly error?: string;
  readonly ms: number;
}

export class PolicyRuntime {
  private engine: PolicyEngine;
  readonly dnsblCache = new DnsblCache();
  private readonly companions: PolicyCompanion[] = [];
  private loadedAtMs = Date.now();

  /** Loads the policy; throws ConfigError if it is invalid (a start must not run without one). */
  constructor(private readonly opts: RuntimeOptions) {
    this.engine = this.build(1);
  }

  private build(version: number): PolicyEngine {
    const policy = loadPolicy(this.opts.dir, { listeners: this.opts.listeners });
    return new PolicyEngine(policy, { ...this.opts, dnsblCache: this.dnsblCache }, version);
  }

  /** Load a companion now (throws ConfigError when invalid, like the constructor) and on every reload. */
  attach<T>(c: PolicyCompanion<T>): void {
    c.apply(c.load(this.opts.dir));
    this.companions.push(c as PolicyCompanion);
  }

  current(): PolicyEngine {
    return this.engine;
  }

  /** When the policy in force was loaded (start or last successful reload), ms since the epoch. */
  get loadedAt(): number {
    return this.loadedAtMs;
  }

  reload(): ReloadResult {
    const t0 = performance.now();
    try {
      const next = this.build(this.engine.version + 1);
      const values = this.companions.map((c) => c.load(this.opts.dir));
      this.engine = next;
      this.loadedAtMs = Date.now();
      this.companions.forEach((c, i) => c.apply(values[i]));
      const ms = Math.round(performance.now() - t0);
      this.opts.logger.info({ evt: 'reload', what: 'policy', version: next.version, files: next.policy.files.length, ms }, 'policy reloaded');
      this.opts.observer?.reload?.('ok');
      return { ok: true, version: next.version, files: next.policy.files, ms };
    } catch (err) {
      const ms = Math.round(performance.now() - t0);
      const error = err instanceof ConfigError ? err.message : `${(err as Error).message}`;
      this.opts.logger.error({ evt: 'reload', what: 'policy', ok: false, error, version: this.engine.version }, 'policy reload refused; the previous policy stays in force');
      this.opts.observer?.reload?.('error');
      return { ok: false, version: this.engine.version, files: this.engine.policy.files, error, ms };
    }
  }
}
