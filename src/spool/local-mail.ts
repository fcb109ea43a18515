/**
 * Mail the gateway writes itself (DSNs, TLS reports): the null sender, so
 * it is retried like any message but never bounced back; committed to
 * incoming/ and handed to the queue manager.
 */
import type { Envelope, QueueId } from '../envelope';
import { newQueueId } from './queue-id';
import type { Spool } from './store';

export interface LocalMessage {
  to: string;
  message: Buffer;
  smtpUtf8: boolean;
  receivedAt: number;
}

export async function queueLocalMessage(spool: Pick<Spool, 'commit'>, enqueue: (id: QueueId) => void, m: LocalMessage): Promise<QueueId> {
  const id = newQueueId();
  const envelope: Envelope = {
    id,
    receivedAt: m.receivedAt,
    client: { listener: 'local', role: 'submission', ip: '127.0.0.1', tls: false },
    mailFrom: '',
    recipients: [m.to],
    size: m.message.length,
    smtpUtf8: m.smtpUtf8,
    verdicts: [],
    isBounce: true,
  };
  await spool.commit(envelope, { prefix: Buffer.alloc(0), chunks: [m.message] });
  enqueue(id);
  return id;
}
