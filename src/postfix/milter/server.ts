/**
 * The milter listener (smtpd_milters = inet:host:port): one MilterSession
 * per connection, its packets handled one at a time in order. A protocol
 * error (a bad length, an unknown command) is logged and the connection
 * closed: Postfix then applies milter_default_action (docs/postfix.md:
 * tempfail), never a crash here.
 */
import type net from 'node:net';
import type { PostfixEndpoint } from '../config';
import type { PostfixDeps } from '../context';
import { serve, type Served } from '../serve';
import { MilterProtocolError, PacketReader } from './protocol';
import { MilterQuit, MilterSession } from './session';

const IDLE_MS = 10 * 60_000;
/** Packets read ahead of the ones being handled before reading pauses (body chunks: 64 KiB each). */
const MAX_QUEUED = 32;

export class Milter {
  private served: Served | undefined;

  constructor(private readonly deps: PostfixDeps) {}

  get port(): number {
    return this.served?.port ?? 0;
  }

  get openConnections(): number {
    return this.served?.open() ?? 0;
  }

  async listen(at: PostfixEndpoint): Promise<void> {
    this.served = await serve('milter', at, IDLE_MS, this.deps.logger, (s) => this.connection(s));
  }

  async close(): Promise<void> {
    await this.served?.close();
  }

  private connection(s: net.Socket): void {
    const reader = new PacketReader();
    const session = new MilterSession(this.deps, (b) => {
      if (!s.destroyed) s.write(b);
    });
    let chain = Promise.resolve();
    let queued = 0;
    let done = false;
    const end = (err?: unknown) => {
      if (done) return;
      done = true;
      session.close();
      if (err && !(err instanceof MilterQuit)) {
        this.deps.logger.warn({ evt: 'rejection', listener: 'postfix-milter', reason: (err as Error).message }, err instanceof MilterProtocolError ? 'milter protocol error: connection closed' : 'milter failed: connection closed');
      }
      s.destroy();
    };
    s.on('close', () => end());
    s.on('data', (chunk: Buffer) => {
      let packets;
      try {
        packets = reader.push(chunk);
      } catch (err) {
        return end(err);
      }
      for (const p of packets) {
        queued++;
        // The body streams: stop reading while the handler is behind, so nothing piles up.
        if (queued > MAX_QUEUED) s.pause();
        chain = chain.then(async () => {
          if (done) return;
          try {
            await session.handle(p);
          } catch (err) {
            end(err);
          } finally {
            if (--queued <= MAX_QUEUED / 2 && !done) s.resume();
          }
        });
      }
    });
  }
}
