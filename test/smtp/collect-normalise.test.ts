/**
 * collectMessage's line-ending normalisation (src/smtp/collect.ts) against a
 * reference written the obvious way: every CR LF, bare CR and bare LF of the
 * whole message becomes one CR LF. The collector sees the message in pieces
 * (one per socket read), so a CR at the end of one piece and its LF at the
 * start of the next must still be one line end: the same bytes and the same
 * "saw a bare newline" verdict however the message is cut.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { collectMessage } from '../../src/smtp/collect';

/** A deterministic pseudo-random sequence (the same cases every run). */
function rng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    return s / 0x7fffffff;
  };
}

function reference(input: string): { stored: string; bare: boolean } {
  return { stored: input.replace(/\r\n|\r|\n/g, '\r\n'), bare: /\r(?!\n)|(?<!\r)\n/.test(input) };
}

async function collect(parts: string[]): Promise<{ stored: string; bare: boolean }> {
  const stream = {
    sizeExceeded: false,
    async *[Symbol.asyncIterator]() {
      for (const p of parts) yield Buffer.from(p, 'latin1');
    },
  };
  const msg = await collectMessage(stream, { bareNewline: 'normalise', maxSize: 1 << 20, spillAt: 1 << 20, spillPath: '/nonexistent/spill', maxHeaderBytes: 256 * 1024, maxHeaderFields: 1000 });
  return { stored: Buffer.concat(msg.chunks).toString('latin1'), bare: msg.bareNewline };
}

it('bare CR and LF become CR LF, and are reported, however the message is cut into pieces', async () => {
  const next = rng(20261206);
  const alphabet = ['a', '\r', '\n', '\r\n', 'xy'];
  for (let n = 0; n < 3000; n++) {
    let input = 'X: 1\r\n\r\n';
    const len = Math.floor(next() * 12);
    for (let i = 0; i < len; i++) input += alphabet[Math.floor(next() * alphabet.length)];
    // Cut at random points (a piece may be a lone CR or LF).
    const parts: string[] = [];
    let at = 0;
    while (at < input.length) {
      const step = 1 + Math.floor(next() * 4);
      parts.push(input.slice(at, at + step));
      at += step;
    }
    const want = reference(input);
    const got = await collect(parts);
    assert.deepEqual(got, want, `input ${JSON.stringify(input)} in pieces ${JSON.stringify(parts)}`);
  }
});

it('a 4 KB message of CR LF lines is passed through as it came, not reported bare', async () => {
  const input = `Subject: x\r\n\r\n${`${'y'.repeat(70)}\r\n`.repeat(57)}`;
  assert.deepEqual(await collect([input]), { stored: input, bare: false });
});
