/**
 * The shared vocabulary of the pipeline: what a message is while it flows
 * smtp → policy → dkim → spool → relay. Every stage reads and writes these
 * shapes; nothing else crosses a stage boundary.
 */

export type QueueId = string;

/** Listener roles: what a listener is for decides which checks apply. */
export type ListenerRole = 'submission' | 'intercept' | 'mx';

/** SMTP phases at which the policy engine is asked (Haraka's hook names). */
export type Stage = 'connect' | 'auth' | 'mail' | 'rcpt' | 'data';

export type VerdictAction = 'accept' | 'tempfail' | 'reject' | 'hold';

/** One decision, with the rule that made it (the audit trail). */
export interface Verdict {
  readonly action: VerdictAction;
  readonly stage: Stage;
  /** Stable rule id from the policy files or a built-in check name. */
  readonly rule: string;
  /** Reply name from src/replies.ts, for tempfail/reject. */
  readonly reply?: string;
  /** Extra reply text (e.g. a help URL) appended to the table's text. */
  readonly detail?: string;
  /**
   * What the deciding rule saw when it decided to hold (a quota's count and
   * limit, containment's score and signal values, the content scanner's
   * score): kept with the held message, so the abuse desk reads the
   * decision as it was made, not as the counters stand later. Bounded
   * (verdictValues).
   */
  readonly values?: Readonly<Record<string, string | number>>;
}

const VALUES_MAX = 40;
const VALUE_CHARS = 300;

/** A check's inputs as a verdict's values: numbers kept, the rest as bounded text, at most 40. */
export function verdictValues(inputs: Readonly<Record<string, unknown>>): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(inputs).slice(0, VALUES_MAX)) {
    if (v === undefined) continue;
    out[k] = typeof v === 'number' && Number.isFinite(v) ? v : (typeof v === 'string' ? v : JSON.stringify(v) ?? String(v)).slice(0, VALUE_CHARS);
  }
  return out;
}

/**
 * How a decision was asked for: a native listener, or Postfix through its
 * policy delegation protocol or a milter (src/postfix). A metric label: bounded.
 */
export type Via = 'native' | 'policy-service' | 'milter';
export const VIAS: readonly Via[] = ['native', 'policy-service', 'milter'];

/** Who is talking to us: established at connect and AUTH. */
export interface ClientInfo {
  readonly listener: string;
  /** Unset: a native listener. */
  readonly via?: Via;
  readonly role: ListenerRole;
  readonly ip: string;
  readonly helo?: string;
  readonly tls: boolean;
  /** Authenticated account name (SMTP AUTH or POP-before-SMTP). */
  readonly user?: string;
  /** Netblock class of the client IP, when it is a subscriber address. */
  readonly netblockClass?: string;
}

export type RecipientStatus = 'pending' | 'delivered' | 'bounced';

export interface RecipientState {
  readonly address: string;
  status: RecipientStatus;
  /** Last remote reply or local error for this recipient. */
  lastError?: string;
  /** The enhanced status that came with lastError (4.4.1 for a refused connection…); absent in state files written before it. */
  lastStatus?: string;
  /** Enhanced status of the final outcome (for DSNs), e.g. 5.1.1. */
  statusCode?: string;
  /** Remote MTA that gave the final answer. */
  remoteMta?: string;
  /** For bounced recipients: whether the sender was sent a DSN for it yet. */
  reported?: boolean;
}

/** Spool states are directories; a message is in exactly one. */
export type QueueState = 'incoming' | 'active' | 'deferred' | 'hold';
export const QUEUE_STATES: readonly QueueState[] = ['incoming', 'active', 'deferred', 'hold'];

/**
 * The immutable part of a message, written once with the data at commit.
 * `mailFrom` is '' for the null sender.
 */
export interface Envelope {
  readonly id: QueueId;
  readonly receivedAt: number;
  readonly client: ClientInfo;
  readonly mailFrom: string;
  readonly recipients: readonly string[];
  readonly size: number;
  readonly smtpUtf8: boolean;
  readonly verdicts: readonly Verdict[];
  /** Set for DSNs we generate, so they are never bounced again. */
  readonly isBounce?: boolean;
  /** Present when policy decided to hold the message at acceptance. */
  readonly holdReason?: string;
  /** The egress pool chosen at acceptance and the rule that chose it (src/relay/egress.ts). */
  readonly egress?: { readonly pool: string; readonly rule: string };
}

/** The mutable delivery state, rewritten atomically as attempts happen. */
export interface DeliveryState {
  readonly id: QueueId;
  /** Increases on every rewrite: recovery keeps the highest. */
  version: number;
  attempts: number;
  firstAttemptAt?: number;
  nextAttemptAt: number;
  lastError?: string;
  /** The status of the deferral that wrote lastError. */
  lastStatus?: string;
  recipients: RecipientState[];
}

/** Result of one delivery attempt for one recipient (relay → scheduler). */
export type RecipientOutcome =
  | { readonly address: string; readonly kind: 'delivered'; readonly remoteMta: string; readonly response: string }
  | {
      readonly address: string;
      readonly kind: 'deferred';
      readonly error: string;
      /** RFC 3463 status, class 4 (4.4.1, 4.7.1…): set where the outcome is classified (relay/classify.ts). */
      readonly statusCode: string;
      readonly remoteMta?: string;
      /**
       * Set when the delivery agent's traffic shaping deferred it (provider
       * suspended after a throttle reply, or its rate reached): try again at
       * this time (ms since epoch); not a failed attempt.
       */
      readonly retryAt?: number;
    }
  | { readonly address: string; readonly kind: 'bounced'; readonly error: string; readonly statusCode: string; readonly remoteMta?: string };

export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}

export function localPartOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? address : address.slice(0, at);
}
