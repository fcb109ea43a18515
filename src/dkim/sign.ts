/**
 * The DKIM signer: the last change made to a message before the spool.
 * Picks the signing domain (decide.ts: the header From's domain or a parent
 * of it with a key, when the client is authorised for it; else the ISP's
 * fallback, else none), then signs relaxed/relaxed with every
 * active key of that domain (RSA and/or Ed25519: dual signing), SHA-256,
 * From over-signed, no l= tag.
 *
 * Implemented on node:crypto rather than mailauth's dkimSign, which
 * re-parses the PEM on every call (~0.8 ms per RSA-2048 message): keys are
 * parsed once per load (keys.ts) and kept as KeyObjects, and the RSA
 * private-key operation (~0.3 ms of CPU for 2048 bits) runs on libuv's thread
 * pool (crypto.sign with a callback), so the event loop only canonicalizes
 * and hashes (tens of µs for a typical message; bodies over 1 MB are hashed
 * in slices with yields in between) and signs Ed25519 (~30 µs, less than a
 * trip through the thread pool costs in CPU).
 * Correctness is proven in test/dkim/ against mailauth's verifier.
 *
 * Talks to: keys.ts (the key ring), the logger (never key material), an
 * optional metrics callback. Trusts: the session for CRLF line endings.
 */
import { createHash, sign as cryptoSign } from 'node:crypto';
import type { Logger } from '../log';
import { parseHeaderFields, RelaxedBodyHash, relaxedHeader, selectHeaders, splitMessage } from './canon';
import type { DkimConfig } from './config';
import { chooseSigningKeys } from './decide';
import { KeyRing, loadKeys, type DkimKey, type KeyAlgorithm, type KeyProblem, type KeyState } from './keys';
import type { MessageSigner, SignResult, SigningDecision, SigningRequest } from './types';
import { reclaim } from '../spool/reclaim';

export type SignOutcome = 'ok' | 'error';
/** Metrics hook: one call per signature attempted. */
export type OnSigned = (domain: string, algorithm: string, result: SignOutcome) => void;

export interface SignerOptions {
  onSigned?: OnSigned;
  /** Clock (epoch ms) for key activation and t=; tests move it. */
  now?: () => number;
}

/** A loaded key failed to sign: the session tempfails the message. */
export class DkimSignError extends Error {
  constructor(
    readonly domain: string,
    readonly selector: string,
    cause: unknown,
  ) {
    super(`DKIM signing failed for ${domain} (selector ${selector}): ${(cause as Error)?.message ?? String(cause)}`);
    this.name = 'DkimSignError';
  }
}

export interface DkimStatus {
  enabled: boolean;
  signingDomain?: string;
  unsignedPolicy: 'pass' | 'refuse';
  loadedAt?: string;
  domains: Array<{
    domain: string;
    keys: Array<{ selector: string; algorithm: KeyAlgorithm; state: KeyState; bits?: number; activeFrom?: string; retireAt?: string }>;
  }>;
  problems: KeyProblem[];
}

const ALGO_NAME: Record<KeyAlgorithm, string> = { rsa: 'rsa-sha256', ed25519: 'ed25519-sha256' };
/** Bodies above this are hashed in slices, yielding to the event loop between them. */
const SLICE = 256 * 1024;

export class DkimSigner implements MessageSigner {
  onSigned: OnSigned | undefined;
  private ring = new KeyRing([]);
  private problems: KeyProblem[] = [];
  private loadedAt: number | undefined;
  private reloading: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly now: () => number;

  constructor(
    private readonly cfg: DkimConfig,
    private readonly logger: Logger,
    opts: SignerOptions = {},
  ) {
    this.onSigned = opts.onSigned;
    this.now = opts.now ?? Date.now;
  }

  async sign(message: readonly Buffer[], request: SigningRequest, rest?: () => AsyncIterable<Buffer>): Promise<SignResult> {
    if (this.closed) throw new Error('DKIM signer is closed');
    if (!this.cfg.enabled) return { kind: 'unsigned', rule: 'dkim.enabled', reason: 'DKIM signing is disabled' };
    const now = this.now();
    const choice = chooseSigningKeys(this.ring, this.cfg, request, now);
    if (choice.kind === 'none') return { kind: this.cfg.unsignedPolicy === 'refuse' ? 'refuse' : 'unsigned', rule: choice.rule, reason: choice.reason };
    const { header, body } = splitMessage(message);
    return this.signChosen(choice, header, await bodyHash(body, rest), now);
  }

  /**
   * Sign a message whose body was hashed as it streamed past (a
   * RelaxedBodyHash over its CRLF body: the milter, src/postfix/milter),
   * so a large body is never held. `header` is the header section with
   * CRLF line ends.
   */
  async signHashed(header: Buffer, bh: string, request: SigningRequest): Promise<SignResult> {
    if (this.closed) throw new Error('DKIM signer is closed');
    if (!this.cfg.enabled) return { kind: 'unsigned', rule: 'dkim.enabled', reason: 'DKIM signing is disabled' };
    const now = this.now();
    const choice = chooseSigningKeys(this.ring, this.cfg, request, now);
    if (choice.kind === 'none') return { kind: this.cfg.unsignedPolicy === 'refuse' ? 'refuse' : 'unsigned', rule: choice.rule, reason: choice.reason };
    return this.signChosen(choice, header, bh, now);
  }

  private async signChosen(choice: Extract<ReturnType<typeof chooseSigningKeys>, { kind: 'sign' }>, header: Buffer, bh: string, now: number): Promise<SignResult> {
    const { domain, keys } = choice;
    const fields = parseHeaderFields(header);
    const { h, canonical } = selectHeaders(fields, this.cfg.headers);
    const t = Math.floor(now / 1000);
    const results = await Promise.allSettled(keys.map((k) => signOne(k, domain, h, bh, t, canonical)));
    let headers = '';
    const failed: DkimSignError[] = [];
    results.forEach((r, i) => {
      const k = keys[i]!;
      if (r.status === 'fulfilled') headers += r.value;
      else failed.push(new DkimSignError(domain, k.selector, r.reason));
      this.onSigned?.(domain, ALGO_NAME[k.algorithm], r.status === 'fulfilled' ? 'ok' : 'error');
    });
    if (failed.length > 0) {
      // A partial dual signature is not what the domain's owner configured: tempfail instead.
      for (const e of failed) this.logger.error({ evt: 'dkim', domain: e.domain, selector: e.selector, err: e.message }, 'DKIM signing failed');
      throw failed[0]!;
    }
    return {
      kind: 'signed',
      headers,
      domain,
      algorithms: keys.map((k) => ALGO_NAME[k.algorithm]),
      selectors: keys.map((k) => k.selector),
      rule: choice.rule,
    };
  }

  /** What sign() would decide now, without a message (policy explain). */
  decide(request: SigningRequest): SigningDecision {
    if (!this.cfg.enabled) return { kind: 'none', rule: 'dkim.enabled', reason: 'DKIM signing is disabled' };
    const c = chooseSigningKeys(this.ring, this.cfg, request, this.now());
    if (c.kind === 'none') return c;
    return { kind: 'sign', domain: c.domain, selectors: c.keys.map((k) => k.selector), rule: c.rule, ...(c.notAuthorised ? { notAuthorised: c.notAuthorised } : {}) };
  }

  /**
   * Re-read the keys directory. Unchanged key files keep their parsed key;
   * a file that fails is skipped and reported; if the directory itself
   * cannot be read the previous keys stay and the error is thrown.
   */
  reload(): Promise<void> {
    const run = this.reloading.catch(() => undefined).then(() => this.doReload());
    this.reloading = run;
    return run;
  }

  private async doReload(): Promise<void> {
    if (!this.cfg.enabled) return;
    let loaded: Awaited<ReturnType<typeof loadKeys>>;
    try {
      loaded = await loadKeys(this.cfg.keysDir, this.ring);
    } catch (e) {
      this.logger.error({ evt: 'dkim', keysDir: this.cfg.keysDir, err: (e as Error).message }, 'cannot read DKIM keys; keeping the previous keys');
      throw e;
    }
    const problems = [...loaded.problems];
    if (this.cfg.signingDomain) {
      const a = loaded.ring.active(this.cfg.signingDomain, this.now());
      if (!a.rsa && !a.ed25519) {
        problems.push({
          severity: 'error',
          path: `${this.cfg.keysDir}/${this.cfg.signingDomain}`,
          reason: `no active key for the fallback signing domain ${this.cfg.signingDomain}: mail no authorised customer key signs goes out ${this.cfg.unsignedPolicy === 'refuse' ? 'refused' : 'unsigned'}`,
        });
      }
    }
    this.ring = loaded.ring;
    this.problems = problems;
    this.loadedAt = this.now();
    for (const p of problems) {
      this.logger[p.severity === 'error' ? 'error' : 'warn']({ evt: 'dkim', path: p.path }, `DKIM keys: ${p.reason}`);
    }
    this.logger.info({ evt: 'dkim', keys: loaded.ring.keys.length, domains: loaded.ring.domains().length }, 'DKIM keys loaded');
  }

  /** What is loaded and what signs now, for the admin API and the CLI (no key material). */
  status(): DkimStatus {
    const now = this.now();
    const iso = (ms?: number) => (ms === undefined ? undefined : new Date(ms).toISOString());
    return {
      enabled: this.cfg.enabled,
      signingDomain: this.cfg.signingDomain,
      unsignedPolicy: this.cfg.unsignedPolicy,
      loadedAt: iso(this.loadedAt),
      domains: this.ring.domains().map((domain) => ({
        domain,
        keys: this.ring.keysOf(domain).map((k) => ({
          selector: k.selector,
          algorithm: k.algorithm,
          state: this.ring.state(k, now),
          bits: k.bits,
          activeFrom: iso(k.activeFrom),
          retireAt: iso(k.retireAt),
        })),
      })),
      problems: [...this.problems],
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.reloading.catch(() => undefined);
  }
}

/** Build the signer and load its keys. */
export async function createSigner(cfg: DkimConfig, logger: Logger, opts: SignerOptions = {}): Promise<DkimSigner> {
  const signer = new DkimSigner(cfg, logger, opts);
  await signer.reload();
  return signer;
}

async function bodyHash(body: readonly Buffer[], rest?: () => AsyncIterable<Buffer>): Promise<string> {
  const hasher = new RelaxedBodyHash();
  let sinceYield = 0;
  const chunks = async function* () {
    yield* body;
    if (!rest) return;
    for await (const chunk of rest()) {
      yield chunk;
      reclaim(chunk.length); // hashed: garbage now (a spilled message's tail)
    }
  };
  for await (const chunk of chunks()) {
    for (let off = 0; off < chunk.length; off += SLICE) {
      const part = off === 0 && chunk.length <= SLICE ? chunk : chunk.subarray(off, off + SLICE);
      hasher.update(part);
      sinceYield += part.length;
      if (sinceYield >= SLICE) {
        sinceYield = 0;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
  }
  return hasher.digest();
}

async function signOne(key: DkimKey, domain: string, h: readonly string[], bh: string, t: number, canonicalHeaders: string): Promise<string> {
  const unsigned = formatSignatureHeader([
    ['v', '1'],
    ['a', ALGO_NAME[key.algorithm]],
    ['c', 'relaxed/relaxed'],
    ['d', domain],
    ['s', key.selector],
    ['t', String(t)],
    ['h', h.join(':')],
    ['bh', bh],
  ]);
  const data = Buffer.from(canonicalHeaders + relaxedHeader(unsigned, true), 'latin1');
  const signature =
    key.algorithm === 'rsa'
      ? await new Promise<Buffer>((resolve, reject) => cryptoSign('sha256', data, key.privateKey, (err, sig) => (err ? reject(err) : resolve(sig))))
      : // RFC 8463: Ed25519 (PureEdDSA) over the SHA-256 of the header hash input. Signed
        // here, not on the thread pool: ~30 us, about what the hand-off there and back costs.
        cryptoSign(null, createHash('sha256').update(data).digest(), key.privateKey);
  return `${unsigned}${foldBase64(signature.toString('base64'))}\r\n`;
}

const LINE = 78;

/**
 * "DKIM-Signature: v=1; a=...; ...;\r\n b=" folded below 78 columns. h= is
 * folded after a colon when long (FWS is allowed there); b= starts its own
 * line and its value is appended by the caller (after signing, b= is empty).
 */
export function formatSignatureHeader(tags: ReadonlyArray<readonly [string, string]>): string {
  let out = 'DKIM-Signature:';
  let col = out.length;
  for (const [k, v] of tags) {
    const atoms = k === 'h' ? splitAfterColons(`${k}=${v};`) : [`${k}=${v};`];
    const first = atoms[0]!;
    if (col + 1 + first.length > LINE) {
      out += '\r\n ';
      col = 1;
    } else {
      out += ' ';
      col += 1;
    }
    out += first;
    col += first.length;
    for (const atom of atoms.slice(1)) {
      if (col + atom.length > LINE) {
        out += '\r\n ';
        col = 1;
      }
      out += atom;
      col += atom.length;
    }
  }
  return `${out}\r\n b=`;
}

function splitAfterColons(s: string): string[] {
  return s.split(/(?<=:)/);
}

/** The b= value in lines that keep the header under 78 columns. */
function foldBase64(b64: string): string {
  const first = LINE - 3; // " b=" starts the line
  let out = b64.slice(0, first);
  for (let i = first; i < b64.length; i += LINE - 1) out += `\r\n ${b64.slice(i, i + LINE - 1)}`;
  return out;
}
