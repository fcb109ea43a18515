import assert from 'node:assert/strict';
import type { TestGateway } from '../helpers/gateway';
import { authPlain, message, RawSmtp, type SmtpReply } from '../helpers/smtp-client';

/**
 * A containment.yaml with only two signals on (every other threshold 0): a
 * Reply-To the account never used throttles (identityChange, weight 1), and
 * one body or fresh landing site from `campaignSenders` accounts in a day
 * holds (campaign, weight 2). For tests that need one predictable response
 * over real SMTP.
 */
export const twoSignalContainment = (campaignSenders: number): string => `
defaults:
  volumeFloor: 0
  volumeDayFloor: 0
  newRecipientsPerHour: 0
  newRecipientsPerDay: 0
  newDomainsPerHour: 0
  refusedPerHour: 0
  authNetworksPerHour: 0
  sameBodyPerDay: 0
  addressBookShare: 0
  strangerHours: 0
  authNewNetworksPerDay: 0
  newLinkRecipientsPerDay: 0
  identityChangesPerDay: 1
  campaignSenders: ${campaignSenders}
  responses: { throttle: 1, hold: 2, suspend: 0 }
weights: { campaign: 2, identityChange: 1 }
`;

/**
 * One message from an account over implicit TLS (from 127.0.0.<2+i>): every
 * RCPT's reply code, then DATA's reply when any recipient was accepted.
 */
export async function sendAs(gw: TestGateway, acc: { name: string; password: string }, i: number, rcpts: readonly string[], body: string, headers: string[] = []): Promise<{ rcpt: number[]; data?: SmtpReply }> {
  const c = await RawSmtp.connect(gw.port('submissions'), { localAddress: `127.0.0.${2 + i}`, implicitTls: true });
  try {
    await c.reply();
    await c.cmd('EHLO laptop.test');
    assert.equal((await c.cmd(`AUTH PLAIN ${authPlain(acc.name, acc.password)}`)).code, 235);
    assert.equal((await c.cmd(`MAIL FROM:<${acc.name}>`)).code, 250);
    const codes: number[] = [];
    for (const r of rcpts) codes.push((await c.cmd(`RCPT TO:<${r}>`)).code);
    const data = codes.includes(250) ? await c.data(message({ from: acc.name, to: rcpts[0]!, body, headers })) : undefined;
    return { rcpt: codes, ...(data ? { data } : {}) };
  } finally {
    await c.quit().catch(() => undefined);
  }
}
