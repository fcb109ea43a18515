/**
 * Loading policy directories: the shipped policies/ loads; missing files
 * have stated defaults; every kind of mistake is refused with the file, the
 * key (or line) and the reason.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { loadPolicy, STAGES } from '../../src/policy/load';
import { LISTENERS, policyDir, removePolicyDirs } from './fixtures';

after(removePolicyDirs);

const NB = 'netblocks:\n  - { cidr: 198.51.100.0/24, class: residential-dynamic }\n';

describe('policy directories', () => {
  it('loads the shipped policies/ with the default listeners', () => {
    const dir = path.resolve(__dirname, '../../../policies');
    const p = loadPolicy(dir, { listeners: [{ name: 'submission', role: 'submission' }, { name: 'submissions', role: 'submission' }, { name: 'intercept', role: 'intercept' }] });
    assert.equal(p.files.length, 5);
    assert.equal(p.netblocks.match('198.51.100.200')?.cls, 'residential-static');
    assert.equal(p.dnsbl.zones[0]?.zone, 'zen.spamhaus.org');
    assert.deepEqual([...p.quotas.plans.keys()], ['residential', 'business', 'unlimited']);
    assert.deepEqual(p.stages.connect.map((r) => r.id), ['relay.netblock-gate', 'client.allow', 'client.block', 'quota.connections', 'dnsbl']);
  });

  it('with only netblocks.yaml: the built-in default rules and accept at the end of each list', async () => {
    const p = loadPolicy(await policyDir({ 'netblocks.yaml': NB }), { listeners: LISTENERS });
    assert.deepEqual(p.files.map((f) => path.basename(f)), ['netblocks.yaml']);
    for (const s of STAGES) assert.equal(p.defaults[s].action, 'accept');
    assert.deepEqual(p.stages.mail.map((r) => r.id), ['relay.auth-required', 'account.state', 'account.network', 'identity.envelope-sender', 'quota.connections', 'quota.messages']);
    assert.equal(p.dnsbl.zones.length, 0);
  });

  it('refuses mistakes with file, key and reason', async () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ 'rules.yml': 'x: 1' }, /rules\.yml: \(top level\): unknown policy file/],
      [{ 'rules.yaml': 'stages:\n  connect:\n    - { id: a, check: nosuch }\n' }, /rules\.yaml: stages\.connect\[0\]\.check: unknown check "nosuch"/],
      [{ 'rules.yaml': 'stages:\n  connect:\n    - { id: a, check: header-from }\n' }, /stages\.connect\[0\]\.check: "header-from" cannot run at connect \(it runs at: data\)/],
      [{ 'rules.yaml': 'stages:\n  rcpt:\n    - { id: a, check: quota, limits: [messagesPerHour] }\n' }, /stages\.rcpt\[0\]\.limits\[0\]: messagesPerHour is not checked at rcpt \(only at mail, data\)/],
      [{ 'rules.yaml': 'stages:\n  rcpt:\n    - { id: a, check: quota, limits: [rcptsPerHour] }\n' }, /limits\[0\]: unknown limit "rcptsPerHour"/],
      [{ 'rules.yaml': 'stages:\n  mail:\n    - { id: a, check: envelope-sender }\n    - { id: a, check: account-state }\n' }, /stages\.mail\[1\]\.id: duplicate rule id "a"/],
      [{ 'rules.yaml': 'stages:\n  mail:\n    - { id: a, check: envelope-sender, listeners: [smtp] }\n' }, /stages\.mail\[0\]\.listeners\[0\]: not a listener name or role: "smtp"/],
      [{ 'rules.yaml': 'stages:\n  mail:\n    - { id: a, check: envelope-sender, classes: [busines] }\n' }, /classes\[0\]: no netblock has class "busines"/],
      [{ 'rules.yaml': 'stages:\n  connect:\n    - { id: a, check: client-list, file: nope.txt, onMatch: reject }\n' }, /stages\.connect\[0\]\.file: cannot read .*nope\.txt: ENOENT/],
      [{ 'rules.yaml': 'stages:\n  connect:\n    - { id: a, check: client-list, file: l.txt }\n', 'l.txt': '' }, /stages\.connect\[0\]\.onMatch: is required/],
      [{ 'rules.yaml': 'stages:\n  connect:\n    - { id: a, check: client-list, file: l.txt, onMatch: reject }\n', 'l.txt': '10.0.0.0/8\nexample.com\n' }, /l\.txt: line 2: not an IP address or CIDR: "example\.com"/],
      [{ 'rules.yaml': 'stages:\n  mail:\n    - { id: a, check: sender-list, file: l.txt, onMatch: reject }\n', 'l.txt': 'ok@example.com\nbad@@x\n' }, /l\.txt: line 2: not an address: "bad@@x"/],
      [{ 'rules.yaml': 'stages:\n  connect:\n    - { id: a, check: dnsbl, zones: [zen] }\n' }, /zones\[0\]: no zone named "zen" in dnsbl\.yaml/],
      [{ 'rules.yaml': 'defaults: { rcpt: { action: reject, reply: no_such_reply } }\n' }, /defaults\.rcpt\.reply: unknown reply "no_such_reply"/],
      [{ 'quotas.yaml': 'plans: { basic: { messagesPerHour: lots } }\n' }, /quotas\.yaml: plans\.basic\.messagesPerHour: expected a whole number/],
      [{ 'quotas.yaml': 'plans: { basic: { mesagesPerHour: 10 } }\n' }, /plans\.basic\.mesagesPerHour: unknown key/],
      [{ 'quotas.yaml': 'plans: { basic: {} }\nclassPlans: { business: basic }\n' }, /classPlans\.business: no netblock has class "business"/],
      [{ 'quotas.yaml': 'plans: { basic: {} }\ndefaultPlan: premium\n' }, /defaultPlan: no plan "premium" \(plans: basic\)/],
      [{ 'quotas.yaml': 'overrides: { ips: { "10.0.0.1/8": { messagesPerHour: 1 } } }\n' }, /overrides\.ips\.10\.0\.0\.1\/8: "10\.0\.0\.1\/8" has host bits set/],
      [{ 'quotas.yaml': 'authFailures: { perIp: { lockout: forever } }\n' }, /authFailures\.perIp\.lockout: not a duration: "forever"/],
      [{ 'identity.yaml': 'submission: { default: { onMismatch: rewrite } }\n' }, /submission\.default\.onMismatch: rewrite is not implemented/],
      [{ 'identity.yaml': 'intercept: { netblocks: [ { cidr: 203.0.113.0/28 } ] }\n' }, /intercept\.netblocks\[0\]\.domains: list the domains/],
      [{ 'dnsbl.yaml': 'zones:\n  - { zone: zen.test, codes: { "127.0.0.x": sbl } }\n' }, /dnsbl\.yaml: zones\[0\]\.codes\.127\.0\.0\.x: not a return code or range/],
    ];
    for (const [files, re] of cases) {
      const dir = await policyDir({ 'netblocks.yaml': NB, ...files });
      assert.throws(
        () => loadPolicy(dir, { listeners: LISTENERS }),
        (e: Error) => (re.test(e.message) && e.message.startsWith(dir)) || assert.fail(`${e.message}\n  !~ ${re}`),
      );
    }
  });

  it('refuses a missing policy directory', () => {
    assert.throws(() => loadPolicy('/nonexistent/policies', { listeners: LISTENERS }), /\/nonexistent\/policies: \(top level\): policy directory does not exist/);
  });
});
