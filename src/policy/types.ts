/**
 * The contract between the SMTP session (which asks) and the policy engine
 * (which answers). The session calls one hook per SMTP phase and acts on the
 * Verdict: accept → continue, tempfail/reject → reply from the table,
 * hold → accept into the hold queue. The engine never touches sockets.
 */
import type { ClientInfo, Verdict, Via } from '../envelope';
import type { ListenerConfig } from '../config/listener';
import type { Account } from '../accounts/store';
import type { SigningAuthority } from '../dkim/types';
import type { SigningFacts } from './signing';
import type { MessageTraits } from '../message-traits';

export interface ConnectFacts {
  readonly listener: ListenerConfig;
  readonly ip: string;
  /** Unset: a native listener; else which Postfix protocol asked (src/postfix). */
  readonly via?: Via;
}

export interface ConnectDecision {
  readonly verdict: Verdict;
  /** Netblock class of the client, when it is inside a subscriber netblock. */
  readonly netblockClass?: string;
  /** The address's open connections were counted (a quota reads them): the disconnect gives it back. */
  readonly countedConnection: boolean;
}

/**
 * The auth hook's answer: the verdict, and whether this AUTH counted the
 * account's open connection: only phase `after` with ok, and only when a
 * quota limits the account's concurrentConnections (false otherwise). The
 * disconnect gives back exactly that (DisconnectFacts.countedAccount), so a
 * reload that adds or removes the limit in between never makes it drift.
 */
export interface AuthVerdict extends Verdict {
  readonly countedAccount: boolean;
}

/**
 * What the disconnect releases: the client, whether its connect was counted
 * (ConnectDecision), and whether its AUTH counted the account's connection
 * (AuthVerdict.countedAccount of the `after` call). A client that Postfix
 * authenticated (its SASL user, src/postfix) has a user but was never counted.
 */
export interface DisconnectFacts {
  readonly client: ClientInfo;
  readonly countedConnection: boolean;
  readonly countedAccount: boolean;
}

export interface TransactionFacts {
  readonly client: ClientInfo;
  readonly account?: Account;
  readonly mailFrom: string;
  /** Recipients accepted so far in this transaction. */
  readonly recipients: readonly string[];
}

export interface RcptFacts extends TransactionFacts {
  readonly rcpt: string;
  /**
   * Told how to take back what the quotas counted for this recipient (when
   * they counted it): containment, when it later throttles or holds the
   * message, un-counts its recipients (recipientsPerHour/Day).
   */
  readonly counted?: (takeBack: () => Promise<void>) => void;
  /**
   * Asked only when recipientsPerHour would refuse this recipient: how many
   * recipients over that limit the sender may send now (containment: an
   * account in good standing writing to its own correspondents, up to the
   * size of its address book). recipientsPerDay still holds.
   */
  readonly allowance?: (limit: 'recipientsPerHour') => Promise<number>;
}

export interface DataFacts extends TransactionFacts {
  readonly size: number;
  /** Addresses in the header From (lower case). */
  readonly headerFrom: readonly string[];
  readonly receivedCount: number;
  /** What containment reads of the message (body fingerprint, link domains, Reply-To, display name). */
  readonly traits?: MessageTraits;
  /**
   * Asked by the engine after its own data rules accepted or held the
   * message, before it settles: a stricter verdict from here (containment)
   * refuses the message and takes back what the quotas counted for it.
   */
  readonly lastWord?: (v: Verdict) => Promise<Verdict>;
}

export interface PolicyHooks {
  connect(f: ConnectFacts): Promise<ConnectDecision>;
  /**
   * Asked twice per AUTH: `before` the password is checked (a locked-out
   * client or account is refused without reaching the account store) and
   * `after`, with the result (to count failures, and on success the
   * account's open connection when a quota limits it: AuthVerdict).
   */
  auth?(f: { client: ClientInfo; user: string; phase: 'before' | 'after'; ok?: boolean }): Promise<AuthVerdict>;
  /**
   * For the session's AUTH scheduling (src/smtp/session.ts onAuth): `key`
   * names the attempts that share brute-force state (the client address,
   * an IPv6 client by its prefix); `headroom()` reads how many more
   * failures that address and the account `user` can take before an
   * auth-failures rule would delay or lock out (Infinity: no such rule).
   * Without it (or undefined), the session runs AUTH from one address one
   * at a time.
   */
  authGate?(f: { client: ClientInfo; user: string }): AuthGate | undefined;
  mail(f: TransactionFacts): Promise<Verdict>;
  rcpt(f: RcptFacts): Promise<Verdict>;
  data(f: DataFacts): Promise<Verdict>;
  /**
   * Which domains this client may sign as (src/policy/signing.ts), asked at
   * end of DATA for the DKIM signer: policy data, never the header From.
   */
  signingAuthority(f: SigningFacts): SigningAuthority;
  /** The message was committed (for what must count committed mail only). */
  accepted?(f: DataFacts): Promise<void>;
  /** The connection closed (release per-connection counters). */
  disconnect?(f: DisconnectFacts): void;
  /**
   * Take one of the client's connection slots on a listener: a counter in
   * the state store, so one count across every process (and, with Redis,
   * every gateway); an IPv6 client counts by the policy's ipv6Prefix. The
   * engine only counts; the session compares with limits.maxConnectionsPerIp.
   */
  openSlot(f: { listener: string; ip: string }): Promise<ConnectionSlot>;
}

export interface ConnectionSlot {
  /** Open connections of this address (prefix) on the listener, this one included. */
  readonly count: number;
  /** The address or IPv6 prefix counted. */
  readonly subject: string;
  /** Give the slot back (idempotent). */
  release(): Promise<void>;
}

export interface AuthGate {
  readonly key: string;
  headroom(): Promise<number>;
}

/**
 * What the policy engine reports as it works, for metrics (wired by the
 * metrics module; every method optional). verdict and quotaHit are called
 * for live decisions only, never for `policy explain`:
 *   verdict      once per stage decision (connect, auth before the password,
 *                mail, each rcpt, data), accept included
 *   dnsblLookup  once per DNS query actually sent (cache hits are not lookups)
 *   quotaHit     when a volume limit refuses or holds (the limit's name)
 *   reload       after each reload attempt
 */
export interface PolicyObserver {
  /** `via`: native, or the Postfix protocol that asked (a bounded label). */
  verdict?(v: Verdict, via?: Via): void;
  dnsblLookup?(zone: string, result: 'listed' | 'clean' | 'error' | 'timeout', ms: number): void;
  quotaHit?(limit: string): void;
  reload?(result: 'ok' | 'error'): void;
}

export const ACCEPT = (stage: Verdict['stage'], rule: string): Verdict => ({ action: 'accept', stage, rule });
