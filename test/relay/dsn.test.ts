/** RFC 3464 bounce structure, checked with regexes (no MIME parser installed). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildDsn, rfc5322Date } from '../../src/relay/dsn';

const original = Buffer.from('From: <alice@origin.test>\nTo: <bob@dest.test>\nSubject: hello\n\nBODY MUST NOT APPEAR\n');

function build(action?: 'failed' | 'delayed'): string {
  return buildDsn({
    hostname: 'gw.isp.test',
    originalSender: 'alice@origin.test',
    queueId: 'ABC123',
    arrivalDate: new Date(Date.UTC(2025, 0, 2, 3, 4, 5)),
    failed: [
      { address: 'bob@dest.test', status: '5.1.1', diagnostic: '550 5.1.1 No such user', remoteMta: 'mx.dest.test' },
      { address: 'carol@nx.test', status: '5.1.2', diagnostic: 'Host or domain name not found: nx.test (NXDOMAIN)' },
    ],
    originalHeaders: original,
    action,
  }).toString('utf8');
}

test('a failed-delivery DSN has the RFC 3464 structure', () => {
  const dsn = build();
  assert.ok(!/[^\r]\n/.test(dsn), 'CRLF line endings only');
  const [head] = dsn.split('\r\n\r\n');
  assert.match(head, /^From: Mail Delivery System <MAILER-DAEMON@gw\.isp\.test>$/m);
  assert.match(head, /^To: <alice@origin\.test>$/m);
  assert.match(head, /^Auto-Submitted: auto-replied$/m);
  assert.match(head, /^Date: \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000$/m);
  assert.match(head, /^Message-ID: <[^>\s]+@gw\.isp\.test>$/m);
  assert.match(head, /^MIME-Version: 1\.0$/m);
  const ct = /^Content-Type: multipart\/report; report-type=delivery-status;\r\n\tboundary="([^"]+)"$/m.exec(head);
  assert.ok(ct, 'multipart/report content type');
  const boundary = ct[1];
  const parts = dsn.split(`\r\n--${boundary}`);
  // preamble, 3 parts, closing "--"
  assert.equal(parts.length, 5);
  assert.match(parts[4], /^--\r\n$/);
  assert.match(parts[1], /Content-Type: text\/plain; charset=utf-8/);
  assert.match(parts[1], /<bob@dest\.test>: host mx\.dest\.test said: 550 5\.1\.1 No such user/);

  const status = parts[2];
  assert.match(status, /Content-Type: message\/delivery-status/);
  assert.match(status, /^Reporting-MTA: dns; gw\.isp\.test$/m);
  assert.match(status, /^Arrival-Date: Thu, 2 Jan 2025 03:04:05 \+0000$/m);
  assert.match(status, /^Final-Recipient: rfc822; bob@dest\.test\r\nAction: failed\r\nStatus: 5\.1\.1\r\nRemote-MTA: dns; mx\.dest\.test\r\nDiagnostic-Code: smtp; 550 5\.1\.1 No such user$/m);
  assert.match(status, /^Final-Recipient: rfc822; carol@nx\.test\r\nAction: failed\r\nStatus: 5\.1\.2\r\nDiagnostic-Code: X-Smarthost; Host or domain name not found/m);
  // per-recipient blocks are separated from the per-message block by blank lines
  assert.match(status, /Arrival-Date: [^\r]+\r\n\r\nFinal-Recipient/);

  const headers = parts[3];
  assert.match(headers, /Content-Type: text\/rfc822-headers/);
  assert.match(headers, /\r\n\r\nFrom: <alice@origin\.test>\r\nTo: <bob@dest\.test>\r\nSubject: hello$/);
  assert.ok(!dsn.includes('BODY MUST NOT APPEAR'));
});

test('a delay warning says delayed with 4.x.x statuses', () => {
  const dsn = build('delayed');
  assert.match(dsn, /^Subject: Delayed Mail \(still being retried\)$/m);
  assert.match(dsn, /^Action: delayed\r\nStatus: 4\.1\.1$/m);
  assert.doesNotMatch(dsn, /^Action: failed/m);
});

test('header injection through inputs is neutralised', () => {
  const dsn = buildDsn({
    hostname: 'gw.isp.test',
    originalSender: 'evil@x.test>\r\nBcc: <victim@y.test',
    queueId: 'Q',
    arrivalDate: new Date(),
    failed: [{ address: 'a@b', status: '5.0.0', diagnostic: '550 bad\r\nX-Injected: yes' }],
    originalHeaders: Buffer.from('Subject: x\r\n'),
  }).toString();
  assert.doesNotMatch(dsn, /^Bcc:/m);
  assert.doesNotMatch(dsn, /^X-Injected:/m);
});

test('control characters in a server reply never reach the DSN', () => {
  // A receiving MX chose the reply text; NUL, ESC, form feed, DEL and the like are not text.
  const dsn = buildDsn({
    hostname: 'gw.isp.test',
    originalSender: 'a@origin.test',
    queueId: 'Q',
    arrivalDate: new Date(),
    failed: [{ address: 'a@b.test', status: '5.0.0', diagnostic: '550 5.7.1 no\x00thanks \x1b[31mred\x1b[0m\x0c\x7f end', remoteMta: 'mx\x00.b.test' }],
    originalHeaders: Buffer.from('Subject: x\r\n'),
  }).toString('latin1');
  // eslint-disable-next-line no-control-regex
  assert.doesNotMatch(dsn.replace(/\r\n|\t/g, ''), /[\x00-\x1f\x7f]/, 'no control character but CRLF line ends and the folding tab');
  assert.match(dsn, /^Diagnostic-Code: smtp; 550 5\.7\.1 no\?thanks \?\[31mred\?\[0m\?\? end$/m);
});

test('RFC 5322 dates', () => {
  assert.equal(rfc5322Date(new Date(Date.UTC(2024, 11, 31, 23, 59, 9))), 'Tue, 31 Dec 2024 23:59:09 +0000');
});
