/** Connection pool bookkeeping with fake sessions: limits, waiting, reuse, eviction. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { Session } from '../../src/relay/client';
import { ConnectionPool, type Lease } from '../../src/relay/pool';

class FakeConn extends EventEmitter {
  destroyed = false;
  /** Like SmtpConnection.quit: QUIT, and the connection is closed from then on. */
  quit(): void {
    this.close();
  }
  close(): void {
    if (!this.destroyed) {
      this.destroyed = true;
      this.emit('end');
    }
  }
}

function fakeSession(): Session & { closed: boolean } {
  const conn = new FakeConn();
  const s = {
    conn,
    target: { host: 'h', ip: '127.0.0.1', port: 25, tls: 'none' },
    secure: false,
    messages: 1,
    broken: false,
    get closed() {
      return conn.destroyed;
    },
  };
  return s as unknown as Session & { closed: boolean };
}

const limits = { perDestination: 2, total: 3, idleMs: 60_000, maxMessagesPerConnection: 3 };

test('per-destination limit makes callers wait, not fail', async () => {
  const pool = new ConnectionPool(limits);
  const a = await pool.acquire('d');
  const b = await pool.acquire('d');
  const third: { lease?: Lease | null } = {};
  const got = (): Lease | null | undefined => third.lease;
  void pool.acquire('d').then((l) => (third.lease = l));
  await new Promise((r) => setImmediate(r));
  assert.ok(got() === undefined, 'third waits');
  const s = fakeSession();
  pool.release(a!, s, true);
  await new Promise((r) => setImmediate(r));
  assert.equal(got()?.idle, s, 'waiter gets the released session');
  pool.release(b!, undefined, false);
  pool.close();
});

test('unreusable, broken or worn-out sessions are closed, not pooled', async () => {
  const pool = new ConnectionPool(limits);
  const s1 = fakeSession();
  pool.release((await pool.acquire('d'))!, s1, false);
  assert.equal(s1.closed, true);
  const s2 = fakeSession();
  s2.messages = 3;
  pool.release((await pool.acquire('d'))!, s2, true);
  assert.equal(s2.closed, true);
  assert.equal(pool.stats().total, 0);
  pool.close();
});

test('idle sessions closed by the server leave the pool', async () => {
  const pool = new ConnectionPool(limits);
  const s = fakeSession();
  pool.release((await pool.acquire('d'))!, s, true);
  assert.equal(pool.stats().idle, 1);
  s.conn.close();
  assert.equal(pool.stats().idle, 0);
  assert.equal(pool.stats().total, 0);
  const l = await pool.acquire('d');
  assert.equal(l?.idle, undefined);
  pool.close();
});

test('idle timeout closes the session', async () => {
  const pool = new ConnectionPool({ ...limits, idleMs: 20 });
  const s = fakeSession();
  pool.release((await pool.acquire('d'))!, s, true);
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(s.closed, true);
  assert.equal(pool.stats().total, 0);
  pool.close();
});

test('global limit: idle sessions of other destinations are evicted; else wait', async () => {
  const pool = new ConnectionPool(limits);
  const idle = fakeSession();
  pool.release((await pool.acquire('x'))!, idle, true);
  const a = await pool.acquire('a');
  const b = await pool.acquire('b');
  assert.equal(pool.stats().total, 3);
  const c = await pool.acquire('c');
  assert.ok(c, 'granted after evicting the idle x session');
  assert.equal(idle.closed, true);
  let d: unknown;
  void pool.acquire('d').then((l) => (d = l));
  await new Promise((r) => setImmediate(r));
  assert.equal(d, undefined);
  pool.release(a!, undefined, false);
  await new Promise((r) => setImmediate(r));
  assert.ok(d);
  pool.close();
  assert.equal(await pool.acquire('e'), null);
  void b;
});

test('close() fails waiters with null', async () => {
  const pool = new ConnectionPool({ ...limits, perDestination: 1 });
  await pool.acquire('d');
  const waiting = pool.acquire('d');
  pool.close();
  assert.equal(await waiting, null);
});
