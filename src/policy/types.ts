/**
 * The contract between the SMTP session (which asks) and the policy engine
 * (which answers). The session calls one hook per SMTP phase and acts on the
 * Verdict: accept → continue, tempfail/reject → reply from the table,
 * hold → accept into the hold queue. The engine never touches sockets.
 */
import type { ClientInfo, Verdict } from '../envelope';
import type { ListenerConfig } from '../config/schema';
import type { Account } from '../accounts/store';

export interface ConnectFacts {
  readonly listener: ListenerConfig;
  readonly ip: string;
}

export interface ConnectDecision {
  readonly verdict: Verdict;
  /** Netblock class of the client, when it is inside a subscriber netblock. */
  readonly netblockClass?: string;
}

export interface TransactionFacts {
  readonly client: ClientInfo;
  readonly account?: Account;
  readonly mailFrom: string;
  /** Recipients accepted so far in this transaction. */
  readonly recipients: readonly string[];
}

export interface DataFacts extends TransactionFacts {
  readonly size: number;
  /** Addresses in the header From (lower case). */
  readonly headerFrom: readonly string[];
  readonly receivedCount: number;
}

export interface PolicyHooks {
  connect(f: ConnectFacts): Promise<ConnectDecision>;
  /**
   * Asked twice per AUTH: `before` the password is checked (a locked-out
   * client or account is refused without reaching the account store) and
   * `after`, with the result (to count failures).
   */
  auth?(f: { client: ClientInfo; user: string; phase: 'before' | 'after'; ok?: boolean }): Promise<Verdict>;
  mail(f: TransactionFacts): Promise<Verdict>;
  rcpt(f: TransactionFacts & { readonly rcpt: string }): Promise<Verdict>;
  data(f: DataFacts): Promise<Verdict>;
  /** The message was committed: count it against quotas. */
  accepted?(f: DataFacts): Promise<void>;
  /** The connection closed (release per-connection counters). */
  disconnect?(f: { client: ClientInfo }): void;
}

export const ACCEPT = (stage: Verdict['stage'], rule: string): Verdict => ({ action: 'accept', stage, rule });
