/**
 * Attack: borrow another customer's DKIM identity. A client writes
 * `From: orders@bakery.example` (a hosted customer with its own key) and
 * hopes for a verifying `d=bakery.example`. The gateway must sign d=D only
 * when the client is authorised for D: an account's senders on submission
 * (and for a POP-before-SMTP grant), identity.yaml's netblock/class domains
 * on intercept, dkim.internalHosts (127.0.0.1, ::1) for the gateway's own
 * host; otherwise the ISP's fallback (isp.example) or nothing. Whatever the
 * identity rules let through (`headerFrom: any`, `warnOnly`).
 *
 * Every listener (submission STARTTLS, implicit TLS, intercept, intercept
 * with a POP-before-SMTP grant) × authorised / unauthorised × the From
 * domain / a parent / a subdomain; real SMTP over loopback, subscribers
 * played from 127.0.0.3+ (127.0.0.1 is an internal host), relayed to a
 * test MX, and every signature verified by dkimpy (python3-dkim).
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DKIMPY_PYTHON, dkimpyVerify } from '../dkim/dkimpy';
import { keyAndPublish } from '../dkim/helpers';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { authPlain, RawSmtp } from '../helpers/smtp-client';
import { startTestMx, type TestMx } from '../helpers/test-mx';

const NETBLOCKS = [
  { cidr: '127.0.0.0/29', class: 'residential-dynamic' },
  { cidr: '127.0.0.8/30', class: 'business' },
  { cidr: '127.0.0.12/30', class: 'trial' },
];

const IDENTITY = `
submission:
  default: { envelopeSender: owned, headerFrom: owned }
  open: { envelopeSender: any, headerFrom: any }
intercept:
  classes:
    business: { domains: [parent.example], envelopeSender: any, headerFrom: any }
    trial: { domains: [shop.example] }
  netblocks:
    - { cidr: 127.0.0.4/32, domains: [bakery.example] }
    - { cidr: 127.0.0.5/32, domains: ["*.parent.example"] }
`;

/** header-from enforced, except warnOnly for the trial class (on every listener). */
const RULES = `
stages:
  data:
    - { id: identity.header-from, check: header-from, classes: [residential-dynamic, business] }
    - { id: identity.header-from.trial, check: header-from, classes: [trial], warnOnly: true }
`;

const ACCOUNTS = [
  { name: 'baker@isp.example', password: 'baker-pw-1', senders: ['@bakery.example'], plan: 'open' },
  { name: 'anyone@isp.example', password: 'anyone-pw-1', senders: ['anyone@isp.example'], plan: 'open' },
  { name: 'plain@isp.example', password: 'plain-pw-1', senders: ['plain@isp.example'], plan: 'default' },
  { name: 'parentonly@isp.example', password: 'parent-pw-1', senders: ['@parent.example'], plan: 'open' },
  { name: 'subonly@isp.example', password: 'subonly-pw-1', senders: ['@*.parent.example'], plan: 'open' },
];
const PASSWORD = new Map(ACCOUNTS.map((a) => [a.name, a.password]));

type Via = 'submission' | 'submissions' | 'intercept';

describe('signing is authorised, not inferred from the header From', { timeout: 120_000 }, () => {
  let mx: TestMx;
  let gw: TestGateway;
  let keysDir: string;
  const records: Record<string, string> = {};
  let n = 0;

  before(async () => {
    assert.ok(DKIMPY_PYTHON, 'python3 with dkim (python3-dkim) and nacl is needed to verify signatures');
    mx = await startTestMx();
    keysDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-signing-authority-'));
    // bakery.example: the victim customer; parent.example and deep.parent.example: a domain and a
    // subdomain with keys of their own; shop.example; isp.example: the ISP's fallback.
    for (const domain of ['bakery.example', 'parent.example', 'deep.parent.example', 'shop.example', 'isp.example']) {
      const k = await keyAndPublish(undefined, { keysDir, domain, selector: 's1', algo: 'ed25519' });
      records[k.dnsName] = k.txtRecord;
    }
    gw = await startGateway({
      accounts: ACCOUNTS,
      netblocks: NETBLOCKS,
      policyFiles: { 'identity.yaml': IDENTITY, 'rules.yaml': RULES },
      config: {
        relay: { relayhost: { host: '127.0.0.1', port: mx.port, tlsLevel: 'none' } },
        dkim: { keysDir, signingDomain: 'isp.example' },
        roles: { popBeforeSmtp: { enabled: true, listeners: ['intercept'], ttl: '10m' } },
      },
    });
  });
  after(async () => {
    await gw?.stop();
    await mx?.close();
    if (keysDir) await fsp.rm(keysDir, { recursive: true, force: true });
  });

  /** Sends one message; returns the final reply and, if accepted, the d= of each signature with whether dkimpy verifies it. */
  async function send(via: Via, ip: string, opts: { user?: string; mailFrom: string; headerFrom: string }): Promise<{ reply: string; signatures: Array<{ d: string; ok: boolean }> }> {
    const token = `sa-${++n}-${Date.now()}`;
    const c = await RawSmtp.connect(gw.port(via), { localAddress: ip, implicitTls: via === 'submissions' });
    try {
      assert.equal((await c.reply()).code, 220);
      await c.cmd('EHLO client.test');
      if (via === 'submission') {
        await c.starttls();
        await c.cmd('EHLO client.test');
      }
      if (opts.user) assert.match((await c.cmd(`AUTH PLAIN ${authPlain(opts.user, PASSWORD.get(opts.user)!)}`)).text, /^235 /);
      assert.match((await c.cmd(`MAIL FROM:<${opts.mailFrom}>`)).text, /^250 /);
      assert.match((await c.cmd('RCPT TO:<carol@dest.example>')).text, /^250 /);
      const raw = `From: Someone <${opts.headerFrom}>\r\nTo: carol@dest.example\r\nSubject: ${token}\r\nMessage-ID: <${token}@client.test>\r\n\r\nPay the invoice.\r\n.\r\n`;
      const r = await c.data(raw);
      if (r.code !== 250) return { reply: r.text, signatures: [] };
    } finally {
      await c.quit();
    }
    const deadline = Date.now() + 20_000;
    let got = mx.messages.find((m) => m.data.includes(token));
    while (!got && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 25));
      got = mx.messages.find((m) => m.data.includes(token));
    }
    assert.ok(got, `message ${token} relayed to the test MX`);
    return { reply: '250', signatures: dkimpyVerify(got.data, records) };
  }

  /** Accepted, and signed (verifying, per dkimpy) exactly as `d`, or not at all when d is undefined. */
  async function expectSigned(d: string | undefined, via: Via, ip: string, opts: { user?: string; mailFrom: string; headerFrom: string }): Promise<void> {
    const r = await send(via, ip, opts);
    assert.equal(r.reply, '250', `accepted: ${r.reply}`);
    const what = `${via} from ${ip}${opts.user ? ` as ${opts.user}` : ''}, From: ${opts.headerFrom}`;
    assert.deepEqual(r.signatures, d ? [{ d, ok: true }] : [], what);
  }

  describe('submission (STARTTLS, AUTH)', () => {
    it('an account signs as a domain it owns (@bakery.example) and as that parent of a subdomain From', async () => {
      await expectSigned('bakery.example', 'submission', '127.0.0.3', { user: 'baker@isp.example', mailFrom: 'orders@bakery.example', headerFrom: 'orders@bakery.example' });
      await expectSigned('bakery.example', 'submission', '127.0.0.3', { user: 'baker@isp.example', mailFrom: 'orders@bakery.example', headerFrom: 'news@sub.bakery.example' });
    });

    it('headerFrom: any lets the From through, but not the customer signature: the ISP fallback signs', async () => {
      await expectSigned('isp.example', 'submission', '127.0.0.3', { user: 'anyone@isp.example', mailFrom: 'anyone@isp.example', headerFrom: 'orders@bakery.example' });
      // An account is its identity even on the gateway's own host: internalHosts is for clients without one.
      await expectSigned('isp.example', 'submission', '127.0.0.1', { user: 'anyone@isp.example', mailFrom: 'anyone@isp.example', headerFrom: 'orders@bakery.example' });
    });

    it('a warnOnly header-from rule lets the From through, but not the customer signature', async () => {
      await expectSigned('isp.example', 'submission', '127.0.0.13', { user: 'plain@isp.example', mailFrom: 'plain@isp.example', headerFrom: 'orders@bakery.example' });
    });

    it('"@parent.example" authorises parent.example, not its subdomain deep.parent.example (which has its own key)', async () => {
      await expectSigned('parent.example', 'submission', '127.0.0.3', { user: 'parentonly@isp.example', mailFrom: 'x@parent.example', headerFrom: 'x@deep.parent.example' });
    });

    it('"@*.parent.example" authorises the subdomains, not parent.example itself', async () => {
      await expectSigned('deep.parent.example', 'submission', '127.0.0.3', { user: 'subonly@isp.example', mailFrom: 'x@deep.parent.example', headerFrom: 'x@deep.parent.example' });
      await expectSigned('isp.example', 'submission', '127.0.0.3', { user: 'subonly@isp.example', mailFrom: 'x@sub.parent.example', headerFrom: 'x@sub.parent.example' });
    });
  });

  describe('implicit TLS submission', () => {
    it('authorised → the customer domain; unauthorised (headerFrom: any) → the ISP fallback', async () => {
      await expectSigned('bakery.example', 'submissions', '127.0.0.3', { user: 'baker@isp.example', mailFrom: 'orders@bakery.example', headerFrom: 'orders@bakery.example' });
      await expectSigned('isp.example', 'submissions', '127.0.0.3', { user: 'anyone@isp.example', mailFrom: 'anyone@isp.example', headerFrom: 'orders@bakery.example' });
    });
  });

  describe('intercept (the IP is the identity)', () => {
    it('a residential client with no identity.yaml domains does not get d=bakery.example (the attack)', async () => {
      await expectSigned('isp.example', 'intercept', '127.0.0.3', { mailFrom: 'orders@bakery.example', headerFrom: 'orders@bakery.example' });
    });

    it('the netblock identity.yaml authorises for bakery.example signs as it', async () => {
      await expectSigned('bakery.example', 'intercept', '127.0.0.4', { mailFrom: 'orders@bakery.example', headerFrom: 'orders@bakery.example' });
    });

    it('a class authorised for parent.example signs a sub.parent.example From as the parent', async () => {
      await expectSigned('parent.example', 'intercept', '127.0.0.9', { mailFrom: 'x@sub.parent.example', headerFrom: 'x@sub.parent.example' });
    });

    it('"*.parent.example" signs a subdomain with a key, never the parent', async () => {
      await expectSigned('deep.parent.example', 'intercept', '127.0.0.5', { mailFrom: 'x@deep.parent.example', headerFrom: 'x@deep.parent.example' });
      await expectSigned('isp.example', 'intercept', '127.0.0.5', { mailFrom: 'x@sub.parent.example', headerFrom: 'x@sub.parent.example' });
    });

    it('warnOnly identity (trial class, authorised for shop.example only): bakery.example From accepted, not signed as bakery', async () => {
      await expectSigned('isp.example', 'intercept', '127.0.0.13', { mailFrom: 'orders@shop.example', headerFrom: 'orders@bakery.example' });
      await expectSigned('shop.example', 'intercept', '127.0.0.13', { mailFrom: 'orders@shop.example', headerFrom: 'orders@shop.example' });
    });

    it('the gateway host itself (dkim.internalHosts: 127.0.0.1) signs as any domain with a key; 127.0.0.2 does not', async () => {
      await expectSigned('bakery.example', 'intercept', '127.0.0.1', { mailFrom: 'cron@bakery.example', headerFrom: 'cron@bakery.example' });
      await expectSigned('isp.example', 'intercept', '127.0.0.2', { mailFrom: 'cron@bakery.example', headerFrom: 'cron@bakery.example' });
    });

    it('an unauthorised client never gets a signature aligned with the ISP domain either: From @isp.example stays unsigned', async () => {
      await expectSigned(undefined, 'intercept', '127.0.0.3', { mailFrom: 'ceo@isp.example', headerFrom: 'ceo@isp.example' });
    });
  });

  describe('intercept with a POP-before-SMTP grant (signs as its account)', () => {
    async function grant(user: string, ip: string): Promise<void> {
      const res = await fetch(`http://127.0.0.1:${gw.app!.admin.port}/api/pop-grants`, {
        method: 'POST',
        headers: { authorization: 'Bearer test-admin-token', 'content-type': 'application/json' },
        body: JSON.stringify({ user, ip }),
      });
      assert.equal(res.status, 200, await res.text());
    }

    it("the baker's grant signs bakery.example (and as the parent of a subdomain From); another account's grant does not", async () => {
      await grant('baker@isp.example', '127.0.0.6');
      await expectSigned('bakery.example', 'intercept', '127.0.0.6', { mailFrom: 'baker@isp.example', headerFrom: 'orders@bakery.example' });
      await expectSigned('bakery.example', 'intercept', '127.0.0.6', { mailFrom: 'baker@isp.example', headerFrom: 'news@sub.bakery.example' });
      await grant('anyone@isp.example', '127.0.0.7');
      await expectSigned('isp.example', 'intercept', '127.0.0.7', { mailFrom: 'anyone@isp.example', headerFrom: 'orders@bakery.example' });
    });
  });

  describe('policy explain names the rule', () => {
    async function explain(q: Record<string, string>): Promise<string[]> {
      const res = await fetch(`http://127.0.0.1:${gw.app!.admin.port}/api/policy/explain?${new URLSearchParams({ rcpt: 'carol@dest.example', ...q })}`, {
        method: 'POST',
        headers: { authorization: 'Bearer test-admin-token' },
      });
      assert.equal(res.status, 200);
      const body = (await res.json()) as { signing?: { text: string[] } };
      return body.signing?.text ?? [];
    }

    it('would sign as D with selector S because <rule> / would not sign as D: not authorised (…)', async () => {
      assert.deepEqual(await explain({ listener: 'intercept', ip: '127.0.0.4', from: 'orders@bakery.example' }), [
        'would sign as bakery.example with selector s1 because identity.yaml intercept.netblocks[0] 127.0.0.4/32 domains bakery.example',
      ]);
      assert.deepEqual(await explain({ listener: 'intercept', ip: '127.0.0.3', from: 'orders@bakery.example' }), [
        'would not sign as bakery.example: not authorised (intercept client 127.0.0.3 (class residential-dynamic): no identity.yaml domains for its netblock or class)',
        'would sign as isp.example with selector s1 because dkim.signingDomain',
      ]);
      assert.deepEqual(await explain({ listener: 'submission', ip: '127.0.0.3', user: 'baker@isp.example', from: 'orders@bakery.example' }), [
        'would sign as bakery.example with selector s1 because account baker@isp.example sender @bakery.example',
      ]);
      assert.deepEqual(await explain({ listener: 'intercept', ip: '127.0.0.1', from: 'cron@bakery.example' }), [
        'would sign as bakery.example with selector s1 because dkim.internalHosts 127.0.0.1',
      ]);
      const [line] = await explain({ listener: 'intercept', ip: '127.0.0.3', from: 'ceo@isp.example' });
      assert.match(line!, /^would not sign as isp\.example: not authorised \(.*\); dkim\.signingDomain isp\.example would be aligned with From isp\.example \[dkim\.not-authorised\]$/);
    });
  });
});
