/**
 * Attacker profiles: how compromised accounts and infected hosts are used,
 * written from PUBLIC descriptions of abuse (cited per profile, from
 * general knowledge of those publications, not from the detector). Each
 * `build` makes one instance: the victim (or victims, or host) with its
 * ordinary life, then the abuse (mail marked `attack`).
 *
 * Nothing here knows a threshold: rates, batch sizes, bounce and complaint
 * rates are what the sources describe or imply.
 */
import { batches, inHours, ordinaryLife, shuffled } from './ordinary';
import { DAY, HOUR, MIN, type SimActor, type World } from './world';

export interface Profile {
  readonly name: string;
  readonly side: 'attacker' | 'legitimate';
  /** Where the shape comes from (public descriptions; cited from general knowledge). */
  readonly source: string;
  build(w: World): void;
}

const FREEMAIL = ['gmail.com', 'outlook.com', 'yahoo.com', 'proton.me'];

/** A person's mail day to day (residential). */
function person(w: World, profile: string, instance: number, bookSize: number): SimActor {
  const a = w.account({ profile, instance, contacts: w.addrs(bookSize) });
  ordinaryLife(w, a, { perDay: 0.5 + w.r() * 4, pNew: 0.06 });
  return a;
}

/** A lure: a landing page on a throw-away or compromised site, its path rotating. */
const lureSite = (w: World) => `${w.token(7)}-${w.pick(['docs', 'share', 'secure', 'portal', 'login'])}.example`;
const lureLink = (w: World, site: string) => `https://${site}/${w.token(6)}/${w.token(10)}`;

export const ADDRESS_BOOK_PHISHING: Profile = {
  name: 'address-book-phishing',
  side: 'attacker',
  source:
    "FBI IC3 Business Email Compromise PSAs (2019-2024) and Microsoft Threat Intelligence's AiTM/BEC write-ups (2022-2023): after taking over a mailbox, the attacker mails the victim's own contacts a credential-phishing or payment lure, from the victim's session (same network, working hours, residential proxies near the victim), rotating subjects and bodies to dodge filters, with Reply-To pointing to an attacker mailbox; a few old contacts bounce.",
  build(w) {
    const inst = w.newInstance();
    const a = person(w, this.name, inst, w.int(40, 300));
    const start = inHours(w.measuredTime(), 9, 17);
    const sites = [lureSite(w), lureSite(w)];
    const replyTo = `${a.displayName.toLowerCase().replace(/\s+/g, '.')}.${w.token(4)}@${w.pick(FREEMAIL)}`;
    const lures = ['Shared document', 'Invoice', 'Please review', 'Urgent request', 'Payment details updated', 'Voicemail', 'Signed contract'];
    let t = start;
    for (const rcpts of batches(shuffled(w, a.contacts.slice(0, a.known)), () => w.int(1, 3))) {
      t = inHours(t + w.int(1, 4) * MIN + Math.floor(w.r() * MIN), 9, 18);
      w.send(a, {
        t,
        rcpts,
        invalid: w.some(rcpts.length, 0.02),
        complaints: w.some(rcpts.length, 0.005),
        content: { subject: `${w.pick(lures)} ${w.token(5)}`, body: `${w.prose(w.int(12, 40))} ${lureLink(w, w.pick(sites))} ${w.prose(w.int(5, 20))}`, replyTo },
        episode: true,
      });
    }
  },
};

export const CREDENTIAL_STUFFING: Profile = {
  name: 'credential-stuffing',
  side: 'attacker',
  source:
    'M3AAWG "Best Practices for Compromised User Accounts" and Spamhaus reports on authenticated-SMTP abuse: leaked passwords are tried against submission, and a working account is then used from many new addresses in unrelated networks (bots, VPS, proxies), a few messages per login, to strangers from a spam list; a few percent of the list bounces.',
  build(w) {
    const inst = w.newInstance();
    const a = person(w, this.name, inst, w.int(10, 80));
    let t = w.measuredTime();
    const site = lureSite(w);
    const n = w.int(300, 900);
    let ip = w.foreignIp();
    for (let i = 0; i < n; i++) {
      if (i % w.int(2, 6) === 0) ip = w.foreignIp();
      t += w.int(10, 60) * 1000;
      const rcpts = w.addrs(w.int(1, 5));
      w.send(a, { t, ip, rcpts, invalid: w.some(rcpts.length, 0.04), complaints: w.some(rcpts.length, 0.003), content: { subject: w.prose(4), body: `${w.prose(w.int(20, 50))} ${lureLink(w, site)}` }, episode: true });
    }
  },
};

export const LOW_AND_SLOW: Profile = {
  name: 'low-and-slow',
  side: 'attacker',
  source:
    'Spamhaus and M3AAWG descriptions of "low and slow" abuse of compromised accounts: a spam run paced to stay under per-account rate limits (a message every few minutes, one recipient), from the victim\'s own line, in daytime, to a freshly bought and verified ("clean", under 1% bounces) list; the offer text is personalised, the landing site is the same.',
  build(w) {
    const inst = w.newInstance();
    const a = person(w, this.name, inst, w.int(10, 80));
    let t = inHours(w.measuredTime(), 8, 22);
    const site = lureSite(w);
    const n = w.int(300, 700);
    for (let i = 0; i < n; i++) {
      t = inHours(t + w.int(5, 9) * MIN, 8, 22);
      const rcpts = [w.addr()];
      w.send(a, { t, rcpts, invalid: w.some(1, 0.008), complaints: w.some(1, 0.002), content: { subject: `Hi ${w.token(5)}, ${w.pick(['quick question', 'an offer for you', 'your order', 'following up'])}`, body: `Dear ${w.token(6)}, ${w.prose(25)} https://${site}/offer?id=${w.token(8)}` }, episode: true });
    }
  },
};

export const SNOWSHOE: Profile = {
  name: 'snowshoe',
  side: 'attacker',
  source:
    'Spamhaus\'s definition of snowshoe spam (volume spread thinly over many sources so that no one source stands out) applied to compromised accounts, as M3AAWG describes account-based spam: one campaign (one landing site, rotating text) through tens of compromised accounts, each sending a modest daily amount to strangers, from the accounts\' usual lines.',
  build(w) {
    const inst = w.newInstance();
    const nAccounts = w.int(20, 40);
    const site = lureSite(w);
    const start = w.measuredTime(3 * DAY);
    for (let k = 0; k < nAccounts; k++) {
      const a = person(w, this.name, inst, w.int(10, 80));
      for (let d = 0; d < 2; d++) {
        const perDay = w.int(8, 20);
        for (let i = 0; i < perDay; i++) {
          const t = inHours(start + d * DAY + Math.floor(w.r() * 14 * HOUR), 8, 22);
          const rcpts = w.addrs(w.int(1, 2));
          w.send(a, { t, rcpts, invalid: w.some(rcpts.length, 0.01), complaints: w.some(rcpts.length, 0.003), content: { subject: w.prose(3), body: `${w.prose(w.int(15, 30))} https://${site}/${w.token(6)}` }, episode: true });
        }
      }
    }
  },
};

export const SEXTORTION_BLAST: Profile = {
  name: 'sextortion-blast',
  side: 'attacker',
  source:
    'Cisco Talos "Sextortion scams" (2018-2019), FBI IC3 sextortion PSAs and Microsoft reports on bursts from compromised accounts: hundreds of messages in minutes, one recipient each, addresses from old breach dumps (many dead: several percent bounce), text and bitcoin address varied per message, sent through stolen accounts from botnet addresses.',
  build(w) {
    const inst = w.newInstance();
    const a = person(w, this.name, inst, w.int(10, 80));
    let t = w.measuredTime();
    const n = w.int(300, 1200);
    let ip = w.foreignIp();
    for (let i = 0; i < n; i++) {
      if (i % 50 === 0) ip = w.foreignIp();
      t += w.int(2, 6) * 1000;
      w.send(a, { t, ip, rcpts: [w.addr()], invalid: w.some(1, 0.08), complaints: w.some(1, 0.005), content: { subject: `${w.pick(['Your account was hacked', 'I recorded you', 'Payment required'])} ${w.token(4)}`, body: `${w.prose(60)} bitcoin ${w.token(30)}` }, episode: true });
    }
  },
};

export const INFECTED_HOST: Profile = {
  name: 'infected-host',
  side: 'attacker',
  source:
    "Spamhaus CBL/XBL descriptions of spambot-infected hosts and M3AAWG's port 25 management BCP: malware on a subscriber's machine opens many short SMTP sessions (one message each) to strangers at a steady rate, rotating text, many dead addresses; the address is listed on the XBL within the hour.",
  build(w) {
    const inst = w.newInstance();
    const h = w.host({ profile: this.name, instance: inst, contacts: w.addrs(w.int(5, 25)) });
    ordinaryLife(w, h, { perDay: 0.5 + w.r() * 3, pNew: 0.05, mobile: 0 });
    let t = w.measuredTime();
    w.listings.push({ t: t + w.int(30, 90) * MIN, ip: h.homeIp });
    const n = w.int(500, 2000);
    for (let i = 0; i < n; i++) {
      t += w.int(3, 10) * 1000;
      const rcpts = w.addrs(w.int(1, 2));
      w.send(h, { t, rcpts, invalid: w.some(rcpts.length, 0.15), complaints: w.some(rcpts.length, 0.003), content: { subject: w.prose(3), body: `${w.prose(30)} https://${w.token(8)}.example/` }, episode: true });
    }
  },
};

export const COMPROMISED_BUSINESS: Profile = {
  name: 'compromised-business',
  side: 'attacker',
  source:
    'FBI IC3 BEC reports ("vendor email compromise") and Microsoft Threat Intelligence on AiTM-phished business mailboxes: the attacker uses the business account (its looser plan) from its own infrastructure to send invoice/payment lures in batches of several recipients to a harvested list, text varied per batch, a few percent bouncing.',
  build(w) {
    const inst = w.newInstance();
    const a = w.account({ profile: this.name, instance: inst, plan: 'business', contacts: w.addrs(w.int(100, 600)) });
    ordinaryLife(w, a, { perDay: 10 + w.r() * 30, pNew: 0.3, business: true });
    let t = w.measuredTime();
    const site = lureSite(w);
    const ip = w.foreignIp();
    const n = w.int(200, 600);
    for (let i = 0; i < n; i++) {
      t += w.int(15, 40) * 1000;
      const rcpts = w.addrs(w.int(3, 10));
      w.send(a, { t, ip, rcpts, invalid: w.some(rcpts.length, 0.04), complaints: w.some(rcpts.length, 0.003), content: { subject: `Invoice ${w.token(6)} overdue`, body: `${w.prose(w.int(20, 40))} ${lureLink(w, site)}` }, episode: true });
    }
  },
};

export const ATTACKERS: readonly Profile[] = [ADDRESS_BOOK_PHISHING, CREDENTIAL_STUFFING, LOW_AND_SLOW, SNOWSHOE, SEXTORTION_BLAST, INFECTED_HOST, COMPROMISED_BUSINESS];
