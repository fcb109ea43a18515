/**
 * The `postfix:` section: smarthost's policy engine, quotas, containment and
 * DKIM authority offered to an existing Postfix over its two open
 * protocols (docs/postfix.md):
 *
 *   postfix:
 *     role: intercept        # what a client Postfix did not authenticate is (intercept | mx)
 *     policyService: { address: 127.0.0.1, port: 10040 }   # check_policy_service inet:...
 *     milter: { address: 127.0.0.1, port: 8891 }          # smtpd_milters = inet:...
 *
 * Either service may be left out. A client Postfix authenticated
 * (sasl_username / the {auth_authen} macro) is a submission client of that
 * account, as on a native submission listener.
 */
import type { ListenerConfig } from '../config/listener';
import { At, int, obj, oneOf, str } from '../config/validate';

export interface PostfixEndpoint {
  address: string;
  port: number;
}

export interface PostfixConfig {
  /** Role of clients Postfix did not authenticate: which restriction lists and gates apply. */
  role: 'intercept' | 'mx';
  policyService?: PostfixEndpoint;
  milter?: PostfixEndpoint;
}

export const POSTFIX_KEYS = ['role', 'policyService', 'milter'] as const;

function endpoint(v: unknown, at: At, dfltPort: number): PostfixEndpoint | undefined {
  if (v === undefined || v === null) return undefined;
  const o = obj(v, at, ['address', 'port']);
  return {
    address: str(o.address, at.child('address', { doc: 'address to listen on for Postfix' }), '127.0.0.1'),
    port: int(o.port, at.child('port', { doc: 'port to listen on' }), dfltPort, 0, 65535),
  };
}

export function parsePostfixConfig(v: unknown, at: At): PostfixConfig | undefined {
  if (v === undefined || v === null) return undefined;
  const o = obj(v, at, POSTFIX_KEYS);
  const cfg: PostfixConfig = {
    role: oneOf(o.role, at.child('role'), ['intercept', 'mx'] as const, 'intercept'),
    policyService: endpoint(o.policyService, at.child('policyService'), 10040),
    milter: endpoint(o.milter, at.child('milter'), 8891),
  };
  if (!cfg.policyService && !cfg.milter) at.fail('set policyService, milter or both (or remove the section)');
  return cfg;
}

/** The listener names Postfix's clients appear under in rules (`listeners: [postfix]`), logs and explain. */
export const POSTFIX_LISTENER = 'postfix';

/** Listeners rules and `policy explain` may name: the configured ones and, with a postfix section, "postfix". */
export function ruleListeners(cfg: { listeners: ListenerConfig[]; postfix?: PostfixConfig }): ListenerConfig[] {
  return cfg.postfix ? [...cfg.listeners, postfixListener(cfg.postfix.role)] : cfg.listeners;
}

/** The listener `policy explain` judges as; for "postfix" a user makes it a submission client, as a SASL login does. */
export function explainListener(listeners: readonly ListenerConfig[], name: string, user: string | undefined): ListenerConfig | undefined {
  const l = listeners.find((x) => x.name === name);
  return l && l.name === POSTFIX_LISTENER && user ? postfixListener('submission') : l;
}

/** The listener a Postfix client is judged as: role from sasl_username or postfix.role. */
export function postfixListener(role: ListenerConfig['role']): ListenerConfig {
  return { name: POSTFIX_LISTENER, role, address: '', port: 0, security: 'none', auth: role === 'submission' ? 'required' : 'none', greetDelayMs: 0, proxyFrom: [] };
}
