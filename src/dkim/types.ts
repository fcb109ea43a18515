/**
 * The contract between the acceptance path (src/smtp/session.ts) and the
 * signer (src/dkim/). Signing is the last change made to a message: the
 * session builds the final bytes (Received: + the client's message with
 * CRLF line endings) and asks for the signature headers to put on top.
 *
 * Signing is authorised, not inferred: the header From says which domain
 * the message wants to be signed as, the SigningAuthority (built by the
 * policy, src/policy/signing.ts) says whether this client may sign as it.
 */

/** Which domains this client may sign as, each with the rule that says so. */
export interface SigningAuthority {
  /** The rule authorising the client for exactly `domain` (lower-case A-label), or undefined. */
  authorises(domain: string): string | undefined;
  /** Who the client is and what it is authorised for, for "not authorised (…)". */
  readonly summary: string;
  /**
   * The client's address when it is identified by it (no account: intercept
   * and mx listeners), so dkim.internalHosts may authorise it.
   */
  readonly ip?: string;
}

export interface SigningRequest {
  /** Domain of the header From (lower case), if any. */
  readonly headerFromDomain: string | undefined;
  readonly authority: SigningAuthority;
}

/** What the signer decided for a request (also shown by `policy explain`). */
export type SigningDecision =
  | {
      readonly kind: 'sign';
      readonly domain: string;
      readonly selectors: readonly string[];
      /** The rule that authorised signing as `domain`. */
      readonly rule: string;
      /** Set when the From domain (or a parent) has a key the client is not authorised for: "D: not authorised (…)". */
      readonly notAuthorised?: string;
    }
  /** rule dkim.not-authorised: `reason` starts "D: not authorised (…)"; dkim.no-key, dkim.enabled: why not. */
  | { readonly kind: 'none'; readonly rule: string; readonly reason: string };

export type SignResult =
  /** Header lines to prepend, each ending in CRLF (one per signature). */
  | {
      readonly kind: 'signed';
      readonly headers: string;
      readonly domain: string;
      /** e.g. ['rsa-sha256', 'ed25519-sha256'], in the order of `headers`. */
      readonly algorithms: readonly string[];
      /** The selectors used, parallel to `algorithms` (for the reception log). */
      readonly selectors?: readonly string[];
      /** The rule that authorised the signature (for the reception log). */
      readonly rule: string;
    }
  /** Nothing signs the message and policy passes unsigned mail. */
  | { readonly kind: 'unsigned'; readonly rule: string; readonly reason: string }
  /** Nothing signs the message and policy refuses unsigned mail (550 5.7.1). */
  | { readonly kind: 'refuse'; readonly rule: string; readonly reason: string };

export interface MessageSigner {
  /**
   * @param message the complete message as it will be spooled, as chunks
   * @param request the header From's domain and the client's signing authority
   * Rejects only on an internal failure (a loaded key that fails to sign):
   * the session answers that with a tempfail (451 4.3.0 local_error), so
   * the message is never accepted unsigned by accident.
   * @param rest the rest of a large message (spilled to disk), streamed
   *   after `message`; the header block is always inside `message`
   */
  sign(message: readonly Buffer[], request: SigningRequest, rest?: () => AsyncIterable<Buffer>): Promise<SignResult>;
  /**
   * The same, for a message whose body was hashed as it arrived (relaxed
   * body canonicalization, SHA-256, base64): `header` is the header
   * section (CRLF line ends), `bodyHash` the bh= value.
   */
  signHashed(header: Buffer, bodyHash: string, request: SigningRequest): Promise<SignResult>;
  /** The decision alone (no message): which domain, selectors and rule, or why none. */
  decide(request: SigningRequest): SigningDecision;
  /** Re-read keys (rotation) without a restart. */
  reload(): Promise<void>;
  close(): Promise<void>;
}
