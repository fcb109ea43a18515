/**
 * The signals an address-book attacker cannot avoid (src/containment/
 * signals.ts): identity changes (Reply-To, display name), links to domains
 * new to the account and fresh in the fleet, one campaign through many
 * accounts (body or link, fleet-wide in the state store), the share of the
 * address book written in a day, volume against the account's own busiest
 * day, strangers hour after hour, AUTH from a network never used (not in an
 * account's first week); the message traits they read (MIME boundaries do
 * not split a campaign); and a message containment throttles is not counted
 * against messagesPerHour.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { parseContainment } from '../../src/containment/config';
import { ContainedHooks, Containment } from '../../src/containment/containment';
import { Signals } from '../../src/containment/signals';
import type { ClientInfo } from '../../src/envelope';
import { linkDomains, messageTraits, traitsOfMessage } from '../../src/message-traits';
import { MemoryStore } from '../../src/state/memory';
import { account, engineFor, removePolicyDirs, T0 } from '../policy/fixtures';

after(removePolicyDirs);

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const a = (id: string) => ({ kind: 'a' as const, id });
const traits = (o: { body?: string; replyTo?: string; name?: string }) =>
  messageTraits(
    [{ name: 'from', value: `"${o.name ?? 'Bob'}" <bob@isp.example>` }, ...(o.replyTo ? [{ name: 'reply-to', value: o.replyTo }] : [])],
    o.body ?? 'hello there',
  );
const LONG = 'please find the shared document about the budget and the meeting notes for next week, thanks a lot and see you soon';

describe('message traits', () => {
  it('link domains are registrable domains, deduplicated; quoted-printable soft breaks are undone', () => {
    assert.deepEqual(linkDomains('see https://www.bbc.co.uk/news and http://x.lure-site.example/a?b=1 and HTTPS://WWW.BBC.CO.UK/sport'), ['bbc.co.uk', 'lure-site.example']);
    assert.deepEqual(linkDomains('click https://secure-lo=\r\ngin.example/x'), ['secure-login.example']);
  });

  it('the same attachment under different MIME boundaries has one fingerprint; Reply-To and display name are read', () => {
    const mime = (b: string) => [Buffer.from(`From: "Ann Smith" <ann@isp.example>\r\nReply-To: Ann <ann.smith.work@gmail.com>\r\nContent-Type: multipart/mixed; boundary="${b}"\r\n\r\n`), Buffer.from(`--${b}\r\nContent-Type: image/jpeg\r\n\r\n/9j/4AAQSkZJRgABAQEASABIAAD${'QUFB'.repeat(40)}\r\n--${b}--\r\n`)];
    const headers = (b: string) => [{ name: 'from', value: '"Ann Smith" <ann@isp.example>' }, { name: 'reply-to', value: 'Ann <ann.smith.work@gmail.com>' }, { name: 'content-type', value: `multipart/mixed; boundary="${b}"` }];
    const t1 = traitsOfMessage(headers('----=_Part_abcDEFghi_77'), mime('----=_Part_abcDEFghi_77'));
    const t2 = traitsOfMessage(headers('--_NmP-xyzQRSuvw-Part_1'), mime('--_NmP-xyzQRSuvw-Part_1'));
    assert.equal(t1.bodyFingerprint, t2.bodyFingerprint);
    assert.equal(t1.replyTo, 'ann.smith.work@gmail.com');
    assert.equal(t1.fromName, 'ann smith');
    assert.ok(t1.bodyChars > 100);
  });
});

describe('signals the address-book attack cannot avoid', () => {
  it('identity: a Reply-To never used (not the own address), a display name other than the usual one', async () => {
    const sig = new Signals(new MemoryStore());
    const s = a('bob@isp.example');
    await sig.recordMessage(s, ['x@a.example'], traits({ replyTo: 'bob@isp.example' }), T0, 'bob@isp.example');
    await sig.recordMessage(s, ['x@a.example'], traits({}), T0 + 1);
    assert.equal((await sig.read(s, undefined, T0 + 2)).identityChangesPerDay, 0);
    await sig.recordMessage(s, ['x@a.example'], traits({ replyTo: 'bob.invoices@gmail.com' }), T0 + 3, 'bob@isp.example');
    await sig.recordMessage(s, ['x@a.example'], traits({ replyTo: 'bob.invoices@gmail.com' }), T0 + 4, 'bob@isp.example');
    assert.equal((await sig.read(s, undefined, T0 + 5)).identityChangesPerDay, 1);
    await sig.recordMessage(s, ['x@a.example'], traits({ name: 'Accounts Payable' }), T0 + 6);
    assert.equal((await sig.read(s, undefined, T0 + 7)).identityChangesPerDay, 2);
  });

  it('links: a domain new to the account and fresh in the fleet, reached through ≥ 2 URLs in a day, counts for a week; an established one never', async () => {
    const store = new MemoryStore();
    const sig = new Signals(store);
    // youtube.com: 25 accounts linked to it over the past two weeks.
    for (let i = 0; i < 25; i++) await sig.recordMessage(a(`p${i}@isp.example`), ['f@x.example'], traits({ body: `look https://www.youtube.com/watch?v=${i}` }), T0 - 13 * DAY + i * 12 * HOUR);
    const s = a('bob@isp.example');
    await sig.recordMessage(s, ['x@a.example', 'y@b.example'], traits({ body: 'look https://youtube.com/watch?v=1' }), T0);
    assert.equal((await sig.read(s, undefined, T0)).newLinkRecipientsPerDay, 0);
    // One page is not yet a landing site (an invitation's event page); a second URL there is.
    await sig.recordMessage(s, ['x@a.example', 'y@b.example'], traits({ body: 'sign in https://secure-docs.example/a1' }), T0 + HOUR);
    assert.equal((await sig.read(s, undefined, T0 + HOUR)).newLinkRecipientsPerDay, 0);
    await sig.recordMessage(s, ['w@a.example', 'v@b.example'], traits({ body: 'sign in https://secure-docs.example/a2' }), T0 + HOUR + 1);
    assert.equal((await sig.read(s, undefined, T0 + HOUR + 1)).newLinkRecipientsPerDay, 2);
    // Three days on, the same landing site is still young for this account.
    await sig.recordMessage(s, ['z@c.example'], traits({ body: 'sign in https://secure-docs.example/b2' }), T0 + 3 * DAY);
    await sig.recordMessage(s, ['z@c.example'], traits({ body: 'sign in https://secure-docs.example/b3' }), T0 + 3 * DAY + 1);
    assert.equal((await sig.read(s, undefined, T0 + 3 * DAY + 1)).newLinkRecipientsPerDay, 1);
    await sig.recordMessage(s, ['z@c.example'], traits({ body: 'sign in https://secure-docs.example/c3' }), T0 + 9 * DAY);
    await sig.recordMessage(s, ['z@c.example'], traits({ body: 'sign in https://secure-docs.example/c4' }), T0 + 9 * DAY + 1);
    assert.equal((await sig.read(s, undefined, T0 + 9 * DAY + 1)).newLinkRecipientsPerDay, 0);
    // Rotating whole domains (one URL each) is rotation too.
    const h = a('host@isp.example');
    await sig.recordMessage(h, ['p@a.example'], traits({ body: 'https://qwe123.example/' }), T0);
    await sig.recordMessage(h, ['q@a.example'], traits({ body: 'https://rty456.example/' }), T0 + 1);
    assert.equal((await sig.read(h, undefined, T0 + 1)).newLinkRecipientsPerDay, 1);
  });

  it('links: one event page sent to 80 strangers is not a landing site', async () => {
    const sig = new Signals(new MemoryStore());
    const s = a('organiser@isp.example');
    for (let b = 0; b < 4; b++) {
      const guests = Array.from({ length: 20 }, (_, i) => `guest${b * 20 + i}@mail${i}.example`);
      await sig.recordMessage(s, guests, traits({ body: 'Join us on Saturday! Sign up at https://forms.gle/AbCdEf12345.' }), T0 + b * 2 * 60_000);
    }
    const v = await sig.read(s, undefined, T0 + 10 * 60_000);
    assert.deepEqual([v.newRecipientsPerHour, v.newLinkRecipientsPerDay], [80, 0]);
  });

  it('campaign: the same fresh link or long body from many accounts in a day, counted fleet-wide; short bodies are not a campaign', async () => {
    const sig = new Signals(new MemoryStore());
    let link = 0;
    let body = 0;
    let short = 0;
    for (let i = 0; i < 5; i++) {
      link = await sig.recordMessage(a(`v${i}@isp.example`), [`r${i}@x.example`], traits({ body: `offer ${i} for you ${'abc'.repeat(i)} https://cheap-pills.example/${i}` }), T0 + i * HOUR);
      body = await sig.recordMessage(a(`w${i}@isp.example`), [`r${i}@x.example`], traits({ body: LONG }), T0 + i * HOUR);
      short = await sig.recordMessage(a(`s${i}@isp.example`), [`r${i}@x.example`], traits({ body: 'thanks!' }), T0 + i * HOUR);
    }
    assert.deepEqual([link, body, short], [5, 5, 0]);
    // A day later one sender is no campaign: five subjects in 14 days, most of them not today, is an established site.
    assert.equal(await sig.recordMessage(a('v0@isp.example'), ['q@x.example'], traits({ body: 'https://cheap-pills.example/z' }), T0 + 30 * HOUR), 0);
    // …while a site only three subjects used is still fresh for a fourth sender a day later.
    for (let i = 0; i < 3; i++) await sig.recordMessage(a(`y${i}@isp.example`), ['r@x.example'], traits({ body: 'https://new-offer.example/' }), T0 + i * HOUR);
    assert.equal(await sig.recordMessage(a('y9@isp.example'), ['q@x.example'], traits({ body: 'https://new-offer.example/z' }), T0 + 30 * HOUR), 1);
  });

  it('address book share, volume against the own busiest day, strangers hour after hour', async () => {
    const sig = new Signals(new MemoryStore());
    const s = a('bob@isp.example');
    const book = Array.from({ length: 40 }, (_, i) => `friend${i}@mail.example`);
    await sig.learnRecipients(s, book, T0 - DAY);
    for (let i = 0; i < 12; i++) await sig.recordMessage(s, [book[i]!], traits({}), T0 + i * 60_000);
    let v = await sig.read(s, undefined, T0 + HOUR);
    assert.deepEqual([v.addressBookDay, v.addressBookSize, v.rcpt1d, v.strangerHours], [12, 40, 12, 0]);
    // Two strangers in each of three hours.
    for (let h = 0; h < 3; h++) await sig.recordMessage(s, [`s${h}a@far.example`, `s${h}b@far.example`], traits({}), T0 + (2 + h) * HOUR);
    v = await sig.read(s, undefined, T0 + 5 * HOUR);
    assert.deepEqual([v.addressBookDay, v.strangerHours], [12, 3]);
    await sig.raisePeak(s, 0, T0 + 5 * HOUR, 18);
    assert.equal((await sig.read(s, undefined, T0 + 5 * HOUR)).peakDay, 18);
  });

  it('AUTH from a network never used counts; in the account first week only beyond its first two networks', async () => {
    const sig = new Signals(new MemoryStore());
    const s = a('bob@isp.example');
    await sig.recordAuth(s, '100.64.0.7', T0);
    await sig.recordAuth(s, '203.0.113.9', T0 + DAY);
    assert.equal((await sig.read(s, undefined, T0 + DAY)).authNewNetworksPerDay, 0);
    await sig.recordAuth(s, '100.64.0.7', T0 + 8 * DAY);
    await sig.recordAuth(s, '203.0.113.77', T0 + 8 * DAY);
    assert.equal((await sig.read(s, undefined, T0 + 8 * DAY)).authNewNetworksPerDay, 0);
    await sig.recordAuth(s, '198.51.100.20', T0 + 8 * DAY + 1);
    assert.equal((await sig.read(s, undefined, T0 + 8 * DAY + 1)).authNewNetworksPerDay, 1);
    // Compromised in its first week: the home line and the phone are its habits, a botnet's address is not.
    const young = a('new@isp.example');
    await sig.recordAuth(young, '100.64.1.7', T0);
    await sig.recordAuth(young, '172.16.5.9', T0 + HOUR);
    assert.equal((await sig.read(young, undefined, T0 + HOUR)).authNewNetworksPerDay, 0);
    await sig.recordAuth(young, '45.83.12.200', T0 + 2 * DAY);
    assert.equal((await sig.read(young, undefined, T0 + 2 * DAY, 0, '45.83.12.200')).authNewNetworksPerDay, 1);
    // Told the client: only while it sends from the new network (not the home line the same evening).
    assert.equal((await sig.read(s, undefined, T0 + 8 * DAY + 2, 0, '198.51.100.21')).authNewNetworksPerDay, 1);
    assert.equal((await sig.read(s, undefined, T0 + 8 * DAY + 2, 0, '100.64.0.7')).authNewNetworksPerDay, 0);
  });
});

describe('a message containment throttles is not counted against the quota', () => {
  it('three throttled messages leave messagesPerHour 3 untouched: the fourth plain message is accepted', async () => {
    const bob = account('bob@isp.example');
    const t = await engineFor(
      {
        'quotas.yaml': 'plans: { residential: { messagesPerHour: 3 } }\ndefaultPlan: residential\n',
        'rules.yaml': 'stages:\n  mail:\n    - { id: quota.messages, check: quota, limits: [messagesPerHour] }\n  data:\n    - { id: quota.messages, check: quota, limits: [messagesPerHour] }\n',
      },
      { accounts: [bob] },
    );
    // Only a new Reply-To counts, and one throttles.
    const zero = { volumeFloor: 0, volumeDayFloor: 0, newRecipientsPerHour: 0, newRecipientsPerDay: 0, newDomainsPerHour: 0, refusedPerHour: 0, authNetworksPerHour: 0, sameBodyPerDay: 0, addressBookShare: 0, newLinkRecipientsPerDay: 0, authNewNetworksPerDay: 0, strangerHours: 0, campaignSenders: 0 };
    const cfg = parseContainment({ defaults: { ...zero, identityChangesPerDay: 1, responses: { throttle: 1, hold: 0, suspend: 0 } }, weights: { identityChange: 1 } }, 'containment.yaml');
    const c = new Containment(cfg, { store: t.store, logger: pino({ level: 'silent' }), clock: () => t.clock.now, planOf: () => 'residential' });
    const hooks = new ContainedHooks(() => t.engine, c);
    const client: ClientInfo = { listener: 'submission', role: 'submission', ip: '198.51.100.7', tls: true, user: 'bob@isp.example' };
    const tx = { client, account: bob, mailFrom: 'bob@isp.example' };
    const send = async (replyTo?: string) => {
      const m = await hooks.mail({ ...tx, recipients: [] });
      if (m.action !== 'accept') return m;
      return hooks.data({ ...tx, recipients: ['friend@x.example'], size: 100, headerFrom: ['bob@isp.example'], receivedCount: 0, traits: traits(replyTo ? { replyTo } : {}) });
    };
    for (let i = 0; i < 3; i++) {
      const v = await send(`payments${i}@gmail.com`);
      assert.equal(v.rule, 'containment.throttle', `message ${i}`);
      t.clock.now += 60_000;
      await c.release(a('bob@isp.example'));
    }
    const v = await send();
    assert.equal(v.action, 'accept', `the fourth message: ${v.rule}`);
    // …and the quota still counts what was sent: three accepted, the fourth refused at MAIL.
    for (let i = 0; i < 2; i++) assert.equal((await send()).action, 'accept');
    assert.equal((await send()).rule, 'quota.messages:messagesPerHour');
  });
});
