/**
 * Complaint reports from a mailbox (feedback.yaml `imap`): where a
 * provider's feedback loop is registered to an address whose mail lands in
 * an IMAP mailbox rather than at the gateway's own SMTP address. Every
 * `interval` the mailbox is opened (imapflow), its unseen messages are read
 * whole and handed to the same Feedback.consume as the SMTP intake (MIME
 * parse, DKIM/DMARC authentication of the provider, token → account,
 * containment; reports that do not count are kept). A consumed message is
 * deleted from the mailbox; one whose check failed for a temporary reason
 * (DNS) is left unseen for the next poll. One poll at a time, at most
 * MAX_PER_POLL messages each.
 *
 * Talks to: the IMAP server, Feedback. Trusts: nothing in a report until
 * Feedback authenticated it; the mailbox's own account and password.
 */
import type { Logger } from '../log';
import type { ImapMailbox } from './config';
import type { Consumed } from './ingest';

const MAX_PER_POLL = 200;

export interface ImapPoll {
  readonly fetched: number;
  readonly consumed: number;
  readonly retried: number;
}

export interface ImapIntakeDeps {
  /** The mailbox in force (a reload may change or remove it) and its password. */
  readonly mailbox: () => { readonly box: ImapMailbox; readonly password: string } | undefined;
  readonly consume: (message: Buffer, id: string, mailFrom: string) => Promise<Consumed>;
  readonly logger: Logger;
}

/** The envelope sender the delivering MTA recorded (Return-Path), for SPF; '' when absent. */
function returnPath(message: Buffer): string {
  const head = message.subarray(0, Math.min(message.length, 64 * 1024)).toString('latin1');
  const end = head.search(/\r?\n\r?\n/);
  const m = /^Return-Path:\s*<([^>\r\n]*)>/im.exec(end < 0 ? head : head.slice(0, end));
  return m?.[1] ?? '';
}

export class ImapIntake {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<ImapPoll> | undefined;
  private stopped = false;

  constructor(private readonly deps: ImapIntakeDeps) {}

  /** Read the mailbox once (a poll already under way is joined, not doubled). */
  poll(): Promise<ImapPoll> {
    this.running ??= this.pollOnce().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pollOnce(): Promise<ImapPoll> {
    const cur = this.deps.mailbox();
    if (!cur) return { fetched: 0, consumed: 0, retried: 0 };
    const { box, password } = cur;
    // Loaded on the first poll of a configured mailbox, not at start: imapflow brings a MIME and
    // charset stack (libmime, iconv-lite, encoding-japanese, socks) most gateways never use.
    const { ImapFlow } = await import('imapflow');
    const client = new ImapFlow({
      host: box.host,
      port: box.port,
      secure: box.tls === 'implicit',
      doSTARTTLS: box.tls === 'starttls' ? true : box.tls === 'none' ? false : undefined,
      auth: { user: box.user, pass: password },
      logger: false,
      disableAutoIdle: true,
    });
    client.on('error', () => undefined); // connection errors surface through the awaited calls
    let fetched = 0;
    let consumed = 0;
    let retried = 0;
    try {
      await client.connect();
      const lock = await client.getMailboxLock(box.mailbox);
      try {
        const validity = client.mailbox ? String(client.mailbox.uidValidity) : '0';
        const uids = ((await client.search({ seen: false }, { uid: true })) || []).slice(0, MAX_PER_POLL);
        for (const uid of uids) {
          const msg = await client.fetchOne(String(uid), { source: true }, { uid: true });
          if (!msg || !msg.source) continue;
          fetched++;
          const c = await this.deps.consume(msg.source, `imap-${validity}-${uid}`, returnPath(msg.source));
          if (c.result === 'retry') {
            retried++;
            continue;
          }
          await client.messageDelete(String(uid), { uid: true });
          consumed++;
        }
      } finally {
        lock.release();
      }
      await client.logout();
    } catch (err) {
      // The user name is configuration; the password never reaches a log line.
      this.deps.logger.error({ evt: 'feedback', intake: 'imap', host: box.host, user: box.user, err: (err as Error).message }, 'feedback mailbox poll failed');
      client.close();
    }
    return { fetched, consumed, retried };
  }

  start(): void {
    this.stopped = false;
    const tick = () => {
      if (this.stopped) return;
      const box = this.deps.mailbox()?.box;
      this.timer = setTimeout(() => void this.poll().finally(tick), box?.intervalMs ?? 60_000);
      this.timer.unref();
    };
    tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }
}
