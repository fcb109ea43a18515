/**
 * `policy explain`: what the gateway would decide for a client and a
 * transaction, stage by stage, with every rule's inputs (netblock, DNSBL
 * answers, quota counts) and the final verdict. It drives the live engine's
 * own evaluate() in the order the SMTP session would (connect → AUTH →
 * MAIL → each RCPT → DATA, stopping where the session would stop) over a
 * dry-run store: real counters are read, never written; AUTH is assumed to
 * succeed (no password); nothing is sent. When the message would be
 * accepted, it says what the DKIM signer would sign it as and by which rule
 * (the same decision code, src/dkim/decide.ts, with the policy's signing
 * authority for this client).
 *
 * Talks to: the engine (and through it DNS and the state store, read-only).
 */
import type { Account } from '../accounts/store';
import type { MessageSigner, SigningDecision } from '../dkim/types';
import { domainOf, type ClientInfo, type ListenerRole, type Stage, type Verdict } from '../envelope';
import { isReplyName, REPLIES, formatReply } from '../replies';
import { DryRunStore } from '../state/dry-run';
import type { PolicyEngine, StageFacts, StageResult, Step } from './engine';

export interface ExplainInput {
  readonly listener: { readonly name: string; readonly role: ListenerRole };
  readonly ip: string;
  readonly user?: string;
  /** The account of `user` (looked up by the caller). */
  readonly account?: Account;
  readonly from: string;
  readonly rcpts: readonly string[];
  /** Header From addresses; default: the envelope sender. */
  readonly headerFrom?: readonly string[];
  /** Message size in bytes for the DATA stage; default 2000. */
  readonly size?: number;
  /** The DKIM signer, to say what an accepted message would be signed as (absent: DKIM off). */
  readonly signer?: Pick<MessageSigner, 'decide'>;
}

/** What an accepted message would be signed as, and by which rule. */
export interface ExplainSigning {
  readonly decision: SigningDecision;
  /** "would sign as D with selector S because <rule>" / "would not sign as D: not authorised (…)". */
  readonly text: readonly string[];
}

export interface ExplainStage {
  readonly label: string;
  readonly stage: Stage;
  readonly verdict: Verdict;
  readonly steps: readonly Step[];
}

export interface ExplainFinal {
  readonly action: Verdict['action'];
  readonly stage: Stage;
  readonly rule: string;
  /** The reply the client would get: "554 5.7.1 ..." or "250 ...". */
  readonly reply: string;
}

export interface ExplainReport {
  readonly policyVersion: number;
  readonly policyDir: string;
  readonly store: string;
  readonly listener: string;
  readonly role: ListenerRole;
  readonly ip: string;
  readonly netblock?: string;
  readonly plan?: string;
  readonly user?: string;
  readonly stages: readonly ExplainStage[];
  readonly recipients: ReadonlyArray<{ readonly rcpt: string; readonly action: Verdict['action']; readonly rule: string }>;
  /** Present when the message would be accepted and a signer was given. */
  readonly signing?: ExplainSigning;
  readonly final: ExplainFinal;
}

const refused = (v: Verdict) => v.action === 'reject' || v.action === 'tempfail';

export function replyText(v: Verdict): string {
  if (refused(v)) {
    const name = v.reply && isReplyName(v.reply) ? v.reply : v.action === 'tempfail' ? 'policy_tempfail' : 'policy_reject';
    return formatReply(name, v.detail);
  }
  const r = REPLIES.accepted;
  return `${r.code} ${r.enhanced} ${r.text} <queue id>${v.action === 'hold' ? ' (into the hold queue)' : ''}`;
}

export async function explain(engine: PolicyEngine, input: ExplainInput): Promise<ExplainReport> {
  const store = new DryRunStore(engine.store);
  const stages: ExplainStage[] = [];
  const recipients: Array<{ rcpt: string; action: Verdict['action']; rule: string }> = [];
  const base: StageFacts = { listener: input.listener, ip: input.ip };
  let first: StageResult | undefined;
  const run = async (label: string, stage: Stage, f: StageFacts): Promise<StageResult> => {
    const r = await engine.evaluate(stage, f, 'explain', store);
    first ??= r;
    stages.push({ label, stage, verdict: r.verdict, steps: r.steps });
    return r;
  };
  const report = (final: Verdict, signing?: ExplainSigning): ExplainReport => ({
    policyVersion: engine.version,
    policyDir: engine.policy.dir,
    store: store.kind,
    listener: input.listener.name,
    role: input.listener.role,
    ip: input.ip,
    ...(first?.netblock ? { netblock: `${first.netblock.cidr} class ${first.netblock.cls}` } : {}),
    ...(first?.plan ? { plan: first.plan } : {}),
    ...(input.user ? { user: input.user } : {}),
    stages,
    recipients,
    ...(signing ? { signing } : {}),
    final: { action: final.action, stage: final.stage, rule: final.rule, reply: replyText(final) },
  });

  try {
    await engine.countConnection(base, 1, store);
    const c = await run('connect', 'connect', base);
    if (refused(c.verdict)) return report(c.verdict);
    const holds: Verdict[] = c.verdict.action === 'hold' ? [c.verdict] : [];
    let facts: StageFacts = base;
    if (input.user !== undefined) {
      facts = { ...base, user: input.user };
      const a = await run(`auth ${input.user} (password not checked)`, 'auth', facts);
      if (refused(a.verdict)) return report(a.verdict);
      await engine.afterAuth(facts, input.account !== undefined, 'explain', store);
      facts = { ...facts, account: input.account, user: input.account?.name ?? input.user };
    }
    const m = await run(`mail from <${input.from}>`, 'mail', { ...facts, mailFrom: input.from, recipients: [] });
    if (refused(m.verdict)) return report(m.verdict);
    if (m.verdict.action === 'hold') holds.push(m.verdict);
    const accepted: string[] = [];
    let firstRefusal: Verdict | undefined;
    for (const rcpt of input.rcpts) {
      const r = await run(`rcpt to <${rcpt}>`, 'rcpt', { ...facts, mailFrom: input.from, recipients: [...accepted], rcpt });
      recipients.push({ rcpt, action: r.verdict.action, rule: r.verdict.rule });
      if (refused(r.verdict)) firstRefusal ??= r.verdict;
      else {
        accepted.push(rcpt);
        if (r.verdict.action === 'hold') holds.push(r.verdict);
      }
    }
    if (accepted.length === 0) return report(firstRefusal ?? { action: 'reject', stage: 'rcpt', rule: 'smtp.no-recipients', reply: 'transaction_failed', detail: '(no recipients given)' });
    const headerFrom = input.headerFrom ?? (input.from ? [input.from.toLowerCase()] : []);
    const d = await run('end of data', 'data', { ...facts, mailFrom: input.from, recipients: accepted, headerFrom, size: input.size ?? 2000 });
    if (refused(d.verdict)) return report(d.verdict);
    if (d.verdict.action === 'hold') holds.push(d.verdict);
    let signing: ExplainSigning | undefined;
    if (input.signer) {
      const client: ClientInfo = { listener: input.listener.name, role: input.listener.role, ip: input.ip, tls: true, ...(first?.netblock ? { netblockClass: first.netblock.cls } : {}) };
      const authority = engine.signingAuthority({ client, account: input.account });
      const decision = input.signer.decide({ headerFromDomain: headerFrom[0] ? domainOf(headerFrom[0]) : undefined, authority });
      signing = { decision, text: signingText(decision) };
    }
    return report(holds[0] ?? d.verdict, signing);
  } finally {
    await store.close();
  }
}

function signingText(d: SigningDecision): string[] {
  if (d.kind === 'none') return [d.rule === 'dkim.not-authorised' ? `would not sign as ${d.reason} [${d.rule}]` : `would not sign: ${d.reason} [${d.rule}]`];
  const selectors = `selector${d.selectors.length > 1 ? 's' : ''} ${d.selectors.join(', ')}`;
  return [...(d.notAuthorised ? [`would not sign as ${d.notAuthorised}`] : []), `would sign as ${d.domain} with ${selectors} because ${d.rule}`];
}

function inputsText(inputs: Record<string, unknown> | undefined): string {
  if (!inputs) return '';
  return Object.entries(inputs)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join('; ');
}

/** The report as text for a terminal. */
export function formatExplain(r: ExplainReport): string {
  const out: string[] = [];
  out.push(`policy v${r.policyVersion} from ${r.policyDir} (state: ${r.store})`);
  if (r.listener === 'postfix') out.push('asked by Postfix: the policy service (connect, mail, rcpt) and the milter (data, DKIM), docs/postfix.md');
  out.push(`client ${r.ip} on listener ${r.listener} (${r.role}): ${r.netblock ? `netblock ${r.netblock}` : 'in no subscriber netblock'}${r.plan ? `, plan ${r.plan}` : ''}${r.user ? `, user ${r.user}` : ''}`);
  for (const s of r.stages) {
    out.push('');
    out.push(`${s.label}:`);
    for (const st of s.steps) {
      const tag = st.outcome === 'next' ? 'pass' : st.outcome;
      const flags = [st.builtin ? 'built-in' : '', st.warnOnly ? 'warnOnly: not enforced' : ''].filter(Boolean).join(', ');
      const reply = st.reply ? ` reply=${st.reply}` : '';
      out.push(`  ${tag.padEnd(8)} ${st.rule.padEnd(34)} ${inputsText(st.inputs)}${reply}${st.note ? ` (${st.note})` : ''}${flags ? ` [${flags}]` : ''}`);
    }
    out.push(`  => ${s.verdict.action} by ${s.verdict.rule}${s.verdict.action === 'reject' || s.verdict.action === 'tempfail' ? `: ${replyText(s.verdict)}` : ''}`);
  }
  if (r.signing) {
    out.push('');
    out.push('dkim:');
    for (const line of r.signing.text) out.push(`  ${line}`);
  }
  out.push('');
  out.push(`final: ${r.final.action} at ${r.final.stage} by ${r.final.rule}: ${r.final.reply}`);
  return `${out.join('\n')}\n`;
}
