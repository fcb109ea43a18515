/**
 * Scenario: `smarthost policy explain` (the compiled CLI) against the live
 * gateway's decisions for the same inputs. For each case a real SMTP client
 * plays the transaction and the CLI explains it; the final verdict, its rule
 * and the exact reply must agree. `--live` asks the running gateway, whose
 * counters (read, not written) change the answer once a quota is used up.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ExplainReport } from '../../src/policy/explain';
import { startDnsServer, type TestDns } from '../helpers/dns-server';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { freePort } from '../helpers/process';
import { authPlain, message, RawSmtp } from '../helpers/smtp-client';

const CLI = path.resolve(__dirname, '../../src/cli/main.js');

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('policy explain agrees with the live server', () => {
  let dns: TestDns;
  let gw: TestGateway;

  before(async () => {
    dns = await startDnsServer();
    dns.set('3.0.0.127.zen.test', 'A', ['127.0.0.4']);
    const adminPort = await freePort();
    gw = await startGateway({
      policyFiles: {
        'dnsbl.yaml': `
resolver: { servers: ["${dns.server}"], timeout: 500ms }
queryPrivate: true
zones:
  - name: zen
    zone: zen.test
    codes: { 127.0.0.4-127.0.0.7: xbl, 127.0.0.10-127.0.0.11: pbl }
    actions:
      xbl: { intercept: { action: reject, reply: dnsbl_listed, detail: "see https://help.isp.test/xbl?ip={ip}" } }
`,
        'quotas.yaml': 'plans:\n  residential: { messagesPerHour: 2, recipientsPerMessage: 2 }\ndefaultPlan: residential\ndefaultClassPlan: residential\n',
        'block-senders.txt': 'spam.test\n',
        'rules.yaml': `
stages:
  mail:
    - { id: sender.block, check: sender-list, file: block-senders.txt, onMatch: reject }
    - { id: identity.envelope-sender, check: envelope-sender }
    - { id: quota.messages, check: quota, limits: [messagesPerHour] }
`,
      },
      config: { admin: { port: adminPort }, relay: { dns: { servers: [dns.server], timeout: '300ms' } } },
    });
  });
  after(async () => {
    await gw.stop();
    await dns.close();
  });

  const explain = async (args: string[]): Promise<ExplainReport> => {
    const r = await cli(['policy', 'explain', '--config', gw.configFile, '--json', ...args]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as ExplainReport;
  };

  async function live(ip: string, steps: Array<(c: RawSmtp) => Promise<string | undefined>>, listener = 'intercept'): Promise<string> {
    const c = await RawSmtp.connect(gw.port(listener), { localAddress: ip });
    let last = (await c.reply()).text;
    if (!last.startsWith('220')) {
      c.close();
      return last;
    }
    await c.cmd('EHLO pc');
    for (const s of steps) {
      const r = await s(c);
      if (r === undefined) continue;
      last = r;
      if (!/^(250|235|354)/.test(r)) break;
    }
    await c.quit();
    return last;
  }
  const cmd = (line: string) => async (c: RawSmtp) => (await c.cmd(line)).text;
  const data = (from: string, to: string) => async (c: RawSmtp) => (await c.data(message({ from, to }))).text;

  it('an XBL-listed subscriber: the same refusal, rule and reply, with the DNSBL answer shown', async () => {
    const got = await live('127.0.0.3', []);
    const x = await explain(['--listener', 'intercept', '--ip', '127.0.0.3', '--from', 'me@home.test', '--rcpt', 'you@dest.test']);
    assert.equal(x.final.action, 'reject');
    assert.equal(x.final.rule, 'dnsbl:zen.xbl');
    assert.equal(x.final.reply, got);
    const dnsblStep = x.stages[0]!.steps.find((s) => s.check === 'dnsbl')!;
    assert.match(String(dnsblStep.inputs!.zen), /127\.0\.0\.4 \(xbl\)/);
  });

  it('outside the netblocks, a blocked sender, a sender not owned, too many recipients: all agree', async () => {
    const cases: Array<{ args: string[]; live: () => Promise<string>; rule: string; stage: string }> = [
      {
        args: ['--listener', 'intercept', '--ip', '127.0.0.40', '--from', 'me@home.test', '--rcpt', 'you@dest.test'],
        live: () => live('127.0.0.40', []),
        rule: 'relay.netblock-gate',
        stage: 'connect',
      },
      {
        args: ['--listener', 'intercept', '--ip', '127.0.0.2', '--from', 'promo@spam.test', '--rcpt', 'you@dest.test'],
        live: () => live('127.0.0.2', [cmd('MAIL FROM:<promo@spam.test>')]),
        rule: 'sender.block',
        stage: 'mail',
      },
      {
        args: ['--listener', 'submission', '--ip', '127.0.0.2', '--user', 'alice@isp.test', '--from', 'bob@isp.test', '--rcpt', 'you@dest.test'],
        live: () =>
          live(
            '127.0.0.2',
            [
              async (c) => (await c.starttls(), await c.cmd('EHLO pc'), undefined),
              cmd(`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`),
              cmd('MAIL FROM:<bob@isp.test>'),
            ],
            'submission',
          ),
        rule: 'identity.envelope-sender',
        stage: 'mail',
      },
    ];
    for (const k of cases) {
      const got = await k.live();
      const x = await explain(k.args);
      assert.equal(x.final.rule, k.rule, JSON.stringify(x.final));
      assert.equal(x.final.stage, k.stage);
      assert.equal(x.final.reply, got, k.rule);
    }
    // Per recipient: the third recipient of a message is refused, live and explained.
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.4' });
    await c.reply();
    await c.cmd('EHLO pc');
    await c.cmd('MAIL FROM:<me@home.test>');
    const replies = [];
    for (const r of ['a@dest.test', 'b@dest.test', 'c@dest.test']) replies.push((await c.cmd(`RCPT TO:<${r}>`)).text);
    await c.quit();
    const x = await explain(['--listener', 'intercept', '--ip', '127.0.0.4', '--from', 'me@home.test', '--rcpt', 'a@dest.test', '--rcpt', 'b@dest.test', '--rcpt', 'c@dest.test']);
    assert.deepEqual(x.recipients.map((r) => r.action), ['accept', 'accept', 'tempfail']);
    assert.equal(x.recipients[2]!.rule, 'quota.recipients:recipientsPerMessage');
    assert.match(replies[2]!, /^452 4\.5\.3 Too many recipients/);
    assert.equal(x.final.action, 'accept', 'the message goes out to the first two');
    assert.equal(x.stages.find((s) => s.label === 'rcpt to <c@dest.test>')!.verdict.rule, 'quota.recipients:recipientsPerMessage');
  });

  it('an accepted message, and --live seeing the gateway\'s counters once the quota is used up', async () => {
    const args = ['--listener', 'intercept', '--ip', '127.0.0.6', '--from', 'me@home.test', '--rcpt', 'you@dest.test'];
    const before = await explain(args);
    assert.equal(before.final.action, 'accept');
    assert.match(before.final.reply, /^250 2\.0\.0 /);
    for (let i = 0; i < 2; i++) {
      const got = await live('127.0.0.6', [cmd('MAIL FROM:<me@home.test>'), cmd('RCPT TO:<you@dest.test>'), data('me@home.test', 'you@dest.test')]);
      assert.match(got, /^250 2\.0\.0 Ok: queued as/);
    }
    const got = await live('127.0.0.6', [cmd('MAIL FROM:<me@home.test>')]);
    const liveX = await explain([...args, '--live']);
    assert.equal(liveX.final.rule, 'quota.messages:messagesPerHour');
    assert.equal(liveX.final.reply.replace(/try again in [^)]*/, ''), got.replace(/try again in [^)]*/, ''));
    const mailStep = liveX.stages.find((s) => s.stage === 'mail')!.steps.find((s) => s.rule.startsWith('quota.messages'))!;
    assert.match(String(mailStep.inputs!.messagesPerHour), /^2 in the last hour of 2$/);
    // Explaining changed nothing: the gateway's count is still 2, not 3.
    const again = await explain([...args, '--live']);
    assert.match(String(again.stages.find((s) => s.stage === 'mail')!.steps.find((s) => s.rule.startsWith('quota.messages'))!.inputs!.messagesPerHour), /^2 in/);
    // Without --live the CLI's own (empty) counters say accept.
    assert.equal((await explain(args)).final.action, 'accept');
  });

  it('prints each rule with its inputs and the final verdict as text', async () => {
    const r = await cli(['policy', 'explain', '--config', gw.configFile, '--listener', 'intercept', '--ip', '127.0.0.3', '--from', 'me@home.test', '--rcpt', 'you@dest.test']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /client 127\.0\.0\.3 on listener intercept \(intercept\): netblock 127\.0\.0\.0\/28 class residential-dynamic/);
    assert.match(r.stdout, /pass +relay\.netblock-gate +ip=127\.0\.0\.3; netblock=127\.0\.0\.0\/28 class residential-dynamic .*\[built-in\]/);
    assert.match(r.stdout, /reject +dnsbl:zen\.xbl +query=3\.0\.0\.127; zen=127\.0\.0\.4 \(xbl\) ttl 1m/);
    assert.match(r.stdout, /\nfinal: reject at connect by dnsbl:zen\.xbl: 554 5\.7\.1 Service unavailable; client host \[127\.0\.0\.3\] listed at zen\.test \(xbl\); see https:\/\/help\.isp\.test\/xbl\?ip=127\.0\.0\.3\n$/);
    const usage = await cli(['policy', 'explain', '--config', gw.configFile, '--ip', '127.0.0.3']);
    assert.equal(usage.code, 2);
  });
});
