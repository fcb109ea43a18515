/**
 * Postfix's `check_policy_service` answered by smarthost's policy engine:
 * each request's protocol_state is mapped onto the engine's stages, with
 * the same hooks (and containment) as a native listener, so one quota is
 * counted across Postfix hosts and gateways sharing the state store.
 *
 *   CONNECT          connect stage
 *   MAIL             connect + mail stages (once per message: `instance`)
 *   RCPT             connect + mail (once per message), then rcpt
 *   DATA             PREPEND the sender token header (feedback.yaml), when
 *                    no milter is configured to add it
 *   END-OF-MESSAGE   data stage (size, recipients) unless the milter is
 *                    configured: it owns the data stage (it sees the header
 *                    From), so nothing is counted twice
 *   anything else    DUNNO
 * Postfix's smtpd_delay_reject (the default) evaluates the client and
 * sender restrictions at RCPT, so RCPT runs all three stages.
 *
 * Answers in Postfix's vocabulary: DUNNO (smarthost has no objection;
 * Postfix's own restrictions still apply), HOLD <text>, or "<code>
 * <enhanced> <text> (rule ID)" from src/replies.ts. A malformed request
 * gets 451 4.3.0 and a log line; a failed check 451 4.3.0 too.
 *
 * Connection counts are Postfix's (anvil, smtpd_client_connection_count_limit):
 * the protocol reports no disconnect, so a connect stage here is counted and
 * released at once.
 *
 * Talks to: the policy hooks, the account store. Trusts: Postfix (loopback).
 */
import type net from 'node:net';
import type { Account } from '../accounts/store';
import type { ListenerConfig } from '../config/listener';
import type { ClientInfo, Verdict } from '../envelope';
import type { DataFacts } from '../policy/types';
import type { PostfixEndpoint } from './config';
import { clientAddress, failureReply, isRefusal, named, postfixClient, refusalReply, type PostfixClient, type PostfixDeps, type PostfixReply } from './context';
import { encodeAction, RequestReader } from './policy-protocol';
import { serve, type Served } from './serve';

/**
 * Messages in flight remembered between their requests, and their recipients
 * in all (oldest message forgotten first): Postfix sends no END-OF-MESSAGE
 * request unless smtpd_end_of_data_restrictions asks, so most are never
 * closed and only these bounds free them.
 */
export const REMEMBER = { messages: 10_000, recipients: 100_000 };
/** Recipients remembered per message (Postfix's smtpd_recipient_limit default). */
const MAX_RECIPIENTS = 1000;
/** Requests a client may send ahead of the answers (Postfix sends one at a time). */
const MAX_PENDING = 16;
const IDLE_MS = 10 * 60_000;

interface Transaction {
  connect?: Verdict;
  mail?: Verdict;
  recipients: string[];
}

export class PolicyService {
  private readonly txs = new Map<string, Transaction>();
  private remembered = 0;
  private served: Served | undefined;

  constructor(
    private readonly deps: PostfixDeps,
    private readonly bounds: { readonly messages: number; readonly recipients: number } = REMEMBER,
  ) {}

  get port(): number {
    return this.served?.port ?? 0;
  }

  get openConnections(): number {
    return this.served?.open() ?? 0;
  }

  async listen(at: PostfixEndpoint): Promise<void> {
    this.served = await serve('policy-service', at, IDLE_MS, this.deps.logger, (s) => this.connection(s));
  }

  async close(): Promise<void> {
    await this.served?.close();
  }

  private connection(s: net.Socket): void {
    const reader = new RequestReader();
    let chain = Promise.resolve();
    let pending = 0;
    s.on('data', (chunk: Buffer) => {
      for (const req of reader.push(chunk)) {
        if (++pending > MAX_PENDING) {
          this.deps.logger.warn({ evt: 'rejection', listener: 'postfix-policy-service', reason: `more than ${MAX_PENDING} requests ahead of the answers` }, 'policy client closed');
          s.destroy();
          return;
        }
        chain = chain.then(async () => {
          const action = req.ok ? await this.answer(req.attrs) : this.malformed(req.reason);
          pending--;
          if (!s.destroyed) s.write(encodeAction(action));
        });
      }
    });
  }

  private malformed(reason: string): string {
    this.deps.logger.warn({ evt: 'rejection', listener: 'postfix-policy-service', reason }, 'malformed policy request');
    return text(named('local_error', `(malformed policy request: ${reason})`));
  }

  /** One request's action line. Never throws. */
  async answer(a: ReadonlyMap<string, string>): Promise<string> {
    if (a.get('request') !== 'smtpd_access_policy') return this.malformed(`request is not smtpd_access_policy`);
    const ip = clientAddress(a.get('client_address'));
    if (!ip) return this.malformed('client_address is not an IP address');
    const state = (a.get('protocol_state') ?? '').toUpperCase();
    const who = postfixClient(this.deps, { ip, user: a.get('sasl_username'), helo: a.get('helo_name'), tls: Boolean(a.get('encryption_protocol')), via: 'policy-service' });
    const instance = a.get('instance') ?? '';
    try {
      switch (state) {
        case 'CONNECT':
          return action(await this.connect(who.listener, who.client));
        case 'MAIL':
        case 'RCPT': {
          const tx = this.transaction(instance);
          tx.connect ??= await this.connect(who.listener, who.client);
          if (isRefusal(tx.connect)) return action(tx.connect);
          const mailFrom = a.get('sender') ?? '';
          tx.mail ??= await this.deps.hooks().mail({ client: who.client, account: who.account, mailFrom, recipients: [] });
          if (isRefusal(tx.mail) || state === 'MAIL') return action(holdOf(tx.connect, tx.mail));
          const rcpt = a.get('recipient') ?? '';
          const v = await this.deps.hooks().rcpt({ client: who.client, account: who.account, mailFrom, recipients: tx.recipients, rcpt });
          if (isRefusal(v)) return action(v);
          if (tx.recipients.length < MAX_RECIPIENTS) {
            tx.recipients.push(rcpt);
            this.remembered++;
            this.forgetOldest();
          }
          return action(holdOf(tx.connect, tx.mail, v));
        }
        case 'DATA':
          return this.senderToken(who, instance, a.get('queue_id'));
        case 'END-OF-MESSAGE': {
          const tx = this.txs.get(instance);
          this.forget(instance);
          if (this.deps.cfg.milter) return 'DUNNO';
          return action(await this.data(who.client, who.account, a, tx));
        }
        default:
          return 'DUNNO';
      }
    } catch (err) {
      this.deps.logger.error({ evt: 'error', listener: 'postfix-policy-service', state, err }, 'policy check failed');
      return text(failureReply(err));
    }
  }

  /**
   * DATA (smtpd_data_restrictions): the sender token header (feedback.yaml
   * senderToken) as PREPEND, so complaint reports map back to the
   * subscriber; the milter adds it instead when it is configured. PREPEND
   * cannot run at END-OF-MESSAGE (Postfix: before the content only).
   */
  private senderToken(who: PostfixClient, instance: string, queueId: string | undefined): string {
    if (this.deps.cfg.milter || !this.deps.endOfData) return 'DUNNO';
    const header = this.deps.endOfData.unscanned({ listener: who.listener, client: who.client, queueId: queueId || 'unknown', recipients: this.txs.get(instance)?.recipients ?? [] }).split('\r\n')[0];
    return header ? `PREPEND ${header}` : 'DUNNO';
  }

  private async connect(listener: ListenerConfig, client: ClientInfo): Promise<Verdict> {
    const hooks = this.deps.hooks();
    const d = await hooks.connect({ listener, ip: client.ip, via: 'policy-service' });
    hooks.disconnect?.({ client, countedConnection: d.countedConnection, countedAccount: false });
    return d.verdict;
  }

  private async data(client: ClientInfo, account: Account | undefined, a: ReadonlyMap<string, string>, tx: Transaction | undefined): Promise<Verdict> {
    const size = Number.parseInt(a.get('size') ?? '0', 10);
    const facts: DataFacts = {
      client,
      account,
      mailFrom: a.get('sender') ?? '',
      recipients: tx?.recipients ?? [],
      size: Number.isFinite(size) && size >= 0 ? size : 0,
      headerFrom: [],
      receivedCount: 0,
    };
    const v = await this.deps.hooks().data(facts);
    if (!isRefusal(v)) this.deps.hooks().accepted?.(facts)?.catch((err: Error) => this.deps.logger.error({ evt: 'error', err }, 'quota accounting failed'));
    return v;
  }

  private transaction(instance: string): Transaction {
    if (!instance) return { recipients: [] };
    let tx = this.txs.get(instance);
    if (!tx) {
      tx = { recipients: [] };
      this.txs.set(instance, tx);
      this.forgetOldest();
    }
    return tx;
  }

  /** What is remembered now (tests: the bounds hold). */
  get remembering(): { messages: number; recipients: number } {
    return { messages: this.txs.size, recipients: this.remembered };
  }

  private forget(instance: string): void {
    const tx = this.txs.get(instance);
    if (!tx) return;
    this.remembered -= tx.recipients.length;
    this.txs.delete(instance);
  }

  private forgetOldest(): void {
    while (this.txs.size > this.bounds.messages || this.remembered > this.bounds.recipients) this.forget(this.txs.keys().next().value!);
  }
}

/** The hold among earlier accepted stages, if any, else the last verdict. */
function holdOf(...vs: Verdict[]): Verdict {
  return vs.find((v) => v.action === 'hold') ?? vs[vs.length - 1]!;
}

function action(v: Verdict): string {
  if (v.action === 'accept') return 'DUNNO';
  if (v.action === 'hold') return `HOLD held by policy (rule ${v.rule})`;
  return text(refusalReply(v));
}

function text(r: PostfixReply): string {
  return `${r.code} ${r.enhanced} ${r.text}`;
}
