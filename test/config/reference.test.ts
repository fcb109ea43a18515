/**
 * docs/configuration-reference.md is made from the config parser
 * (src/config/reference.ts): it must be what the parser reads now, and every
 * key the parser reads must have a description.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { buildReference, exampleComments, REFERENCE_FILE } from '../../src/config/reference';
import { int } from '../../src/config/validate';

const root = path.resolve(__dirname, '../../..');

test('docs/configuration-reference.md is up to date with the config parser', () => {
  const { markdown } = buildReference(root);
  const committed = readFileSync(path.join(root, REFERENCE_FILE), 'utf8');
  if (committed !== markdown) {
    const a = committed.split('\n');
    const b = markdown.split('\n');
    const i = a.findIndex((line, n) => line !== b[n]);
    assert.fail(`${REFERENCE_FILE} is out of date: run npm run docs:config\n  first difference at line ${i + 1}:\n  committed: ${a[i]}\n  generated: ${b[i]}`);
  }
});

test('every key the parser reads has a type and a description', () => {
  const { problems } = buildReference(root);
  assert.deepEqual(problems, [], `fix these, then run npm run docs:config:\n${problems.join('\n')}`);
});

test('the reference covers every top-level section and listener key', () => {
  const { markdown } = buildReference(root);
  for (const key of ['hostname', 'limits.maxConnectionsPerIp', 'listeners[].proxyFrom', 'relay.routes.<domain>.tlsLevel', 'state.redis.url', 'postfix.milter.port', 'dkim.unsignedPolicy', 'admin.tokenFile']) {
    assert.match(markdown, new RegExp(`\\| \`${key.replace(/[.[\]<>]/g, '\\$&')}\` \\|`), key);
  }
  assert.match(markdown, /\| `limits\.maxMessageSize` \| size \| `25MB` \|/);
  assert.match(markdown, /\| `relay\.backoff` \| list of duration \| `\[ 5m, 10m, 20m, 40m, 1h, 2h, 4h \]` \|/);
});

test('a key added to the parser without regenerating fails both checks', () => {
  const committed = readFileSync(path.join(root, REFERENCE_FILE), 'utf8');
  // As a new `limits.maxWidgets: int` would be read, with no comment anywhere.
  const added = buildReference(root, (at) => int(undefined, at.child('limits').child('maxWidgets'), 5, 1));
  assert.notEqual(added.markdown, committed, 'the committed reference would not be stale');
  assert.match(added.markdown, /\| `limits\.maxWidgets` \| int ≥ 1 \| `5` \|/);
  assert.ok(added.problems.some((p) => p.startsWith('limits.maxWidgets: no description')), added.problems.join('\n'));
  // Given a description, only staleness remains.
  const documented = buildReference(root, (at) => int(undefined, at.child('limits').child('maxWidgets', { doc: 'widgets at once' }), 5, 1));
  assert.deepEqual(documented.problems, []);
  assert.match(documented.markdown, /\| `limits\.maxWidgets` \| int ≥ 1 \| `5` \| widgets at once \|/);
});

test('descriptions come from the comment on the key line, its continuation, and commented-out keys', () => {
  const c = exampleComments(
    [
      '# Our name.',
      'hostname: a.example',
      'spool:',
      '  journal: true   # first line',
      '                  # second line',
      '  # fsync: false  # commented out',
      'listeners:',
      '  - name: x       # the name',
      '    port: 25      # "#" is not here',
      '  - name: y',
      '    security: none     # a later item',
    ].join('\n'),
  );
  assert.equal(c.get('hostname'), 'Our name.');
  assert.equal(c.get('spool.journal'), 'first line second line');
  assert.equal(c.get('spool.fsync'), 'commented out');
  assert.equal(c.get('listeners[].name'), 'the name');
  assert.equal(c.get('listeners[].port'), '"#" is not here');
  assert.equal(c.get('listeners[].security'), 'a later item');
});
