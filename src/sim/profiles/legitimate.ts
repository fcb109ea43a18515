/**
 * Legitimate senders whose mail LOOKS like abuse (bursts, strangers, one
 * body to many, new networks): the false positives a containment system
 * meets. Shapes from general knowledge of ordinary mail use and from the
 * M3AAWG sender and mailing-list best practices (cited per profile); each
 * `build` makes one sender (or one family) with its ordinary life.
 */
import type { Profile } from './attackers';
import { batches, inHours, ordinaryLife, shuffled } from './ordinary';
import { DAY, HOUR, MIN, type World } from './world';

export const NEWSLETTER: Profile = {
  name: 'newsletter',
  side: 'legitimate',
  source:
    'M3AAWG Sender Best Common Practices (opt-in lists, regular cadence, list hygiene keeping bounces around 1%): a small organisation mails its opted-in list weekly at the same hour, one body, links to its own site, in envelopes of 50 recipients; the list grows by sign-ups.',
  build(w) {
    const inst = w.newInstance();
    const list = w.addrs(w.int(500, 3000));
    const a = w.account({ profile: this.name, instance: inst, plan: 'business', contacts: list });
    ordinaryLife(w, a, { perDay: 1 + w.r() * 3, pNew: 0.05, business: true });
    const site = `news${a.id}.example`;
    const weekday = w.int(0, 6);
    const hour = w.int(8, 17);
    for (let day = w.span.start + weekday * DAY; day < w.span.end; day += 7 * DAY) {
      for (let q = Math.floor(list.length * 0.02 * w.r()); q > 0; q--) list.push(w.addr());
      const body = `${w.prose(80)} https://${site}/issue/${w.token(6)}`;
      batches(list, () => 50).forEach((rcpts, b) =>
        w.send(a, { t: day + hour * HOUR + b * 10_000, rcpts, invalid: w.some(rcpts.length, 0.008), complaints: w.some(rcpts.length, 0.0005), content: { subject: `Newsletter ${w.token(4)}`, body }, episode: true }),
      );
    }
  },
};

export const EVENT_INVITATION: Profile = {
  name: 'event-invitation',
  side: 'legitimate',
  source:
    'General knowledge: an organiser (a parent, a club volunteer) invites 80 people from a sign-up sheet, none written to before, either one by one (mail merge) or in Bcc batches, within an hour, one text with a link to the event page; a few hand-typed addresses bounce.',
  build(w) {
    const inst = w.newInstance();
    const a = w.account({ profile: this.name, instance: inst, contacts: w.addrs(w.int(10, 80)) });
    ordinaryLife(w, a, { perDay: 0.5 + w.r() * 4, pNew: 0.06 });
    const guests = w.addrs(80);
    a.contacts.push(...guests);
    const page = `https://${w.pick(['www.eventbrite.com', 'forms.gle', 'www.meetup.com', 'doodle.com'])}/e/${w.token(10)}`;
    const body = `${w.prose(50)} ${page}`;
    const oneByOne = w.chance(0.5);
    let t = inHours(w.measuredTime(), 9, 21);
    for (const rcpts of batches(guests, () => (oneByOne ? 1 : 20))) {
      t += oneByOne ? w.int(15, 60) * 1000 : w.int(1, 3) * MIN;
      w.send(a, { t, rcpts, invalid: w.some(rcpts.length, 0.03), content: { subject: 'You are invited', body }, episode: true });
    }
  },
};

export const HOLIDAY_GREETINGS: Profile = {
  name: 'holiday-greetings',
  side: 'legitimate',
  source:
    'General knowledge (and the seasonal peaks mailbox providers describe): once a year a person sends the same greeting to their whole address book in one sitting, a few recipients per message, maybe a link to a photo album; old addresses bounce.',
  build(w) {
    const inst = w.newInstance();
    const a = w.account({ profile: this.name, instance: inst, contacts: w.addrs(w.int(40, 300)) });
    ordinaryLife(w, a, { perDay: 0.5 + w.r() * 4, pNew: 0.06 });
    const album = w.chance(0.5) ? ` https://photos.google.com/share/${w.token(12)}` : '';
    const body = `${w.prose(40)}${album}`;
    let t = inHours(w.measuredTime(), 10, 20);
    for (const rcpts of batches(shuffled(w, a.contacts.slice(0, a.known)), () => w.int(1, 10))) {
      t += w.int(30, 150) * 1000;
      w.send(a, { t, rcpts, invalid: w.some(rcpts.length, 0.03), content: { subject: 'Happy holidays!', body }, episode: true });
    }
  },
};

export const CLUB_LIST: Profile = {
  name: 'club-list-forward',
  side: 'legitimate',
  source:
    'M3AAWG guidance on mailing lists and forwarding (RFC 6377 context): a volunteer forwards the club\'s announcements from their own account to the member roster every few days, Bcc batches, the same text to everyone, Reply-To the club\'s address, links to the club\'s site.',
  build(w) {
    const inst = w.newInstance();
    const roster = w.addrs(w.int(60, 250));
    const a = w.account({ profile: this.name, instance: inst, contacts: [...w.addrs(w.int(10, 60)), ...roster] });
    ordinaryLife(w, a, { perDay: 0.5 + w.r() * 3, pNew: 0.06 });
    const club = `club${a.id}.example`;
    for (let day = w.span.start + w.int(0, 3) * DAY; day < w.span.end; day += w.int(2, 4) * DAY) {
      const body = `${w.prose(60)} https://www.${club}/news/${w.token(6)}`;
      let t = day + w.int(18, 21) * HOUR;
      for (const rcpts of batches(roster, () => w.int(25, 50))) {
        t += w.int(20, 90) * 1000;
        w.send(a, { t, rcpts, invalid: w.some(rcpts.length, 0.01), content: { subject: `Fwd: ${w.prose(3)}`, body, replyTo: `members@${club}`, fromName: `${a.displayName} (Club)` }, episode: true });
      }
    }
  },
};

export const SMALL_BUSINESS_ONBOARDING: Profile = {
  name: 'small-business-onboarding',
  side: 'legitimate',
  source:
    'General knowledge of a new small business (and M3AAWG Sender BCP on transactional mail): a freshly opened business account with little history sends each new customer a welcome/confirmation (one template, the customer\'s name, a link to its own site), tens of new customers a working day, plus ordinary replies.',
  build(w) {
    const inst = w.newInstance();
    const a = w.account({ profile: this.name, instance: inst, plan: 'business', contacts: w.addrs(w.int(3, 10)) });
    const opened = w.span.measureStart - w.int(1, 4) * DAY;
    ordinaryLife(w, a, { perDay: 5 + w.r() * 10, pNew: 0.2, business: true, from: opened, hours: [8, 19] });
    const site = `shop${a.id}.example`;
    for (let day = opened - (opened % DAY); day < w.span.end; day += DAY) {
      const n = w.int(10, 40);
      for (let i = 0; i < n; i++) {
        const t = day + 8 * HOUR + Math.floor(w.r() * 10 * HOUR);
        if (t < opened) continue;
        const c = w.addr();
        a.contacts.push(c);
        w.send(a, { t, rcpts: [c], invalid: w.some(1, 0.02), content: { subject: 'Welcome, your order is confirmed', body: `Dear ${w.token(6)}, thank you for your order at https://${site}/orders ${'welcome '.repeat(20)}` }, episode: true });
      }
    }
  },
};

export const TRAVELLER: Profile = {
  name: 'traveller',
  side: 'legitimate',
  source:
    'M3AAWG "Best Practices for Compromised User Accounts" (new-location logins are the classic false positive): a person on a week-long trip sends their ordinary mail from a different hotel, airport or roaming network every day, sometimes two in a day.',
  build(w) {
    const inst = w.newInstance();
    const a = w.account({ profile: this.name, instance: inst, contacts: w.addrs(w.int(10, 80)) });
    const leave = w.measuredTime(7 * DAY);
    const back = leave + 7 * DAY;
    ordinaryLife(w, a, { perDay: 0.5 + w.r() * 4, pNew: 0.06, until: leave });
    ordinaryLife(w, a, { perDay: 0.5 + w.r() * 4, pNew: 0.06, from: back });
    const nets = Array.from({ length: 10 }, () => w.foreignIp());
    ordinaryLife(w, a, { perDay: 1 + w.r() * 5, pNew: 0.08, from: leave, until: back, episode: true, ipOn: (day) => (w.chance(0.3) ? w.pick(nets) : nets[Math.floor((day - leave) / DAY) % nets.length]) });
  },
};

export const FAMILY_PHOTO: Profile = {
  name: 'family-photo',
  side: 'legitimate',
  source:
    'General knowledge: a family event photo goes out the same evening from several family members\' accounts, each to everyone in their own address book, one by one, the same attachment (the same body) every time.',
  build(w) {
    const inst = w.newInstance();
    const members = Array.from({ length: w.int(3, 6) }, () => {
      const a = w.account({ profile: this.name, instance: inst, contacts: w.addrs(w.int(10, 40)) });
      ordinaryLife(w, a, { perDay: 0.5 + w.r() * 4, pNew: 0.06 });
      return a;
    });
    const photo = `photo ${w.token(40)} ${w.prose(10)}`;
    const evening = inHours(w.measuredTime(), 18, 22);
    for (const a of members) {
      let t = evening + w.int(0, 180) * MIN;
      for (const c of a.contacts.slice(0, a.known)) {
        t += w.int(20, 90) * 1000;
        w.send(a, { t, rcpts: [c], content: { subject: 'Photo from today', body: photo }, episode: true });
      }
    }
  },
};

export const LEGITIMATE: readonly Profile[] = [NEWSLETTER, EVENT_INVITATION, HOLIDAY_GREETINGS, CLUB_LIST, SMALL_BUSINESS_ONBOARDING, TRAVELLER, FAMILY_PHOTO];
