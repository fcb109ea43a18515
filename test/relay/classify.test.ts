/** Outcome classification of SMTP replies, nodemailer errors and DNS failures. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RecipientOutcome } from '../../src/envelope';
import { classifyDnsFailure, classifyError, classifyReply, enhancedStatus, isTlsFailure, type SmtpErrorLike } from '../../src/relay/classify';

test('enhanced status: from the reply when its class agrees, else X.0.0', () => {
  assert.equal(enhancedStatus('550 5.1.1 No such user', 550), '5.1.1');
  assert.equal(enhancedStatus('550-5.7.26 Unauthenticated\n550 5.7.26 more', 550), '5.7.26');
  assert.equal(enhancedStatus('550 No such user', 550), '5.0.0');
  assert.equal(enhancedStatus('550 4.1.1 mismatched', 550), '5.0.0');
  assert.equal(enhancedStatus('451 4.3.0 later', 451), '4.3.0');
  assert.equal(enhancedStatus(undefined, 554), '5.0.0');
});

test('replies: 2xx delivered, 4xx deferred, 5xx bounced, 503 deferred', () => {
  assert.equal(classifyReply('a@x', '250 2.0.0 Ok: queued', 'mx').kind, 'delivered');
  assert.equal(classifyReply('a@x', '451 4.7.1 greylisted').kind, 'deferred');
  const b = classifyReply('a@x', '550 5.1.1 <a@x>: Recipient address rejected', 'mx.x');
  assert.deepEqual(b, { address: 'a@x', kind: 'bounced', error: '550 5.1.1 <a@x>: Recipient address rejected', statusCode: '5.1.1', remoteMta: 'mx.x' });
  assert.equal(classifyReply('a@x', '503 5.5.1 Error: need MAIL command').kind, 'deferred');
  assert.equal(classifyReply('a@x', 'garbage').kind, 'deferred');
});

test('errors during the transaction are classified by their reply', () => {
  const rcpt = classifyError('a@x', { code: 'EENVELOPE', command: 'RCPT TO', responseCode: 550, response: '550 5.1.1 No such user' });
  assert.equal(rcpt.kind, 'bounced');
  const data = classifyError('a@x', { code: 'EMESSAGE', command: 'DATA', responseCode: 554, response: '554 5.7.1 spam' });
  assert.equal(data.kind === 'bounced' && data.statusCode, '5.7.1');
  const mail = classifyError('a@x', { code: 'EENVELOPE', command: 'MAIL FROM', responseCode: 452, response: '452 4.3.1 full' });
  assert.equal(mail.kind, 'deferred');
});

test('session set-up failures are always deferred, even 5xx', () => {
  const cases = [
    { code: 'ESOCKET', originalCode: 'ECONNREFUSED', command: 'CONN', message: 'connect ECONNREFUSED 127.0.0.9:25' },
    { code: 'ETIMEDOUT', command: 'CONN', message: 'Greeting never received' },
    { code: 'EPROTOCOL', command: 'CONN', responseCode: 554, response: '554 5.7.1 go away' },
    { code: 'ETLS', command: 'STARTTLS', message: 'Error initiating TLS' },
    { code: 'EAUTH', command: 'AUTH PLAIN', responseCode: 535, response: '535 5.7.8 Authentication failed' },
    { code: 'ECONNECTION', command: 'CONN', message: 'Connection closed unexpectedly', response: '421 4.3.2 bye', responseCode: 421 },
    { code: 'ESOCKET', originalCode: 'ECONNRESET', message: 'read ECONNRESET' },
    {},
  ];
  for (const c of cases) assert.equal(classifyError('a@x', c).kind, 'deferred', JSON.stringify(c));
  const refused = classifyError('a@x', cases[0]);
  assert.match(refused.kind === 'deferred' ? refused.error : '', /ECONNREFUSED/);
});

/** The status a deferral carries (fails the test when the outcome is not a deferral). */
function deferred(o: RecipientOutcome): string {
  assert.equal(o.kind, 'deferred', JSON.stringify(o));
  return o.kind === 'deferred' ? o.statusCode : '';
}

test('a deferred reply carries its class-4 status: its own, else 4.0.0; a deferred 5xx keeps subject and detail', () => {
  assert.equal(deferred(classifyReply('a@x', '451 4.7.1 greylisted')), '4.7.1');
  assert.equal(deferred(classifyReply('a@x', '452-4.2.2 mailbox full\n452 4.2.2 try later')), '4.2.2');
  assert.equal(deferred(classifyReply('a@x', '421 busy')), '4.0.0');
  assert.equal(deferred(classifyReply('a@x', '451 5.7.1 class disagrees')), '4.0.0');
  // Postfix's smtp_skip_5xx_greeting: the reply's status with its first digit made 4.
  assert.equal(deferred(classifyReply('a@x', '503 5.5.1 Error: need MAIL command')), '4.5.1');
  assert.equal(deferred(classifyReply('a@x', '503 bad sequence')), '4.0.0');
  assert.equal(deferred(classifyReply('a@x', 'garbage')), '4.5.0');
  assert.equal(deferred(classifyError('a@x', { code: 'EENVELOPE', command: 'MAIL FROM', response: '452 4.3.1 full' })), '4.3.1');
});

test('a failed session defers with the status Postfix gives the same failure', () => {
  const cases: Array<[string, SmtpErrorLike]> = [
    ['4.4.1', { code: 'ESOCKET', originalCode: 'ECONNREFUSED', command: 'CONN', status: '4.4.1' }],
    ['4.4.1', { code: 'ETIMEDOUT', command: 'CONN', timeoutType: 'CONNECT_TIMEOUT' }],
    ['4.4.2', { code: 'ETIMEDOUT', command: 'CONN', timeoutType: 'GREETING_TIMEOUT' }],
    ['4.4.2', { code: 'ETIMEDOUT', command: 'CONN', timeoutType: 'DATA_TIMEOUT', message: '4.4.2 Timeout sending the message' }],
    ['4.4.2', { code: 'ETIMEDOUT', command: 'CONN', timeoutType: 'DATA_DONE_TIMEOUT' }],
    ['4.4.2', { code: 'ECONNECTION', command: 'CONN', message: 'Connection closed unexpectedly' }],
    ['4.4.2', { code: 'ESOCKET', originalCode: 'ECONNRESET', command: 'CONN' }],
    ['4.3.2', { code: 'ECONNECTION', command: 'CONN', response: '421 4.3.2 shutting down' }],
    ['4.7.1', { code: 'EPROTOCOL', command: 'CONN', response: '554 5.7.1 go away' }],
    ['4.0.0', { code: 'EPROTOCOL', command: 'CONN', response: '421 busy' }],
    ['4.5.0', { code: 'EPROTOCOL', command: 'CONN', message: 'Server answered DATA with 250 instead of 354' }],
    ['4.7.8', { code: 'EAUTH', command: 'AUTH PLAIN', response: '535 5.7.8 Authentication failed' }],
    ['4.7.4', { code: 'ETLS', command: 'STARTTLS', response: '502 5.5.1 not implemented', status: '4.7.4' }],
    ['4.7.0', { code: 'ETLS', command: 'STARTTLS', response: '454 4.7.0 TLS not available' }],
    ['4.7.5', { code: 'ESOCKET', originalCode: 'ERR_SSL_WRONG_VERSION_NUMBER', command: 'CONN', status: '4.7.5' }],
    ['4.7.5', { code: 'ECERT', message: '4.7.5 Server certificate not verified for mx.x' }],
    ['4.7.4', { code: 'ENOTLSAUTH' }],
    ['4.3.0', { code: 'ESHUTDOWN' }],
    ['4.3.0', { code: 'ESOURCE' }],
    ['4.3.0', { code: 'ESTREAM', command: 'API' }],
    ['4.3.0', {}],
  ];
  for (const [status, err] of cases) assert.equal(deferred(classifyError('a@x', err)), status, JSON.stringify(err));
});

test('locally detected permanent problems bounce', () => {
  const size = classifyError('a@x', { code: 'EMESSAGE', command: 'MAIL FROM', message: 'Message size larger than allowed 1000' });
  assert.equal(size.kind === 'bounced' && size.statusCode, '5.3.4');
  const addr = classifyError('a@x', { code: 'EENVELOPE', command: 'API', message: 'Invalid recipient "a<b"' });
  assert.equal(addr.kind === 'bounced' && addr.statusCode, '5.1.3');
  const utf8 = classifyError('a@x', { code: 'ESMTPUTF8', message: 'SMTPUTF8 is required' });
  assert.equal(utf8.kind === 'bounced' && utf8.statusCode, '5.6.7');
});

test('DNS failures: permanent bounce with their status, temporary defer', () => {
  const b = classifyDnsFailure('a@x', { ok: false, permanent: true, status: '5.1.2', message: 'NXDOMAIN' });
  assert.equal(b.kind === 'bounced' && b.statusCode, '5.1.2');
  assert.equal(deferred(classifyDnsFailure('a@x', { ok: false, permanent: false, status: '4.4.3', message: 'timeout' })), '4.4.3');
});

test('TLS handshake failures are recognised in all the shapes nodemailer reports them', () => {
  assert.ok(isTlsFailure({ code: 'ETLS' }));
  assert.ok(isTlsFailure({ code: 'ESOCKET', originalCode: 'ERR_SSL_WRONG_VERSION_NUMBER' }));
  assert.ok(isTlsFailure({ code: 'ETIMEDOUT', timeoutType: 'UPGRADE_TIMEOUT' }));
  assert.ok(!isTlsFailure({ code: 'ESOCKET', originalCode: 'ECONNREFUSED' }));
  assert.ok(!isTlsFailure({ code: 'ETIMEDOUT', timeoutType: 'GREETING_TIMEOUT' }));
});
