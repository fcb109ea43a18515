/**
 * src/smtp/data-reader.ts against a reference written the obvious way (one
 * string search for the end, one replace for the stuffing), for messages
 * made of the lines that matter (".", "..", "...", ".x", bare LF, bare CR,
 * CR LF) and every way TCP could cut them: each split point, and runs of
 * random splits. The reader must find the same end, the same content and the
 * same bytes after the end (pipelined commands) however the input is cut.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { DataReader } from '../../src/smtp/data-reader';

const END = '\r\n.\r\n';

/** Content and rest, or undefined when the input holds no end of data. The DATA command's CRLF precedes the input. */
function reference(input: string): { content: string; rest: string } | undefined {
  const at = `\r\n${input}`.indexOf(END);
  if (at < 0) return undefined;
  const raw = at === 0 ? '' : input.slice(0, at); // up to and including the CRLF before "."
  const content = raw.replace(/(^|\n)\.\./g, '$1.');
  return { content, rest: input.slice(at + 3) };
}

function feedAll(parts: string[]): { content: string; ended: boolean; rest: string } {
  const r = new DataReader();
  let content = '';
  for (let i = 0; i < parts.length; i++) {
    const step = r.feed(Buffer.from(parts[i]!, 'latin1'));
    content += step.parts.map((b) => b.toString('latin1')).join('');
    if (step.ended) return { content, ended: true, rest: (step.rest?.toString('latin1') ?? '') + parts.slice(i + 1).join('') };
  }
  return { content, ended: false, rest: '' };
}

const LINES = ['.', '..', '...', '.x', '..x', 'x', '', 'a.b', '.\r', '\r.', ' .'];
const BREAKS = ['\r\n', '\n', '\r', '\r\n'];

/** A deterministic pseudo-random sequence (the same cases every run). */
function rng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    return s / 0x7fffffff;
  };
}

function message(rand: () => number): string {
  let m = '';
  const n = 1 + Math.floor(rand() * 8);
  for (let i = 0; i < n; i++) m += LINES[Math.floor(rand() * LINES.length)]! + BREAKS[Math.floor(rand() * BREAKS.length)]!;
  // Most messages end properly and carry a pipelined command; some never end.
  return rand() < 0.85 ? `${m}${m.endsWith('\r\n') ? '' : '\r\n'}.\r\nQUIT\r\n` : m;
}

it('finds the same end, content and rest as the reference, at every split point', () => {
  const rand = rng(7);
  let ended = 0;
  for (let c = 0; c < 400; c++) {
    const input = message(rand);
    const want = reference(input);
    for (let k = 0; k <= input.length; k++) {
      const got = feedAll([input.slice(0, k), input.slice(k)]);
      const what = `${JSON.stringify(input)} split at ${k}`;
      assert.equal(got.ended, want !== undefined, what);
      if (want) {
        assert.equal(got.content, want.content, what);
        assert.equal(got.rest, want.rest, what);
      }
    }
    if (want) ended++;
  }
  assert.ok(ended > 250 && ended < 400, `both kinds of input were tried (${ended} of 400 ended)`);
});

it('one byte at a time, and random cuts, change nothing', () => {
  const rand = rng(11);
  for (let c = 0; c < 400; c++) {
    const input = message(rand);
    const want = reference(input);
    const cuts: string[] = [];
    for (let i = 0; i < input.length; ) {
      const n = 1 + Math.floor(rand() * 4);
      cuts.push(input.slice(i, i + n));
      i += n;
    }
    for (const parts of [cuts, [...input]]) {
      const got = feedAll(parts);
      assert.equal(got.ended, want !== undefined, JSON.stringify(parts));
      if (want) assert.deepEqual({ content: got.content, rest: got.rest }, want, JSON.stringify(parts));
    }
  }
});

it('the sequences of the smuggling reports are content, not an end', () => {
  for (const fake of ['\n.\n', '\r\n.\n', '\n.\r\n', '\r.\r', '\r.\r\n']) {
    const got = feedAll([`a${fake}b\r\n`]);
    assert.equal(got.ended, false, JSON.stringify(fake));
    assert.equal(got.content, `a${fake}b\r\n`, JSON.stringify(fake));
  }
  assert.deepEqual(feedAll(['.\r\nNOOP\r\n']), { content: '', ended: true, rest: 'NOOP\r\n' }, 'an empty message');
});
