/**
 * One milter connection from Postfix's smtpd (or cleanup): the events of an
 * SMTP session, answered with smarthost's decisions.
 *
 *   connect/helo/mail/rcpt  the envelope stages, when this milter owns them
 *                           (no policy service configured: otherwise the
 *                           policy service judged them and nothing is
 *                           counted twice); the connect stage is asked at
 *                           the first MAIL, when a SASL login is known
 *   header/eoh/body         the header section is kept (bounded); the body
 *                           is only hashed as it streams past (DKIM relaxed
 *                           body hash) and counted, never held
 *   end of message          data stage (header From, size, recipients;
 *                           containment), then DKIM: signed only as the
 *                           client is authorised (src/policy/signing.ts,
 *                           src/dkim/decide.ts), the DKIM-Signature inserted
 *                           on top; a hold quarantines the message (Postfix's
 *                           hold queue); a refusal is the reply table's code;
 *                           the sender token header is added (feedback.yaml)
 *
 * Postfix reports the client: its address at connect and the SASL login in
 * the {auth_authen} macro at MAIL.
 *
 * Talks to: the policy hooks, the DKIM signer. Trusts: Postfix (loopback).
 */
import { RelaxedBodyHash } from '../../dkim/canon';
import { domainOf, type ClientInfo, type Verdict } from '../../envelope';
import type { DataFacts, DisconnectFacts } from '../../policy/types';
import { extractAddresses, parseHeaderBlock } from '../../smtp/headers';
import { clientAddress, failureReply, isRefusal, named, postfixClient, refusalReply, type PostfixClient, type PostfixDeps, type PostfixReply } from '../context';
import { ACT, CMD, cstr, cstrings, insertHeader, MilterProtocolError, optnegReply, packet, PROTO, REPLY, replyCode, type Packet } from './protocol';

const MAX_HEADER_BYTES = 256 * 1024;
const MAX_HEADER_FIELDS = 1000;
const MAX_MACROS = 64;
const MAX_MACRO_VALUE = 1024;
const MAX_RECIPIENTS = 1000;

interface Message {
  mailFrom: string;
  recipients: string[];
  /** A hold decided at MAIL or RCPT (quarantined at end of message). */
  hold?: Verdict;
  header: Buffer[];
  headerBytes: number;
  headerFields: number;
  headersTooLarge: boolean;
  body: RelaxedBodyHash;
  bodyBytes: number;
}

export class MilterSession {
  private proto = 0;
  private actions = 0;
  private readonly macros = new Map<string, string>();
  private ip: string | undefined;
  private helo: string | undefined;
  private who: PostfixClient | undefined;
  /** The connect stage was counted (and must be released at close). */
  private counted: DisconnectFacts | undefined;
  /** The connect stage's verdict (asked at the first MAIL). */
  private connected: Verdict | undefined;
  private msg: Message | undefined;

  constructor(
    private readonly deps: PostfixDeps,
    private readonly send: (b: Buffer) => void,
  ) {}

  /** The envelope stages are the policy service's when it is configured. */
  private get ownsEnvelope(): boolean {
    return !this.deps.cfg.policyService;
  }

  async handle(p: Packet): Promise<void> {
    switch (p.cmd) {
      case CMD.OPTNEG:
        return this.optneg(p.data);
      case CMD.MACRO:
        return this.macro(p.data);
      case CMD.CONNECT:
        return this.connect(p.data);
      case CMD.HELO:
        this.helo = cstrings(p.data)[0]?.slice(0, 255);
        return this.send(packet(REPLY.CONTINUE));
      case CMD.MAIL:
        return this.mail(p.data);
      case CMD.RCPT:
        return this.rcpt(p.data);
      case CMD.DATA:
        return this.noReplyIf(PROTO.NR_DATA);
      case CMD.HEADER:
        this.header(p.data);
        return this.noReplyIf(PROTO.NR_HDR);
      case CMD.EOH:
        return this.noReplyIf(PROTO.NR_EOH);
      case CMD.BODY:
        if (this.msg) {
          this.msg.body.update(p.data);
          this.msg.bodyBytes += p.data.length;
        }
        return this.noReplyIf(PROTO.NR_BODY);
      case CMD.BODYEOB:
        return this.endOfMessage();
      case CMD.ABORT:
        this.msg = undefined;
        return;
      case CMD.UNKNOWN:
        return this.noReplyIf(PROTO.NR_UNKN);
      case CMD.QUIT_NC:
        this.close();
        return;
      case CMD.QUIT:
        this.close();
        throw new MilterQuit();
      default:
        throw new MilterProtocolError(`unknown command 0x${p.cmd.charCodeAt(0).toString(16)}`);
    }
  }

  /** The connection ended (QUIT, or the socket closed): release what connect counted. */
  close(): void {
    if (this.counted) this.deps.hooks().disconnect?.(this.counted);
    this.counted = undefined;
    this.connected = undefined;
    this.msg = undefined;
    this.who = undefined;
    this.ip = undefined;
    this.helo = undefined;
    this.macros.clear();
  }

  private noReplyIf(flag: number): void {
    if ((this.proto & flag) === 0) this.send(packet(REPLY.CONTINUE));
  }

  private optneg(data: Buffer): void {
    if (data.length < 12) throw new MilterProtocolError('short option negotiation');
    const version = data.readUInt32BE(0);
    if (version < 2) throw new MilterProtocolError(`milter protocol version ${version} is too old`);
    const reply = optnegReply(version, data.readUInt32BE(4), data.readUInt32BE(8));
    this.actions = reply.readUInt32BE(9);
    this.proto = reply.readUInt32BE(13);
    this.send(reply);
  }

  private macro(data: Buffer): void {
    // The first byte names the command the macros are for; pairs of name, value follow.
    const parts = cstrings(data.subarray(1));
    for (let i = 0; i + 1 < parts.length; i += 2) {
      const name = parts[i]!.replace(/^\{|\}$/g, '');
      if (!this.macros.has(name) && this.macros.size >= MAX_MACROS) continue;
      this.macros.set(name, parts[i + 1]!.slice(0, MAX_MACRO_VALUE));
    }
  }

  private client(): PostfixClient | undefined {
    if (!this.ip) return undefined;
    return postfixClient(this.deps, { ip: this.ip, user: this.macros.get('auth_authen'), helo: this.helo, tls: Boolean(this.macros.get('tls_version')), via: 'milter' });
  }

  private async connect(data: Buffer): Promise<void> {
    // hostname NUL, family ('4', '6', 'L', 'U'), port (2 bytes), address NUL
    const nul = data.indexOf(0);
    const family = nul >= 0 ? String.fromCharCode(data[nul + 1] ?? 0) : 'U';
    const address = family === '4' || family === '6' ? cstrings(data.subarray(nul + 4))[0] : undefined;
    this.ip = clientAddress(address);
    if (!this.ip) {
      // Mail Postfix made itself (pickup, no client address): nothing to judge, nothing to sign for.
      this.deps.logger.info({ evt: 'policy', listener: 'postfix-milter', family }, 'milter: no client address, message passed unjudged');
      return this.send(packet(REPLY.ACCEPT));
    }
    // Judged at the first MAIL (Postfix's smtpd_delay_reject): only then is a SASL login known,
    // and a roaming submission client must not be refused as an intercept address.
    this.send(packet(REPLY.CONTINUE));
  }

  /** The connect stage, once per connection, at its first MAIL (then counted until the connection closes). */
  private async connectStage(who: PostfixClient): Promise<Verdict | undefined> {
    if (this.connected) return this.connected;
    const hooks = this.deps.hooks();
    const d = await this.guard(() => hooks.connect({ listener: who.listener, ip: who.client.ip, via: 'milter' }));
    if (!d) return undefined;
    this.counted = { client: who.client, countedConnection: d.countedConnection, countedAccount: false };
    this.connected = d.verdict;
    return d.verdict;
  }

  private async mail(data: Buffer): Promise<void> {
    this.msg = { mailFrom: unbracket(cstrings(data)[0] ?? ''), recipients: [], header: [], headerBytes: 0, headerFields: 0, headersTooLarge: false, body: new RelaxedBodyHash(), bodyBytes: 0 };
    this.who = this.client();
    if (!this.who || !this.ownsEnvelope) return this.send(packet(REPLY.CONTINUE));
    const who = this.who;
    const c = await this.connectStage(who);
    if (!c) return;
    if (isRefusal(c)) return this.verdict(c);
    const v = await this.guard(() => this.deps.hooks().mail({ client: who.client, account: who.account, mailFrom: this.msg!.mailFrom, recipients: [] }));
    if (!v) return;
    if (v.action === 'hold') this.msg.hold = v;
    else if (c.action === 'hold') this.msg.hold = c;
    this.verdict(v);
  }

  private async rcpt(data: Buffer): Promise<void> {
    const msg = this.msg;
    const rcpt = unbracket(cstrings(data)[0] ?? '');
    if (!msg || !this.who || !this.ownsEnvelope) {
      if (msg && msg.recipients.length < MAX_RECIPIENTS) msg.recipients.push(rcpt);
      return this.send(packet(REPLY.CONTINUE));
    }
    const who = this.who;
    const v = await this.guard(() => this.deps.hooks().rcpt({ client: who.client, account: who.account, mailFrom: msg.mailFrom, recipients: msg.recipients, rcpt }));
    if (!v) return;
    if (!isRefusal(v) && msg.recipients.length < MAX_RECIPIENTS) msg.recipients.push(rcpt);
    if (v.action === 'hold') msg.hold ??= v;
    this.verdict(v);
  }

  private header(data: Buffer): void {
    const msg = this.msg;
    if (!msg || msg.headersTooLarge) return;
    const [name = '', value = ''] = cstrings(data);
    const line = Buffer.from(`${name}: ${value.replace(/\r?\n/g, '\r\n')}\r\n`, 'latin1');
    msg.headerBytes += line.length;
    msg.headerFields++;
    if (msg.headerBytes > MAX_HEADER_BYTES || msg.headerFields > MAX_HEADER_FIELDS) {
      msg.headersTooLarge = true;
      msg.header = [];
      return;
    }
    msg.header.push(line);
  }

  private async endOfMessage(): Promise<void> {
    const msg = this.msg;
    const who = this.who;
    this.msg = undefined;
    if (!msg || !who) return this.send(packet(REPLY.CONTINUE));
    if (msg.headersTooLarge) return this.refuse(named('too_big', '(header section too large) (rule smtp.header-limits)'));
    const header = Buffer.concat(msg.header);
    const fields = parseHeaderBlock(header);
    const headerFrom = fields.filter((h) => h.name === 'from').flatMap((h) => extractAddresses(h.value));
    const facts: DataFacts = {
      client: who.client,
      account: who.account,
      mailFrom: msg.mailFrom,
      recipients: msg.recipients,
      size: header.length + 2 + msg.bodyBytes,
      headerFrom,
      receivedCount: fields.filter((h) => h.name === 'received').length,
    };
    const hooks = this.deps.hooks();
    const v = await this.guard(() => hooks.data(facts), true);
    if (!v) return;
    if (isRefusal(v)) return this.refuse(refusalReply(v));
    const hold = v.action === 'hold' ? v : msg.hold;
    // A hold never turns into a delivery: an MTA that did not grant the quarantine action gets a tempfail.
    if (hold && (this.actions & ACT.QUARANTINE) === 0) {
      this.deps.logger.error({ evt: 'error', listener: 'postfix-milter', rule: hold.rule }, 'the MTA did not allow the milter to quarantine: held message deferred');
      return this.refuse(named('local_error'));
    }
    const signed = await this.sign(header, msg.body.digest(), headerFrom, who);
    if (!signed) return;
    // Added below the signed fields (not in h=): the sender token complaint reports map back with.
    const extra = this.deps.endOfData?.unscanned({ listener: who.listener, client: who.client, queueId: this.macros.get('i') || 'unknown', recipients: msg.recipients }) ?? '';
    if (extra && this.actions & ACT.ADDHDRS) {
      for (const line of extra.split('\r\n').filter(Boolean)) {
        const colon = line.indexOf(':');
        this.send(packet(REPLY.ADDHEADER, cstr(line.slice(0, colon), line.slice(colon + 1).trim())));
      }
    }
    if (hold) this.send(packet(REPLY.QUARANTINE, cstr(`held by policy (rule ${hold.rule})`)));
    this.deps.logger.info({ evt: 'reception', listener: 'postfix-milter', ip: who.client.ip, user: who.client.user, from: msg.mailFrom, rcpts: msg.recipients.length, size: facts.size, held: Boolean(hold), ...signed }, 'message judged');
    hooks.accepted?.(facts)?.catch((err: Error) => this.deps.logger.error({ evt: 'error', err }, 'quota accounting failed'));
    this.send(packet(REPLY.CONTINUE));
  }

  /** DKIM as the client is authorised. Undefined when a refusal was sent instead. */
  private async sign(header: Buffer, bh: string, headerFrom: readonly string[], who: PostfixClient): Promise<{ dkim: string; dkimRule: string } | undefined> {
    const signer = this.deps.signer?.();
    if (!signer) return { dkim: 'none', dkimRule: 'dkim.enabled' };
    const authority = this.deps.hooks().signingAuthority({ client: who.client, account: who.account });
    const headerFromDomain = headerFrom[0] ? domainOf(headerFrom[0]) : undefined;
    let r: Awaited<ReturnType<typeof signer.signHashed>>;
    try {
      r = await signer.signHashed(header, bh, { headerFromDomain, authority });
    } catch (err) {
      this.deps.logger.error({ evt: 'error', listener: 'postfix-milter', err }, 'DKIM signing failed');
      this.refuse(named('local_error'));
      return undefined;
    }
    if (r.kind === 'refuse') {
      this.refuse(named('unsigned_refused', `(rule dkim.unsigned-policy: ${r.rule})`));
      return undefined;
    }
    if (r.kind !== 'signed') return { dkim: 'none', dkimRule: `${r.rule}: ${r.reason}` };
    if ((this.actions & ACT.ADDHDRS) === 0) {
      this.deps.logger.error({ evt: 'error', listener: 'postfix-milter' }, 'Postfix did not allow the milter to add headers: message not signed');
      this.refuse(named('local_error'));
      return undefined;
    }
    // One DKIM-Signature per key (dual signing), inserted on top in the signer's order.
    const sigs = r.headers.split(/\r\n(?![ \t])/).filter((h) => h.length > 0);
    sigs.forEach((h, i) => {
      const colon = h.indexOf(':');
      this.send(insertHeader(i, h.slice(0, colon), h.slice(colon + 1).replace(/^ /, '')));
    });
    return { dkim: r.domain, dkimRule: r.rule };
  }

  private verdict(v: Verdict): void {
    if (isRefusal(v)) return this.refuse(refusalReply(v));
    this.send(packet(REPLY.CONTINUE));
  }

  private refuse(r: PostfixReply): void {
    this.send(replyCode(r.code, r.enhanced, r.text));
  }

  /** Run a check; a failure answers 451 4.3.0 (a tempfail, never a loss) and returns undefined. */
  private async guard<T>(run: () => Promise<T>, endOfMessage = false): Promise<T | undefined> {
    try {
      return await run();
    } catch (err) {
      this.deps.logger.error({ evt: 'error', listener: 'postfix-milter', endOfMessage, err }, 'milter check failed');
      this.refuse(failureReply(err));
      return undefined;
    }
  }
}

/** QUIT: the session is over; the server closes the socket. */
export class MilterQuit extends Error {}

function unbracket(a: string): string {
  const t = a.trim();
  return t.startsWith('<') && t.endsWith('>') ? t.slice(1, -1) : t;
}
