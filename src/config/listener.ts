/**
 * What a listener is once configured: the shape the config reader
 * (schema.ts, the `listeners:` section) produces and the SMTP layer, the
 * policy, the Postfix services and the admin API read. Its own file, below
 * schema.ts, because schema.ts composes every section's parser: a stage
 * that names a listener must not reach them through it.
 */
import type { ListenerRole } from '../envelope';

/** How a listener's clients get TLS: never, by STARTTLS, or from the first byte (port 465); the words mail clients use. */
export type ListenerSecurity = 'none' | 'starttls' | 'implicit';
export type AuthMode = 'none' | 'required';

export interface ListenerConfig {
  name: string;
  role: ListenerRole;
  address: string;
  port: number;
  security: ListenerSecurity;
  auth: AuthMode;
  /** Pause before the greeting (early-talker detection); 0 on submission. */
  greetDelayMs: number;
  /** Balancers allowed to send a PROXY protocol header, as canonical CIDRs (src/fleet/proxy-from.ts). */
  proxyFrom: string[];
}
