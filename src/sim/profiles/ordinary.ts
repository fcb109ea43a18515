/**
 * Ordinary mail: what a person, a small business or a home host sends on
 * any day, before and around whatever a profile adds. Every account in the
 * simulation lives this life, so a victim has a history an attacker must
 * blend into, and a legitimate burst stands out from the same history.
 *
 * Shape (general knowledge of consumer and small-business mail; the
 * M3AAWG "Compromised User Account" best practices describe the same
 * baseline: few messages a day, to a stable set of correspondents, from a
 * home line and a phone, in waking hours): a Poisson number of messages a
 * day, mostly one recipient, mostly known correspondents with a few new
 * ones, now and then a link to a big site, a tenth of them from the phone.
 */
import { DAY, HOUR, type SimActor, type World } from './world';

export interface Habits {
  /** Mean messages a day. */
  readonly perDay: number;
  /** Chance that a recipient is someone new (then remembered). */
  readonly pNew: number;
  /** Waking hours: first and last hour of sending. */
  readonly hours?: readonly [number, number];
  /** Share of messages sent from the phone (a mobile network). */
  readonly mobile?: number;
  readonly business?: boolean;
  /** Only in [from, until). */
  readonly from?: number;
  readonly until?: number;
  /** The client address per day (a traveller's hotel), default home/phone. */
  readonly ipOn?: (day: number) => string | undefined;
  /** This life is the profile's episode (a traveller's trip). */
  readonly episode?: boolean;
}

// Big platforms everybody links to (videos, maps, documents, shops, photo albums, event pages).
const COMMON_LINKS = ['https://www.youtube.com/watch?v=', 'https://maps.google.com/?q=', 'https://en.wikipedia.org/wiki/', 'https://docs.google.com/document/d/', 'https://www.amazon.com/dp/', 'https://photos.google.com/share/', 'https://www.eventbrite.com/e/', 'https://doodle.com/poll/', 'https://www.dropbox.com/s/', 'https://www.meetup.com/e/'];

export function ordinaryLife(w: World, a: SimActor, h: Habits): void {
  const [h0, h1] = h.hours ?? [7, 23];
  const phone = `172.${16 + (a.id % 8)}.${(a.id * 7) & 255}.9`;
  const from = h.from ?? w.span.start;
  const until = h.until ?? w.span.end;
  for (let day = w.span.start; day < w.span.end; day += DAY) {
    const n = w.poisson(h.perDay);
    const travelIp = h.ipOn?.(day);
    for (let j = 0; j < n; j++) {
      const t = day + h0 * HOUR + Math.floor(w.r() * (h1 - h0) * HOUR);
      if (t < from || t >= until) continue;
      const x = w.r();
      const nR = h.business ? (x < 0.8 ? 1 : 2) : x < 0.8 ? 1 : x < 0.98 ? w.int(2, 5) : w.int(8, 19);
      const rcpts = new Set<string>();
      for (let q = 0; q < nR; q++) {
        if (w.chance(h.pNew) || a.contacts.length === 0) {
          const nw = w.addr();
          a.contacts.push(nw);
          rcpts.add(nw);
        } else rcpts.add(w.pick(a.contacts));
      }
      const link = w.chance(0.1) ? ` ${w.pick(COMMON_LINKS)}${w.token(10)}` : '';
      const ip = travelIp ?? (a.kind === 'account' && w.chance(h.mobile ?? 0.1) ? phone : a.homeIp);
      w.send(a, { t, ip, rcpts: [...rcpts], invalid: w.chance(0.005) ? 1 : 0, content: { subject: w.prose(3), body: `${w.prose(15 + w.int(0, 60))}${link}` }, episode: h.episode === true });
    }
  }
}

/** A shuffled copy. */
export function shuffled<T>(w: World, xs: readonly T[]): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(w.r() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** `xs` in groups of `size()` (a new size per group). */
export function batches<T>(xs: readonly T[], size: () => number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; ) {
    const n = Math.max(1, size());
    out.push(xs.slice(i, i + n));
    i += n;
  }
  return out;
}

/** A time inside waking hours: moved to the next morning when it falls outside [h0, h1). */
export function inHours(t: number, h0: number, h1: number): number {
  const hour = (t % DAY) / HOUR;
  if (hour >= h0 && hour < h1) return t;
  const day = t - (t % DAY) + (hour >= h1 ? DAY : 0);
  return day + h0 * HOUR + (t % HOUR);
}
