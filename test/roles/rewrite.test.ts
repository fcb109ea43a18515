/**
 * Scenario: centralised mail for internal hosts. A web server sends as
 * root@web01.corp.example; the gateway rewrites the envelope sender and the
 * From/Sender/Reply-To headers to ops@corp.example, expands an alias to
 * several recipients, and the maps change without a restart. Checked on the
 * bytes that arrive at the next hop. Also: an upstream relayhost requiring
 * STARTTLS + AUTH receives mail through the gateway.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';
import { BASE_LISTENERS, startRoleGateway, type RoleGateway } from './helpers';

async function send(gw: RoleGateway, from: string, to: string[], raw: string): Promise<void> {
  const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.5' });
  await c.reply();
  await c.cmd('EHLO web01.corp.example');
  assert.match((await c.cmd(`MAIL FROM:<${from}>`)).text, /^250 /);
  for (const t of to) assert.match((await c.cmd(`RCPT TO:<${t}>`)).text, /^250 /);
  assert.match((await c.data(raw)).text, /^250 /);
  await c.quit();
}

const RAW = [
  'From: "Cron Daemon" <root@web01.corp.example>',
  'Sender: root@web01.corp.example',
  'Reply-To: Root <ROOT@web01.corp.example>,',
  ' nobody@elsewhere.example',
  'To: team@corp.example',
  'Subject: cron output for root@web01.corp.example',
  '',
  'root@web01.corp.example stays as it is in the body.',
  '.',
  '',
].join('\r\n');

describe('address rewriting', { timeout: 30_000 }, () => {
  let gw: RoleGateway;
  let corp: TestMx;

  before(async () => {
    corp = await startTestMx({ host: '127.0.0.40' });
    gw = await startRoleGateway(
      {
        config: {
          dkim: { enabled: false },
          listeners: BASE_LISTENERS,
          relay: { routes: { 'corp.example': { host: '127.0.0.40', port: corp.port, tlsLevel: 'none' } } },
          roles: { rewrite: { senderCanonical: 'maps/sender-canonical', recipientAliases: 'maps/aliases' } },
        },
      },
      {
        'maps/sender-canonical': 'root@web01.corp.example   ops@corp.example\n@db01.corp.example  @corp.example\n',
        'maps/aliases': '# one → several\nteam@corp.example   ann@corp.example, ben@corp.example\n',
      },
    );
  });
  after(async () => {
    await gw.stop();
    await corp.close();
  });

  it('rewrites the envelope sender and sender headers, expands aliases', async () => {
    await send(gw, 'root@web01.corp.example', ['team@corp.example'], RAW);
    const [m] = await corp.waitFor(1, 5000);
    assert.equal(m!.mailFrom, 'ops@corp.example');
    assert.deepEqual([...m!.rcptTo].sort(), ['ann@corp.example', 'ben@corp.example']);
    const text = m!.data.toString('latin1');
    assert.match(text, /\r\nFrom: "Cron Daemon" <ops@corp\.example>\r\n/);
    assert.match(text, /\r\nSender: ops@corp\.example\r\n/);
    assert.match(text, /\r\nReply-To: Root <ops@corp\.example>,\r\n nobody@elsewhere\.example\r\n/);
    // Only sender fields change: not the subject, not the body.
    assert.match(text, /\r\nSubject: cron output for root@web01\.corp\.example\r\n/);
    assert.match(text, /\r\n\r\nroot@web01\.corp\.example stays as it is in the body\.\r\n$/);
  });

  it('maps a whole host, keeping the local part', async () => {
    await send(gw, 'backup@db01.corp.example', ['ann@corp.example'], 'From: backup@db01.corp.example\r\nSubject: x\r\n\r\nbody\r\n.\r\n');
    const msgs = await corp.waitFor(2, 5000);
    assert.equal(msgs[1]!.mailFrom, 'backup@corp.example');
    assert.match(msgs[1]!.data.toString(), /\r\nFrom: backup@corp\.example\r\n/);
  });

  it('picks up changed maps on reload, without a restart', async () => {
    await gw.write('maps/aliases', 'team@corp.example   cat@corp.example\n');
    await gw.write('maps/sender-canonical', 'root@web01.corp.example   web-team@corp.example\n');
    await gw.app.reload();
    await send(gw, 'root@web01.corp.example', ['team@corp.example'], RAW);
    const msgs = await corp.waitFor(3, 5000);
    assert.equal(msgs[2]!.mailFrom, 'web-team@corp.example');
    assert.deepEqual(msgs[2]!.rcptTo, ['cat@corp.example']);
  });
});

describe('upstream relayhost with STARTTLS and AUTH', { timeout: 30_000 }, () => {
  let gw: RoleGateway;
  let upstream: TestMx;

  before(async () => {
    upstream = await startTestMx({ host: '127.0.0.41', starttls: true, auth: { user: 'gw-relay', pass: 'upstream-pass-9' } });
    gw = await startRoleGateway({
      config: {
        dkim: { enabled: false },
        listeners: BASE_LISTENERS,
        relay: { relayhost: { host: '127.0.0.41', port: upstream.port, tlsLevel: 'required', auth: { user: 'gw-relay', pass: 'upstream-pass-9' } } },
      },
    });
  });
  after(async () => {
    await gw.stop();
    await upstream.close();
  });

  it('delivers everything to the relayhost over TLS, authenticated', async () => {
    await send(gw, 'someone@isp.test', ['anyone@far-away.test'], 'From: someone@isp.test\r\nSubject: via upstream\r\n\r\nbody\r\n.\r\n');
    const [m] = await upstream.waitFor(1, 5000);
    assert.equal(m!.user, 'gw-relay');
    assert.equal(m!.secure, true);
    assert.deepEqual(m!.rcptTo, ['anyone@far-away.test']);
    assert.match(m!.data.toString(), /Subject: via upstream/);
  });
});
