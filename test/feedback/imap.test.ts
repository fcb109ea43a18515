/**
 * Scenario: complaint reports from a mailbox (feedback.yaml `imap`), a real
 * Dovecot IMAP server on loopback. A Yahoo-style provider's ARF report
 * about Alice's message (the original carries the sealed sender token the
 * gateway adds), DKIM-signed with the key on the test DNS server, is put
 * into the feedback mailbox over IMAP; so is the attacker's forgery, the
 * same report about Dave signed with another domain's key. The gateway's
 * poll reads both: Alice's complaint counts (held: a complaint weighs 2),
 * the forgery counts for nothing and is kept; both leave the mailbox.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ImapFlow } from 'imapflow';
import { parseFeedback } from '../../src/feedback/config';
import { SenderTokens } from '../../src/feedback/token';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startDovecot, type TestDovecot } from '../helpers/dovecot';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { arfReport, publishKey, signed, type SigningKey } from './arf-samples';

const ACCOUNTS = ['alice', 'dave'].map((n, i) => ({ name: `${n}@isp.test`, password: `${n}-secret-${i}`, plan: 'residential' }));
const MAILBOX = { user: 'fbl', password: 'fbl-mailbox-pw-1' };

const FEEDBACK = (dns: string, imapPort: number, passwordFile: string) => `
listeners: [mx]
dns: { servers: ["${dns}"], timeout: 2s }
providers:
  - name: yahoo
    domains: [yahoo.test]
keep: { dir: kept, max: 10 }
senderToken: { keyFile: sender-token.key }
imap: { host: 127.0.0.1, port: ${imapPort}, tls: none, user: ${MAILBOX.user}, passwordFile: ${passwordFile}, interval: 200ms }
`;

describe('complaint feedback loops (ARF from an IMAP mailbox)', () => {
  let dns: TestDns;
  let dovecot: TestDovecot;
  let gw: TestGateway;
  let yahoo: SigningKey;
  let evil: SigningKey;
  let secrets: string;

  const imap = () => new ImapFlow({ host: '127.0.0.1', port: dovecot.imapPort, secure: false, doSTARTTLS: false, auth: { user: MAILBOX.user, pass: MAILBOX.password }, logger: false });
  const status = async (account: string) => {
    const r = await fetch(`http://127.0.0.1:${gw.app!.admin.port}/api/containment?account=${encodeURIComponent(account)}`, { headers: { authorization: 'Bearer test-admin-token' } });
    return ((await r.json()) as { response: string }).response;
  };
  const reports = async (result: string) => Number(new RegExp(`^smarthost_feedback_reports_total\\{provider="yahoo",result="${result}"\\} (\\S+)$`, 'm').exec((await gw.app!.metrics.render()).body)?.[1] ?? 0);
  /** The original as the recipient's provider received it: the gateway's token for `account` in it. */
  const original = (tokens: SenderTokens, account: string) =>
    `X-Smarthost-Sender: ${tokens.seal({ kind: 'account', id: account }, 'Q1234567')}\r\nFrom: <${account}>\r\nTo: <user@recipient.test>\r\nSubject: hello\r\n\r\nLunch tomorrow?\r\n`;

  before(async () => {
    dns = await startDnsServer();
    yahoo = publishKey(dns, 'yahoo.test');
    evil = publishKey(dns, 'evil.test');
    dns.set('_dmarc.yahoo.test', 'TXT', ['v=DMARC1; p=reject']);
    dovecot = await startDovecot({ [MAILBOX.user]: MAILBOX.password }, { imap: true });
    // The mailbox password lives in a file of its own (never in feedback.yaml).
    secrets = await mkdtemp(path.join(os.tmpdir(), 'smarthost-imap-pw-'));
    const passwordFile = path.join(secrets, 'imap-password');
    await writeFile(passwordFile, `${MAILBOX.password}\n`, { mode: 0o600 });
    gw = await startGateway({ accounts: ACCOUNTS, policyFiles: { 'feedback.yaml': FEEDBACK(dns.server, dovecot.imapPort, passwordFile), 'containment.yaml': 'enabled: true\n' } });
  });

  after(async () => {
    await gw?.stop();
    await dovecot?.stop();
    await dns?.close();
    if (secrets) await rm(secrets, { recursive: true, force: true });
  });

  it('an authentic report counts against the account; a forged one counts nothing and is kept; both leave the mailbox', async () => {
    const tokens = SenderTokens.fromFile(path.join(gw.dir, 'sender-token.key'), 30 * 86_400_000);
    const authentic = await signed(arfReport({ from: 'fbl@yahoo.test', to: 'fbl@gw.isp.test', original: original(tokens, 'alice@isp.test') }), yahoo);
    const forged = await signed(arfReport({ from: 'fbl@yahoo.test', to: 'fbl@gw.isp.test', original: original(tokens, 'dave@isp.test') }), evil);
    const c = imap();
    await c.connect();
    await c.append('INBOX', Buffer.from(`Return-Path: <fbl-bounces@yahoo.test>\r\n${authentic}`));
    await c.append('INBOX', Buffer.from(`Return-Path: <fbl-bounces@yahoo.test>\r\n${forged}`));
    await c.logout();

    const end = Date.now() + 20_000;
    while ((await reports('counted')) + (await reports('unauthenticated')) < 2) {
      assert.ok(Date.now() < end, `reports consumed: counted ${await reports('counted')}, unauthenticated ${await reports('unauthenticated')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(await reports('counted'), 1);
    assert.equal(await reports('unauthenticated'), 1);
    assert.equal(await status('alice@isp.test'), 'hold');
    assert.equal(await status('dave@isp.test'), 'none');
    assert.equal(readdirSync(path.join(gw.dir, 'kept')).length, 1);

    const after = imap();
    await after.connect();
    const box = await after.status('INBOX', { messages: true });
    await after.logout();
    assert.equal(box && box.messages, 0, 'both reports were taken out of the mailbox');
  });
});

describe('feedback.yaml imap: bad values are config errors naming the key', () => {
  const parse = (imap: unknown) => () => parseFeedback({ providers: [{ name: 'yahoo', domains: ['yahoo.test'] }], imap }, 'feedback.yaml', { hostname: 'gw.test', baseDir: '/etc/smarthost', listeners: [] });
  it('a password in clear off loopback, an unknown tls, no user', () => {
    assert.throws(parse({ host: 'imap.isp.example', tls: 'none', user: 'fbl', passwordFile: 'pw' }), /feedback\.yaml.*imap\.tls.*only for a mailbox on loopback/);
    assert.throws(parse({ host: '127.0.0.1', tls: 'ssl', user: 'fbl', passwordFile: 'pw' }), /imap\.tls.*expected implicit, starttls or none/);
    assert.throws(parse({ host: '127.0.0.1', passwordFile: 'pw' }), /imap\.user/);
    assert.equal(parse({ host: 'imap.isp.example', user: 'fbl', passwordFile: 'pw' })().imap?.port, 993);
  });
});
