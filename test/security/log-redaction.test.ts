/**
 * Secrets never reach the log: the product's logger (src/log.ts, as
 * `smarthost start` builds it, writing JSON lines to stdout) censors
 * password, pass, token and privateKey at the top of a line, one level down
 * (in any object value, an Error's own properties included, and in a child
 * logger's bindings, a child's child included), and relay.relayhost.auth.pass; everything else is
 * written as given.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';

const SECRET = 's3cret-value';

// Run in a child process: the logger writes to its stdout, as in production.
const SCRIPT = `
const { createLogger } = require(${JSON.stringify(path.join(__dirname, '../../src/log'))});
const log = createLogger({ level: 'info', pretty: false });
const S = ${JSON.stringify(SECRET)};
log.info({ case: 'top', password: S, pass: S, token: S, privateKey: S, user: 'alice' }, 'm');
log.info({ case: 'nested', account: { name: 'alice', password: S }, auth: { user: 'u', pass: S }, key: { privateKey: S, selector: 'sel' }, api: { token: S } }, 'm');
log.info({ case: 'deep', relay: { relayhost: { host: 'mx.example', auth: { user: 'u', pass: S } } } }, 'm');
log.info({ case: 'error', err: Object.assign(new Error('login failed'), { password: S, code: 'EAUTH' }) }, 'm');
log.child({ account: { name: 'bob', token: S } }).info({ case: 'child' }, 'm');
log.child({ listener: 'x' }).child({ account: { name: 'eve', pass: S } }).info({ case: 'grandchild' }, 'm');
log.info({ case: 'plain', delays: { dns: 2, conn: 37 }, buf: Buffer.from('abc'), list: [1, 2], from: 'a@b.example' }, 'm');
`;

describe('log redaction', () => {
  const out = execFileSync(process.execPath, ['-e', SCRIPT], { encoding: 'utf8' });
  const lines = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
  const byCase = (c: string) => lines.find((l) => l.case === c)!;

  it('never writes a secret', () => {
    assert.equal(lines.length, 7);
    assert.ok(!out.includes(SECRET), out);
  });

  it('censors the top level, one level down and relay.relayhost.auth.pass', () => {
    assert.deepEqual(
      [byCase('top').password, byCase('top').pass, byCase('top').token, byCase('top').privateKey, byCase('top').user],
      ['[redacted]', '[redacted]', '[redacted]', '[redacted]', 'alice'],
    );
    const n = byCase('nested');
    assert.deepEqual(n.account, { name: 'alice', password: '[redacted]' });
    assert.deepEqual(n.auth, { user: 'u', pass: '[redacted]' });
    assert.deepEqual(n.key, { privateKey: '[redacted]', selector: 'sel' });
    assert.deepEqual(n.api, { token: '[redacted]' });
    assert.deepEqual(byCase('deep').relay, { relayhost: { host: 'mx.example', auth: { user: 'u', pass: '[redacted]' } } });
  });

  it("censors an Error's own properties and keeps it serialized as an error", () => {
    const e = byCase('error').err;
    assert.equal(e.password, '[redacted]');
    assert.equal(e.message, 'login failed');
    assert.equal(e.type, 'Error');
    assert.equal(e.code, 'EAUTH');
    assert.match(e.stack, /login failed/);
  });

  it("censors a child logger's bindings", () => {
    assert.deepEqual(byCase('child').account, { name: 'bob', token: '[redacted]' });
    assert.deepEqual(byCase('grandchild').account, { name: 'eve', pass: '[redacted]' });
  });

  it('writes values without secrets as given', () => {
    const p = byCase('plain');
    assert.deepEqual(p.delays, { dns: 2, conn: 37 });
    assert.deepEqual(p.buf, { type: 'Buffer', data: [97, 98, 99] });
    assert.deepEqual(p.list, [1, 2]);
    assert.equal(p.from, 'a@b.example');
  });
});
