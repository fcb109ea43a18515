/**
 * Attacks on the inbound SMTP layer (src/smtp/connection.ts, server.ts),
 * written by someone who did not write it, each one a bug found and fixed:
 * - an ESMTP parameter given twice was echoed whole (up to 16 KB, control
 *   characters included) in the 501;
 * Each case talks SMTP over loopback to an SmtpServer with stub hooks
 * (test/helpers/bare-smtp-server.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bareSmtpServers } from '../helpers/bare-smtp-server';
import { RawSmtp } from '../helpers/smtp-client';

describe('inbound SMTP: red-team findings', { timeout: 60_000 }, () => {
  const listen = bareSmtpServers();

  it('a parameter given twice: the 501 does not echo the client\'s (long, control-laden) parameter name', async () => {
    const { port } = await listen();
    const c = await RawSmtp.connect(port);
    await c.reply();
    await c.cmd('EHLO client.test');
    const key = `X\x1b[2J${'A'.repeat(7000)}`;
    const r = await c.cmd(`MAIL FROM:<a@b.test> ${key}=1 ${key}=2`);
    assert.equal(r.code, 501, r.text.slice(0, 80));
    assert.ok(r.text.length < 200, `the reply echoes ${r.text.length} bytes of client input`);
    assert.ok(!/[\x00-\x1f\x7f]/.test(r.text), `a control character in the reply: ${JSON.stringify(r.text.slice(0, 60))}`);
    await c.quit();
  });
});
