/**
 * Which domain signs a message, and by which rule. Signing is authorised,
 * not inferred from the header From:
 *
 *   1. the From domain, then its parents (relaxed DMARC alignment), each
 *      only if it has an active key AND the client is authorised for it
 *      (SigningAuthority, from the policy; or dkim.internalHosts for a
 *      client identified by its address);
 *   2. else dkim.signingDomain, the ISP's own, as long as that signature
 *      would not be DMARC-aligned with the From (same organisational
 *      domain): an unauthorised client must never get an aligned signature,
 *      not even the ISP's own domain's;
 *   3. else nothing (dkim.unsignedPolicy says pass or refuse).
 *
 * Talks to: the key ring. Trusts: the authority it is given.
 */
import { getDomain } from 'tldts';
import { internalHost, normalizeDomain, type DkimConfig } from './config';
import { KEY_ALGORITHMS, type DkimKey, type KeyRing } from './keys';
import type { SigningAuthority, SigningRequest } from './types';

export type Choice =
  | { readonly kind: 'sign'; readonly domain: string; readonly keys: readonly DkimKey[]; readonly rule: string; readonly notAuthorised?: string }
  | { readonly kind: 'none'; readonly rule: string; readonly reason: string };

/** Public suffix list with private domains, as DMARC receivers (and mailauth) read it. */
const PSL = { allowIcannDomains: true, allowPrivateDomains: true };

export function chooseSigningKeys(ring: KeyRing, cfg: DkimConfig, req: SigningRequest, now: number): Choice {
  const activeKeys = (domain: string): DkimKey[] => {
    const active = ring.active(domain, now);
    return KEY_ALGORITHMS.map((a) => active[a]).filter((k): k is DkimKey => k !== undefined);
  };
  const from = req.headerFromDomain ? normalizeDomain(req.headerFromDomain) : '';
  const refused: string[] = [];
  for (const domain of fromAndParents(from)) {
    const keys = activeKeys(domain);
    if (keys.length === 0) continue;
    const rule = authorisedBy(cfg, req.authority, domain);
    const notAuthorised = refused.length > 0 ? notAuthorisedText(refused, req.authority) : undefined;
    if (rule) return { kind: 'sign', domain, keys, rule, ...(notAuthorised ? { notAuthorised } : {}) };
    refused.push(domain);
  }
  const notAuthorised = refused.length > 0 ? notAuthorisedText(refused, req.authority) : undefined;
  const fallback = cfg.signingDomain;
  if (fallback) {
    const keys = activeKeys(fallback);
    if (keys.length > 0 && !aligned(fallback, from)) return { kind: 'sign', domain: fallback, keys, rule: 'dkim.signingDomain', ...(notAuthorised ? { notAuthorised } : {}) };
  }
  const why: string[] = [notAuthorised ?? `no active DKIM key for ${from || '(no header From domain)'}`];
  if (!fallback) why.push('no dkim.signingDomain');
  else if (activeKeys(fallback).length === 0) why.push(`no active key for dkim.signingDomain ${fallback}`);
  else why.push(`dkim.signingDomain ${fallback} would be aligned with From ${from}`);
  return { kind: 'none', rule: refused.length > 0 ? 'dkim.not-authorised' : 'dkim.no-key', reason: why.join('; ') };
}

/** The rule authorising `authority` for `domain`: the policy's, else dkim.internalHosts for an address-identified client. */
function authorisedBy(cfg: DkimConfig, authority: SigningAuthority, domain: string): string | undefined {
  const rule = authority.authorises(domain);
  if (rule) return rule;
  const host = authority.ip !== undefined ? internalHost(cfg.internalHosts, authority.ip) : undefined;
  return host ? `dkim.internalHosts ${host.text}` : undefined;
}

/** "bakery.example: not authorised (intercept client …)", read after "would not sign as ". */
function notAuthorisedText(domains: readonly string[], authority: SigningAuthority): string {
  return `${domains.join(', ')}: not authorised (${authority.summary})`;
}

/** `d` and its parents, down to (not including) the top-level label. */
function fromAndParents(d: string): string[] {
  if (!d) return [];
  const labels = d.split('.');
  const out: string[] = [];
  for (let i = 0; i < labels.length - 1; i++) out.push(labels.slice(i).join('.'));
  return out;
}

/** Would a d=`signing` signature be DMARC-aligned (relaxed) with From domain `from`? */
function aligned(signing: string, from: string): boolean {
  if (!from) return false;
  if (signing === from) return true;
  const org = getDomain(signing, PSL) ?? signing;
  return org === (getDomain(from, PSL) ?? from);
}
