/**
 * The contract between the acceptance path (src/smtp/session.ts) and the
 * signer (src/dkim/). Signing is the last change made to a message: the
 * session builds the final bytes (Received: + the client's message with
 * CRLF line endings) and asks for the signature headers to put on top.
 */
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
    }
  /** No key for the domain and policy passes unsigned mail. */
  | { readonly kind: 'unsigned'; readonly reason: string }
  /** No key for the domain and policy refuses unsigned mail (550 5.7.1). */
  | { readonly kind: 'refuse'; readonly reason: string };

export interface MessageSigner {
  /**
   * @param message the complete message as it will be spooled, as chunks
   * @param headerFromDomain domain of the header From (lower case), if any
   * Rejects only on an internal failure (a loaded key that fails to sign):
   * the session answers that with a tempfail (451 4.3.0 local_error), so
   * the message is never accepted unsigned by accident.
   * @param rest the rest of a large message (spilled to disk), streamed
   *   after `message`; the header block is always inside `message`
   */
  sign(message: readonly Buffer[], headerFromDomain: string | undefined, rest?: () => AsyncIterable<Buffer>): Promise<SignResult>;
  /** Re-read keys (rotation) without a restart. */
  reload(): Promise<void>;
  close(): Promise<void>;
}
