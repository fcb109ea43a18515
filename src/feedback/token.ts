/**
 * The sender token: an opaque header value (X-Smarthost-Sender) the gateway
 * adds to every message a subscriber sends (before DKIM signing, so the
 * signature covers it), and reads back from the original message quoted in
 * a complaint report to know who sent it.
 *
 * It is the subject (account or intercept address), the queue id and the
 * time, sealed with AES-256-GCM under a key only the gateway (the fleet)
 * holds, with a fresh random nonce each time:
 *   - opaque: the account name never leaves the ISP in clear;
 *   - unlinkable: two messages of one account carry unrelated tokens, so a
 *     recipient cannot tell which messages came from the same account (a
 *     stable HMAC of the account would give every account a public
 *     fingerprint across all its From addresses);
 *   - unforgeable: the GCM tag fails for anything the key did not seal, so
 *     nobody can make a complaint point at an account of their choosing;
 *   - needs no lookup table: the fleet decodes with the key alone.
 * What it cannot prevent: a recipient who copies a real token into other
 * mail can make complaints about that mail count against its sender. The
 * token's age is bounded (maxAge) and the reader takes only the topmost
 * token (the one this gateway prepended) to narrow that.
 *
 * The key file holds one 64-hex-digit key per line: the first seals, all of
 * them open (rotation: add the new key on top, drop the old one after
 * maxAge). Created with a random key at first start when absent.
 *
 * Talks to: the filesystem (the key file). Trusts: nothing it decodes.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface TokenSubject {
  readonly kind: 'account' | 'ip';
  readonly id: string;
}

export interface OpenedToken extends TokenSubject {
  readonly queueId: string;
  readonly issuedAt: number;
}

const VERSION = 't1';

export class SenderTokens {
  constructor(
    private readonly keys: readonly Buffer[],
    private readonly maxAgeMs: number,
    private readonly clock: () => number = Date.now,
  ) {
    if (keys.length === 0) throw new Error('sender token: no key');
  }

  /** Read (or create, 0600) the key file. */
  static fromFile(file: string, maxAgeMs: number, clock?: () => number): SenderTokens {
    if (!existsSync(file)) {
      mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
    }
    const keys = readFileSync(file, 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    for (const k of keys) if (!/^[0-9a-f]{64}$/i.test(k)) throw new Error(`${file}: each line must be a 64-hex-digit key`);
    return new SenderTokens(keys.map((k) => Buffer.from(k, 'hex')), maxAgeMs, clock);
  }

  seal(s: TokenSubject, queueId: string): string {
    const plain = Buffer.from(`${s.kind === 'account' ? 'a' : 'i'}\n${s.id}\n${queueId}\n${Math.floor(this.clock() / 1000)}`);
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.keys[0]!, nonce);
    c.setAAD(Buffer.from(VERSION));
    const body = Buffer.concat([c.update(plain), c.final()]);
    return `${VERSION}.${Buffer.concat([nonce, body, c.getAuthTag()]).toString('base64url')}`;
  }

  /** The sealed facts, or why the token does not count. */
  open(token: string): OpenedToken | { readonly invalid: 'malformed' | 'forged' | 'expired' } {
    const m = /^t1\.([A-Za-z0-9_-]{40,400})$/.exec(token.trim());
    if (!m) return { invalid: 'malformed' };
    const raw = Buffer.from(m[1]!, 'base64url');
    if (raw.length < 12 + 16 + 1) return { invalid: 'malformed' };
    const nonce = raw.subarray(0, 12);
    const tag = raw.subarray(raw.length - 16);
    const body = raw.subarray(12, raw.length - 16);
    for (const key of this.keys) {
      try {
        const d = createDecipheriv('aes-256-gcm', key, nonce);
        d.setAAD(Buffer.from(VERSION));
        d.setAuthTag(tag);
        const [kind, id, queueId, t] = Buffer.concat([d.update(body), d.final()]).toString().split('\n');
        const issuedAt = Number(t) * 1000;
        if (!id || !queueId || !Number.isFinite(issuedAt)) return { invalid: 'malformed' };
        if (this.clock() - issuedAt > this.maxAgeMs) return { invalid: 'expired' };
        return { kind: kind === 'a' ? 'account' : 'ip', id, queueId, issuedAt };
      } catch {
        // not this key: try the next (rotation)
      }
    }
    return { invalid: 'forged' };
  }
}
