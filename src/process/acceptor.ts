/**
 * The acceptor's part of a process (single, worker): one SMTP listener per
 * configured listener, on sockets it binds itself or, in a worker, on those
 * the primary bound and handed over.
 */
import type { ListenerConfig } from '../config/listener';
import type { Logger } from '../log';
import type { BoundSocket } from '../net/bound-socket';
import { Listener, type TlsMaterial } from '../smtp/listener';
import type { SessionDeps } from '../smtp/session';
import type { ProcessPart } from './roles';

export interface Acceptor extends ProcessPart {
  readonly listeners: Listener[];
}

export function acceptor(d: {
  listeners: readonly ListenerConfig[];
  session: SessionDeps;
  tls: () => TlsMaterial;
  /** A worker's sockets, bound by the primary, by listener name. */
  sockets?: ReadonlyMap<string, BoundSocket>;
  logger: Logger;
}): Acceptor {
  const listeners = d.listeners.map((l) => new Listener(l, d.session, d.tls, d.logger));
  return {
    listeners,
    async bind() {
      for (const l of listeners) await l.bind(d.sockets?.get(l.cfg.name));
    },
    prepare: async () => undefined,
    async open() {
      for (const l of listeners) await l.listen();
    },
    async close() {
      await Promise.all(listeners.map((l) => l.close().catch(() => undefined)));
    },
  };
}
