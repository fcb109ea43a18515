/**
 * Bounce reports: recipients that bounced and were not yet reported get one
 * DSN to the sender; none for the null sender or for our own DSNs. The DSN
 * is committed before the state that marks it sent: a crash in between may
 * send it twice, never zero times.
 * Talks to: the spool (reads the original's headers, commits the DSN), the DSN builder.
 */
import type { DeliveryState, QueueId } from '../envelope';
import type { Logger } from '../log';
import { buildDsn } from '../relay/dsn';
import { queueLocalMessage } from './local-mail';
import type { Spool, SpooledMessage } from './store';

export interface BounceReporterDeps {
  spool: Spool;
  hostname: string;
  logger: Logger;
  now: () => number;
  /** A DSN was committed to incoming/: schedule it. */
  enqueue: (id: QueueId) => void;
}

export class BounceReporter {
  constructor(private readonly deps: BounceReporterDeps) {}

  /** Reports the unreported bounces of a message in active/; returns whether the delivery state was written. */
  async report(msg: SpooledMessage, ds: DeliveryState): Promise<boolean> {
    const { spool, logger } = this.deps;
    const env = msg.envelope;
    const unreported = ds.recipients.filter((r) => r.status === 'bounced' && r.reported === false);
    if (unreported.length === 0) return false;
    if (msg.dataOffset < 0) msg = await spool.read(env.id, 'active');
    for (const r of unreported) {
      logger.info({ evt: 'bounce', queueId: env.id, rcpt: r.address, status: r.statusCode, error: r.lastError }, 'recipient bounced');
    }
    if (env.mailFrom !== '' && !env.isBounce) {
      const headers = await readHeaderBlock(spool.openData(msg, msg.dataOffset + 64 * 1024));
      const dsn = buildDsn({
        hostname: this.deps.hostname,
        originalSender: env.mailFrom,
        queueId: env.id,
        arrivalDate: new Date(env.receivedAt),
        failed: unreported.map((r) => ({ address: r.address, status: r.statusCode ?? '5.0.0', diagnostic: r.lastError ?? '', remoteMta: r.remoteMta })),
        originalHeaders: headers,
      });
      await queueLocalMessage(spool, this.deps.enqueue, { to: env.mailFrom, message: dsn, smtpUtf8: env.smtpUtf8, receivedAt: this.deps.now() });
    }
    for (const r of unreported) r.reported = true;
    ds.version++;
    await spool.writeState(ds);
    return true;
  }
}

/** The header block of a message (up to the first empty line), bounded by the stream's end. */
async function readHeaderBlock(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) {
    chunks.push(c as Buffer);
    const all = Buffer.concat(chunks);
    const end = all.indexOf('\r\n\r\n');
    if (end >= 0) {
      (stream as unknown as { destroy?: () => void }).destroy?.();
      return all.subarray(0, end + 2);
    }
  }
  return Buffer.concat(chunks);
}
