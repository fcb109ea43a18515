/** Typings for the mailauth 4.13 internals the canonicalization tests compare against. */
declare module 'mailauth/lib/dkim/body/relaxed' {
  export class RelaxedHash {
    constructor(algorithm: string, maxBodyLength: number | false);
    update(chunk: Buffer | null, final?: boolean): void;
    digest(encoding: 'base64'): string;
  }
}
declare module 'mailauth/lib/tools' {
  export function formatRelaxedLine(line: Buffer, suffix?: string): Buffer;
}
