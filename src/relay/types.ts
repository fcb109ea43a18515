/**
 * The contract between the queue manager (src/spool/scheduler.ts, which
 * decides *when*) and the delivery agent (src/relay/deliver.ts, which
 * decides *how*): one job in, one outcome per recipient out.
 */
import type { Readable } from 'node:stream';
import type { QueueId, RecipientOutcome } from '../envelope';

export interface DeliveryJob {
  readonly id: QueueId;
  /** '' for the null sender (bounces). */
  readonly mailFrom: string;
  /** Recipients still pending; the agent groups them by next hop. */
  readonly recipients: readonly string[];
  /** Opens the message bytes (headers + body, CRLF line endings) afresh for each attempt. */
  readonly open: () => Readable;
  readonly size: number;
  readonly smtpUtf8: boolean;
  /** The egress pool recorded at acceptance (undefined: none). */
  readonly pool?: string;
  /** Held at acceptance and released since: may leave from the quarantine pool. */
  readonly released?: boolean;
}

export interface DeliveryAgent {
  /** Never throws for delivery problems: every recipient gets an outcome. */
  deliver(job: DeliveryJob): Promise<RecipientOutcome[]>;
  close(): Promise<void>;
}
