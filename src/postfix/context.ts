/**
 * What the policy service and the milter share: who a Postfix client is
 * (the facts Postfix reports, turned into the ClientInfo and account the
 * policy hooks take, as a native listener would), and how a verdict is
 * written back in Postfix's terms (the same reply table as the SMTP
 * listeners, with the deciding rule named in the text).
 *
 * Talks to: the policy hooks (through the caller), the account store
 * (reads). Trusts: Postfix's report of the client (address, SASL login):
 * Postfix is the one that saw the client; the services listen on loopback
 * or a management network only (docs/postfix.md).
 */
import { isIP } from 'node:net';
import type { Account } from '../accounts/store';
import type { ListenerConfig } from '../config/listener';
import type { EndOfData } from '../content/end-of-data';
import type { MessageSigner } from '../dkim/types';
import type { ClientInfo, Verdict, Via } from '../envelope';
import type { Logger } from '../log';
import type { PolicyHooks } from '../policy/types';
import { isReplyName, REPLIES, type ReplyName } from '../replies';
import { isStateUnavailable } from '../state/resilient';
import { postfixListener, type PostfixConfig } from './config';

export interface PostfixDeps {
  readonly cfg: PostfixConfig;
  /** The policy hooks in force (containment-wrapped, as the native listeners get them). */
  readonly hooks: () => PolicyHooks;
  readonly accounts: { get(name: string): Account | undefined };
  /** Netblock class of an address under the policy in force. */
  readonly classOf: (ip: string) => string | undefined;
  readonly signer?: () => MessageSigner | undefined;
  /** The sender token header (complaint reports map back to the subscriber) and DNSBL polling's note. */
  readonly endOfData?: Pick<EndOfData, 'unscanned'>;
  readonly hostname: string;
  readonly logger: Logger;
}

export interface PostfixClient {
  readonly listener: ListenerConfig;
  readonly client: ClientInfo;
  readonly account?: Account;
}

/** The client as the policy sees it: a SASL login makes it a submission client of that account. */
export function postfixClient(deps: PostfixDeps, f: { ip: string; user?: string; helo?: string; tls: boolean; via: Via }): PostfixClient {
  const user = f.user ? f.user : undefined;
  const role = user ? 'submission' : deps.cfg.role;
  const account = user ? deps.accounts.get(user) : undefined;
  const cls = deps.classOf(f.ip);
  const client: ClientInfo = {
    listener: postfixListener(role).name,
    role,
    ip: f.ip,
    tls: f.tls,
    via: f.via,
    ...(f.helo ? { helo: f.helo } : {}),
    ...(account ? { user: account.name } : {}),
    ...(cls ? { netblockClass: cls } : {}),
  };
  return { listener: postfixListener(role), client, ...(account ? { account } : {}) };
}

/** A client address as Postfix writes it, or undefined ("unknown", garbage). */
export function clientAddress(text: string | undefined): string | undefined {
  if (!text) return undefined;
  const t = text.startsWith('IPv6:') ? text.slice(5) : text;
  return isIP(t) ? t.toLowerCase() : undefined;
}

export interface PostfixReply {
  readonly code: number;
  readonly enhanced: string;
  /** The reply table's text, the verdict's detail and "(rule ID)": one line. */
  readonly text: string;
}

/** A refusal in the reply table's terms, the deciding rule named (Postfix logs the text too). */
export function refusalReply(v: Verdict): PostfixReply {
  const name: ReplyName = v.reply && isReplyName(v.reply) ? v.reply : v.action === 'tempfail' ? 'policy_tempfail' : 'policy_reject';
  return named(name, `${v.detail ? `${v.detail} ` : ''}(rule ${v.rule})`);
}

/** A reply from the table with extra text. */
export function named(name: ReplyName, extra?: string): PostfixReply {
  const r = REPLIES[name];
  return { code: r.code, enhanced: r.enhanced, text: oneLine(`${r.text}${extra ? ` ${extra}` : ''}`) };
}

/** A failed check: 451 4.3.0, the state store's own text when it is the store. */
export function failureReply(err: unknown): PostfixReply {
  return named(isStateUnavailable(err) ? 'state_unavailable' : 'local_error');
}

function oneLine(s: string): string {
  return s.replace(/[\x00-\x1f\x7f]+/g, ' ').slice(0, 400);
}

export const isRefusal = (v: Verdict): boolean => v.action === 'reject' || v.action === 'tempfail';
