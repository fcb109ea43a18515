/**
 * Relaxed canonicalization checked against mailauth's own implementation on
 * generated inputs, split at every kind of chunk boundary; plus the one
 * place where we deliberately differ (RFC 6376 WSP is SP and HTAB only).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RelaxedHash } from 'mailauth/lib/dkim/body/relaxed';
import { formatRelaxedLine } from 'mailauth/lib/tools';
import { parseHeaderFields, relaxedBodyHash, relaxedHeader, selectHeaders, splitMessage } from '../../src/dkim/canon';
import { chunked } from './helpers';

/** Deterministic generator (mulberry32) so failures reproduce. */
function rng(seed: number): () => number {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = ['a', 'xyz', ' ', '  ', '\t', ' \t ', '\r\n', '\r\n', '\n', '.', 'ü', 'à', '\xa0', '日本'];

function randomBody(r: () => number): Buffer {
  const n = Math.floor(r() * 60);
  let s = '';
  for (let i = 0; i < n; i++) s += PIECES[Math.floor(r() * PIECES.length)];
  // SMTP DATA always ends its last line with CRLF. (A body ending in bare
  // WSP is read three ways by mailauth, dkimpy and RFC 6376; it cannot
  // arrive over SMTP.)
  return Buffer.from(s + '\r\n', 'utf8');
}

function mailauthBodyHash(body: Buffer): string {
  // mailauth's parser turns bare LF into CRLF before hashing.
  const h = new RelaxedHash('sha256', false);
  h.update(Buffer.from(body.toString('latin1').replace(/(?<!\r)\n/g, '\r\n'), 'latin1'));
  return h.digest('base64');
}

test('body hash equals mailauth on 3000 generated bodies, in any chunking', () => {
  const r = rng(42);
  for (let i = 0; i < 3000; i++) {
    const body = randomBody(r);
    const expected = mailauthBodyHash(body);
    assert.equal(relaxedBodyHash([body]), expected, JSON.stringify(body.toString('latin1')));
    assert.equal(relaxedBodyHash(chunked(body, 1 + (i % 7))), expected, `chunked ${JSON.stringify(body.toString('latin1'))}`);
  }
});

test('body hash: RFC 6376 §3.4.6 examples and edge cases', () => {
  const sha = (s: string) => relaxedBodyHash([Buffer.from(s, 'latin1')]);
  // Empty body and a body of only empty lines hash the empty string.
  assert.equal(sha(''), '47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=');
  assert.equal(sha('\r\n\r\n \r\n'), sha(''));
  // " C \r\nD \t E\r\n\r\n\r\n" → " C\r\nD E\r\n"
  assert.equal(sha(' C \r\nD \t E\r\n\r\n\r\n'), sha(' C\r\nD E\r\n'));
  // A missing final CRLF is added.
  assert.equal(sha('abc'), sha('abc\r\n'));
  // Empty lines inside the body are kept.
  assert.notEqual(sha('a\r\n\r\nb\r\n'), sha('a\r\nb\r\n'));
});

test('header canonicalization equals mailauth for ASCII and UTF-8 without 0xA0 bytes', () => {
  const r = rng(7);
  const parts = ['Subject', 'X-Y', ':', ' ', '\t', 'v', 'ü', '日', '\r\n ', '\r\n\t', 'word'];
  for (let i = 0; i < 2000; i++) {
    let s = 'Subject:';
    const n = Math.floor(r() * 20);
    for (let j = 0; j < n; j++) s += parts[Math.floor(r() * parts.length)];
    const raw = Buffer.from(s, 'utf8').toString('latin1');
    assert.equal(relaxedHeader(raw, true), formatRelaxedLine(Buffer.from(raw, 'latin1')).toString('latin1'), JSON.stringify(s));
  }
});

test('header canonicalization keeps a 0xA0 byte (RFC: WSP is SP/HTAB; mailauth 4.13 turns it into a space)', () => {
  const raw = Buffer.from('Subject: Voilà  x', 'utf8').toString('latin1');
  assert.equal(Buffer.from(relaxedHeader(raw), 'latin1').toString('utf8'), 'subject:Voilà x\r\n');
});

test('splitMessage finds the empty line across chunk boundaries', () => {
  const msg = Buffer.from('A: 1\r\nB: 2\r\n\r\nbody\r\n');
  for (let size = 1; size <= msg.length; size++) {
    const { header, body } = splitMessage(chunked(msg, size));
    assert.equal(header.toString(), 'A: 1\r\nB: 2\r\n');
    assert.equal(Buffer.concat(body).toString(), 'body\r\n');
  }
  assert.equal(splitMessage([Buffer.from('\r\nbody')]).header.length, 0);
  assert.equal(splitMessage([Buffer.from('A: 1\r\n')]).body.length, 0);
});

test('header selection: bottom-up instances, From over-signed, prefixes', () => {
  const fields = parseHeaderFields(Buffer.from('Received: x\r\nFrom: a@b.example\r\nTo: x\r\nTo: y\r\nList-Id: <l>\r\nList-Post: <p>\r\nSubject: s\r\n\tcontinued\r\n'));
  const { h, canonical } = selectHeaders(fields, ['from', 'to', 'subject', 'list-*', 'cc']);
  assert.deepEqual(h, ['from', 'from', 'to', 'to', 'subject', 'list-id', 'list-post']);
  assert.equal(canonical, 'from:a@b.example\r\nto:y\r\nto:x\r\nsubject:s continued\r\nlist-id:<l>\r\nlist-post:<p>\r\n');
});
