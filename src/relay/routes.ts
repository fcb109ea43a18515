/**
 * Next-hop selection: for one recipient domain, where does its mail go?
 *
 * Order (first match wins):
 *  1. `relay.routes` exact domain ("example.com");
 *  2. `relay.routes` parent-domain entries written with a leading dot
 *     (".example.com" matches a.example.com and x.y.example.com, but not
 *     example.com itself — Postfix transport_maps semantics); the longest
 *     (most specific) parent wins;
 *  3. `relay.relayhost`;
 *  4. MX delivery on `relay.mxPort` with `relay.mxTls` (and `relay.mxCa`).
 *
 * A route or relayhost host is looked up as A/AAAA directly, never as MX
 * (Postfix's `[host]` form). The returned `key` names the *destination*:
 * connection pooling and per-destination concurrency are counted per key.
 */
import type { NextHop, OutboundTls, RelayConfig } from './config';

export type NextHopPlan =
  | { readonly kind: 'relay'; readonly key: string; readonly via: 'route' | 'relayhost'; readonly hop: NextHop }
  | {
      readonly kind: 'mx';
      readonly key: string;
      readonly domain: string;
      readonly port: number;
      readonly tls: OutboundTls;
      /** mxTls: verify — CA certificates (PEM) to trust instead of the system's. */
      readonly ca?: string;
    };

export function routeFor(cfg: Pick<RelayConfig, 'routes' | 'relayhost' | 'mxPort' | 'mxTls'> & Partial<Pick<RelayConfig, 'mxCa'>>, rawDomain: string): NextHopPlan {
  const domain = rawDomain.toLowerCase().replace(/\.$/, '');
  const exact = cfg.routes.get(domain);
  if (exact) return relayPlan('route', exact);
  // Walk up the labels: a.b.example.com → .b.example.com → .example.com → .com
  for (let i = domain.indexOf('.'); i >= 0; i = domain.indexOf('.', i + 1)) {
    const parent = cfg.routes.get(domain.slice(i));
    if (parent) return relayPlan('route', parent);
  }
  if (cfg.relayhost) return relayPlan('relayhost', cfg.relayhost);
  return {
    kind: 'mx',
    key: `mx:${domain}`,
    domain,
    port: cfg.mxPort,
    tls: cfg.mxTls,
    ...(cfg.mxTls === 'verify' && cfg.mxCa !== undefined ? { ca: cfg.mxCa } : {}),
  };
}

function relayPlan(via: 'route' | 'relayhost', hop: NextHop): NextHopPlan {
  // TLS level and AUTH user are part of the key: two routes to one host with
  // different credentials must not share a (logged-in) connection. Likewise a
  // session verified against one CA bundle is not reused for a route trusting
  // another (the bundle's file is appended only when set, so keys without one
  // are unchanged).
  const key = `relay:${hop.host}:${hop.port}:${hop.tls}:${hop.auth?.user ?? ''}${hop.caFile ? `:${hop.caFile}` : ''}`;
  return { kind: 'relay', key, via, hop };
}
