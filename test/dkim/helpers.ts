/**
 * Shared pieces of the DKIM tests: a temporary keys directory, a silent
 * logger, mailauth's verifier asking the real test DNS server, and sample
 * messages.
 */
import { Resolver } from 'node:dns/promises';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { dkimVerify } from 'mailauth/lib/dkim/verify';
import type { DKIMResult } from 'mailauth';
import { dkimKeygen, type KeygenOptions, type KeygenResult } from '../../src/dkim/cli';
import type { DkimConfig } from '../../src/dkim/config';
import type { SigningRequest } from '../../src/dkim/types';
import { DEFAULT_SIGNED_HEADERS } from '../../src/dkim/config';
import type { TestDns } from '../helpers/dns-server';

export const silentLogger = pino({ level: 'silent' });

export async function tempKeysDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'smarthost-dkim-'));
  return { dir, cleanup: () => fs.rm(dir, { recursive: true, force: true }) };
}

export function dkimConfig(keysDir: string, over: Partial<DkimConfig> = {}): DkimConfig {
  return { enabled: true, keysDir, unsignedPolicy: 'pass', headers: [...DEFAULT_SIGNED_HEADERS], internalHosts: [], ...over };
}

/**
 * A signing request from a client authorised for `fromDomain` and its
 * parents (these tests are about signatures, not authorisation: that is
 * test/dkim/decide.test.ts and test/security/signing-authority.test.ts).
 */
export function signAs(fromDomain: string | undefined): SigningRequest {
  return { headerFromDomain: fromDomain, authority: { authorises: () => 'test: authorised for every domain', summary: 'test client' } };
}

/** Generate a key (active since an hour ago unless told) and publish its TXT record on the test DNS. */
export async function keyAndPublish(dns: TestDns | undefined, opts: Omit<KeygenOptions, 'activeFrom'> & { activeFrom?: string | Date }): Promise<KeygenResult> {
  const r = await dkimKeygen({ activeFrom: new Date(Date.now() - 3600_000), ...opts });
  dns?.set(r.dnsName, 'TXT', [r.txtRecord]);
  return r;
}

/** mailauth's verifier, resolving through the test DNS server. */
export async function verify(message: Buffer, dns: TestDns, curTime?: Date): Promise<DKIMResult[]> {
  const resolver = new Resolver({ timeout: 2000, tries: 1 });
  resolver.setServers([dns.server]);
  const res = await dkimVerify(message, {
    resolver: (name: string, rr: string) => resolver.resolve(name, rr) as Promise<string[][]>,
    curTime,
  });
  return res.results;
}

export const CRLF = (s: string) => s.replace(/\r?\n/g, '\r\n');

export function sampleMessage(from = 'alice@customer.example', opts: { subject?: string; body?: string; extraHeaders?: string } = {}): Buffer {
  const body = opts.body ?? 'Hello,\n\nthis is a test message.\n\n-- \nAlice\n';
  return Buffer.from(
    CRLF(
      `Received: from [192.0.2.10] (helo=pc) by smarthost.isp.example with ESMTPSA id 4a1b2c\n` +
        `\tfor <bob@remote.example>; Mon, 1 Jan 2024 10:00:00 +0000\n` +
        `From: Alice <${from}>\n` +
        `To: Bob <bob@remote.example>\n` +
        `Subject: ${opts.subject ?? 'Quarterly report'}\n` +
        `Date: Mon, 1 Jan 2024 10:00:00 +0000\n` +
        `Message-ID: <abc123@customer.example>\n` +
        `MIME-Version: 1.0\n` +
        `Content-Type: text/plain; charset=utf-8\n` +
        `Content-Transfer-Encoding: 8bit\n` +
        (opts.extraHeaders ?? '') +
        `\n` +
        body,
    ),
    'utf8',
  );
}

/** Split a buffer into small uneven chunks, the way a socket delivers it. */
export function chunked(b: Buffer, size = 37): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) out.push(b.subarray(i, i + size));
  return out;
}

export function passes(results: DKIMResult[]): string[] {
  // mailauth 4.13 reports the a= value as `algo` (its typings say `algorithm`).
  return results
    .filter((r) => r.status.result === 'pass')
    .map((r) => `${r.signingDomain}/${r.selector}/${(r as DKIMResult & { algo?: string }).algo ?? r.algorithm ?? ''}`);
}
