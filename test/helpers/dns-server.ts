/**
 * A real DNS server over UDP on loopback for tests: answers A, AAAA, MX,
 * TXT from a table the test fills, NXDOMAIN for unknown names, and can be
 * told to drop queries (a timeout) or answer SERVFAIL for a name, or to hold
 * a name's answer until another name has been asked (holdUntil): two names
 * held for each other are answered only to a client that asks both before
 * either answer comes, which tells parallel lookups from sequential ones by
 * their results instead of by a clock.
 */
import dgram from 'node:dgram';
import * as packet from 'dns-packet';

export type RecordType = 'A' | 'AAAA' | 'MX' | 'TXT';
export interface MxValue { exchange: string; priority: number }
export type Behaviour = 'answer' | 'drop' | 'servfail';

interface Entry {
  A: string[];
  AAAA: string[];
  MX: MxValue[];
  TXT: string[];
  ttl: number;
  behaviour: Behaviour;
  /** Answer only once this name has been queried too. */
  until?: string;
}

export interface TestDns {
  /** "127.0.0.1:PORT", what the gateway's resolver config takes. */
  readonly server: string;
  readonly port: number;
  /** Queries received, as "TYPE name", for assertions on caching. */
  readonly queries: string[];
  set(name: string, type: 'A' | 'AAAA', values: string[], ttl?: number): void;
  set(name: string, type: 'MX', values: MxValue[], ttl?: number): void;
  set(name: string, type: 'TXT', values: string[], ttl?: number): void;
  behave(name: string, behaviour: Behaviour): void;
  /** Hold the answers for `name` until a query for `other` arrives (answered at once if it already came). */
  holdUntil(name: string, other: string): void;
  remove(name: string): void;
  close(): Promise<void>;
}

export async function startDnsServer(): Promise<TestDns> {
  const table = new Map<string, Entry>();
  const queries: string[] = [];
  const asked = new Set<string>();
  const held = new Map<string, Array<() => void>>();
  const norm = (name: string) => name.toLowerCase().replace(/\.$/, '');
  const entry = (name: string): Entry => {
    const key = norm(name);
    let e = table.get(key);
    if (!e) {
      e = { A: [], AAAA: [], MX: [], TXT: [], ttl: 60, behaviour: 'answer' };
      table.set(key, e);
    }
    return e;
  };
  const socket = dgram.createSocket('udp4');
  socket.on('message', (msg, rinfo) => {
    let query: packet.Packet;
    try {
      query = packet.decode(msg);
    } catch {
      return;
    }
    const q = query.questions?.[0];
    if (!q) return;
    queries.push(`${q.type} ${q.name}`);
    const name = norm(q.name);
    asked.add(name);
    for (const release of held.get(name) ?? []) release();
    held.delete(name);
    const e = table.get(name);
    if (e?.behaviour === 'drop') return;
    const answers: packet.Answer[] = [];
    let rcode = 'NOERROR';
    if (e?.behaviour === 'servfail') rcode = 'SERVFAIL';
    else if (!e) rcode = 'NXDOMAIN';
    else if (q.type === 'A') for (const a of e.A) answers.push({ type: 'A', name: q.name, ttl: e.ttl, data: a });
    else if (q.type === 'AAAA') for (const a of e.AAAA) answers.push({ type: 'AAAA', name: q.name, ttl: e.ttl, data: a });
    else if (q.type === 'MX') for (const m of e.MX) answers.push({ type: 'MX', name: q.name, ttl: e.ttl, data: { exchange: m.exchange, preference: m.priority } });
    else if (q.type === 'TXT') for (const t of e.TXT) answers.push({ type: 'TXT', name: q.name, ttl: e.ttl, data: chunk(t) });
    const response = packet.encode({
      id: query.id,
      type: 'response',
      flags: packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE | rcodeFlag(rcode),
      questions: query.questions,
      answers,
      // A negative answer carries an SOA so resolvers can cache it (RFC 2308).
      authorities: answers.length === 0 && rcode !== 'SERVFAIL'
        ? [{ type: 'SOA', name: 'test', ttl: 30, data: { mname: 'ns.test', rname: 'root.test', serial: 1, refresh: 60, retry: 60, expire: 60, minimum: 30 } }]
        : [],
    });
    const send = () => socket.send(response, rinfo.port, rinfo.address);
    if (e?.until === undefined || asked.has(e.until)) return send();
    held.set(e.until, [...(held.get(e.until) ?? []), send]);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const port = socket.address().port;
  return {
    server: `127.0.0.1:${port}`,
    port,
    queries,
    set(name: string, type: RecordType, values: unknown[], ttl?: number) {
      const e = entry(name);
      (e[type] as unknown[]) = values;
      if (ttl !== undefined) e.ttl = ttl;
      e.behaviour = 'answer';
    },
    behave(name, behaviour) {
      entry(name).behaviour = behaviour;
    },
    holdUntil(name, other) {
      entry(name).until = norm(other);
    },
    remove(name) {
      table.delete(name.toLowerCase());
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

/** TXT strings are at most 255 bytes each; long records (DKIM keys) are split. */
function chunk(text: string): Buffer[] {
  const b = Buffer.from(text);
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += 255) out.push(b.subarray(i, i + 255));
  return out.length ? out : [Buffer.alloc(0)];
}

function rcodeFlag(rcode: string): number {
  // The RCODE lives in the low 4 bits of the flags word.
  return rcode === 'NXDOMAIN' ? 3 : rcode === 'SERVFAIL' ? 2 : 0;
}
