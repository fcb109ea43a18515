/**
 * The state store across a primary and its workers (src/cluster/ipc-store.ts),
 * with a real forked worker. The console's record of an accepted message
 * travels as one IPC message the primary answers with nothing: five store
 * operations, each waiting for the one before, were five round trips per
 * message (docs/performance.md, "Two processes on two cores").
 */
import assert from 'node:assert/strict';
import cluster, { type Worker } from 'node:cluster';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { serveStateStore } from '../../src/cluster/ipc-store';
import { recordActivity, SenderActivity } from '../../src/console/activity';
import { createLogger } from '../../src/log';
import { MemoryStore } from '../../src/state/memory';
import { waitUntil } from '../helpers/wait-until';

describe('the IPC state store', () => {
  let worker: Worker | undefined;
  after(() => {
    worker?.process.kill('SIGKILL');
  });

  it("hands a worker's sender activity to the primary in one message, with no answer", async () => {
    const store = new MemoryStore();
    const logger = createLogger({ level: 'silent', pretty: false });
    cluster.setupPrimary({ exec: path.join(__dirname, 'fixtures', 'activity-worker.js'), args: [], silent: false });
    const w = cluster.fork();
    worker = w;
    const fromWorker: Array<{ t?: string; reqs?: unknown[]; acts?: unknown[] }> = [];
    const toWorker: unknown[] = [];
    const send = w.send.bind(w);
    w.send = ((m: unknown, ...rest: never[]) => (toWorker.push(m), send(m as never, ...rest))) as typeof w.send;
    w.on('message', (m) => fromWorker.push(m));
    serveStateStore(w, store, logger, (s, recipients, now) => recordActivity(store, s, recipients, now));
    await new Promise((r) => w.once('online', r));

    w.send('go');
    await waitUntil('the worker recorded its message', () => fromWorker.some((m) => (m as unknown) === 'done'));
    const batches = fromWorker.filter((m) => m?.t === 'state-req');
    assert.equal(batches.length, 1, `one message to the primary (got ${batches.length})`);
    assert.deepEqual([batches[0]!.reqs?.length, batches[0]!.acts?.length], [0, 1], 'one activity, no request awaiting an answer');
    assert.equal(toWorker.length, 1, "the primary answered nothing (only the test's 'go')");

    // The primary recorded it in its one store: the console there sees the sender and its domains.
    const activity = new SenderActivity({ store, logger, ipSubject: (ip) => ip });
    await waitUntil('the activity in the primary store', async () => (await activity.topByVolume(10)).length === 1);
    const [top] = await activity.topByVolume(10);
    assert.deepEqual(top, { subject: { kind: 'ip', id: '192.0.2.7' }, recipients: 3 });
    assert.deepEqual(await activity.domains(top!.subject, 10), [
      { domain: 'y.test', recipients: 2 },
      { domain: 'x.test', recipients: 1 },
    ]);

    // Shaping's operations (relay.shaping.shared) travel the same way and land in the primary's
    // one store: a rate's second turn one interval after the first, a suspension the primary reads.
    w.send('shape');
    await waitUntil("the worker's shaping answers", () => fromWorker.some((m) => (m as { t?: string })?.t === 'shaped'));
    const shaped = fromWorker.find((m) => (m as { t?: string })?.t === 'shaped') as unknown as { turns: Array<{ ok: boolean; at: number }>; set: { set: boolean; until: number }; read: { until: number; value: string } };
    assert.deepEqual(shaped.turns, [{ ok: true, at: 1_000_000 }, { ok: true, at: 1_000_200 }]);
    assert.deepEqual([shaped.set.set, shaped.set.until, shaped.read.value], [true, 1_060_000, '{"base":0.5}']);
    assert.deepEqual(await store.getUntil('sh:test:suspension', 1_000_000), { until: 1_060_000, value: '{"base":0.5}' });
    assert.deepEqual(await store.turn('sh:test:rate', 200, 1000, 1_000_000), { ok: true, at: 1_000_400 }, "the primary's store holds the worker's turns");
  });
});
