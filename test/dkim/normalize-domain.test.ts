/**
 * normalizeDomain (src/dkim/config.ts): lower-case A-labels or '', the same
 * answer however often and in whatever order it is asked (its answers are
 * remembered, in a bounded table that is emptied when full).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { normalizeDomain } from '../../src/dkim/config';

const CASES: Array<[string, string]> = [
  ['Example.COM', 'example.com'],
  [' example.com. ', 'example.com'],
  ['bücher.example', 'xn--bcher-kva.example'],
  ['xn--bcher-kva.example', 'xn--bcher-kva.example'],
  ['localhost', ''],
  ['-bad.example', ''],
  ['a..example', ''],
  ['', ''],
];

describe('normalizeDomain', () => {
  it('gives A-labels, or nothing for what is not a domain name, on every call', () => {
    for (let round = 0; round < 3; round++) {
      for (const [input, want] of CASES) assert.equal(normalizeDomain(input), want, `${JSON.stringify(input)}, round ${round}`);
    }
  });

  it('still answers right after more distinct names than it remembers', () => {
    for (let i = 0; i < 10_000; i++) assert.equal(normalizeDomain(`Host${i}.Example.NET`), `host${i}.example.net`);
    for (const [input, want] of CASES) assert.equal(normalizeDomain(input), want, JSON.stringify(input));
  });
});
