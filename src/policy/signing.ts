/**
 * Who may sign as what: a client's SigningAuthority, read from policy data.
 * The signer (src/dkim/decide.ts) signs d=D only when this says the client
 * is authorised for D (or dkim.internalHosts does), whatever the header
 * From claims:
 *
 *   a client with an account (SMTP AUTH, or a POP-before-SMTP grant, which
 *     stands for its account): the account's sender entries in the
 *     accounts file: "a@D" and "@D" authorise D exactly, "@*.D" (or "*.D")
 *     the subdomains of D; with no entries, the account name's domain when
 *     the name is an address (as for the identity rules);
 *   an intercept client (no account): the domains identity.yaml lists for
 *     its netblock (the most specific) or its netblock class;
 *   anyone else: no domain.
 *
 * This is deliberately independent of the identity rules' modes
 * (`headerFrom: any`, `envelopeSender: any`, `warnOnly`): those say what a
 * client may SEND; this says what the gateway will vouch for by signing.
 *
 * Talks to: nothing (data only). Trusts: the account and identity data.
 */
import { accountSenders, senderEntry, type Account } from '../accounts/store';
import { normalizeDomain } from '../dkim/config';
import type { SigningAuthority } from '../dkim/types';
import type { ClientInfo } from '../envelope';
import { interceptIdentity, type IdentityConfig } from './identity';

export interface SigningFacts {
  readonly client: ClientInfo;
  /** The authenticated account, or the account of a POP-before-SMTP grant. */
  readonly account?: Account;
  /** True when `account` comes from a POP-before-SMTP grant (named in the rule). */
  readonly popGrant?: boolean;
}

export function signingAuthority(identity: IdentityConfig, f: SigningFacts): SigningAuthority {
  if (f.account) return accountAuthority(f.account, f.popGrant === true);
  const ip = f.client.ip;
  if (f.client.role !== 'intercept') return { authorises: () => undefined, summary: `${f.client.role} client ${ip} without an account: no domains`, ip };
  const id = interceptIdentity(identity, ip, f.client.netblockClass);
  const who = `intercept client ${ip}${f.client.netblockClass ? ` (class ${f.client.netblockClass})` : ''}`;
  if (!id) return { authorises: () => undefined, summary: `${who}: no identity.yaml domains for its netblock or class`, ip };
  return {
    authorises: (domain) => {
      const m = id.domains.match(domain);
      return m ? `${id.source} domains ${m.entry}` : undefined;
    },
    summary: `${who}: ${id.source} domains ${id.domains.entries().join(' ')}`,
    ip,
  };
}

function accountAuthority(account: Account, popGrant: boolean): SigningAuthority {
  const who = `${popGrant ? 'POP-before-SMTP grant for account' : 'account'} ${account.name}`;
  const entries = accountSenders(account).map((s) => ({ text: s, entry: senderEntry(s) }));
  return {
    authorises: (domain) => {
      for (const { text, entry } of entries) {
        const d = normalizeDomain(entry.domain);
        if (!d) continue;
        if (entry.kind === 'subdomains' ? domain.endsWith(`.${d}`) : domain === d) return `${who} sender ${text}`;
      }
      return undefined;
    },
    summary: `${who}: senders ${entries.map((e) => e.text).join(' ') || '(none)'}`,
  };
}
