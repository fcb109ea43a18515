/**
 * Attack surface: the log of failed logins. Users type their password into
 * the user-name field often enough that a failed AUTH's user name must be
 * treated as a secret: the log gets a keyed hash of it (HMAC with a
 * per-install secret: the same typed name gives the same hash, across
 * restarts, so failures can still be correlated; nobody without the key can
 * test guesses against it), never the text, at every level and on every
 * path (wrong password, AUTH LOGIN, lockout refusal). A successful AUTH
 * logs the account.
 *
 * A real `smarthost start` (child process) at log level trace; the test
 * reads its stdout.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { prepareGateway } from '../helpers/gateway';
import { freePort, spawnGateway, type GatewayProcess } from '../helpers/process';
import { authPlain, RawSmtp } from '../helpers/smtp-client';

type Line = Record<string, unknown>;

const TYPED = 'Xk9#pW-horse-battery-42';
const OTHER = 'Zq7$staple-other-secret';
const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('failed AUTH logs a keyed hash of the user name, never the text', { timeout: 120_000 }, () => {
  let dir: string;
  let configFile: string;
  let ports: { submissions: number; admin: number };
  let gw: GatewayProcess | undefined;

  before(async () => {
    ports = { submissions: await freePort(), admin: await freePort() };
    const p = await prepareGateway({
      config: {
        log: { level: 'trace', pretty: false },
        listeners: [{ name: 'submissions', role: 'submission', address: '127.0.0.1', port: ports.submissions, security: 'implicit' }],
        admin: { address: '127.0.0.1', port: ports.admin, token: 'test-admin-token' },
        dkim: { enabled: false },
      },
      // No delays (the test is about the log), a quick address lockout so its refusal is logged too.
      policyFiles: { 'quotas.yaml': 'authFailures:\n  perIp: { window: 15m, delayAfter: 0, lockoutAfter: 4, lockout: 15m }\n' },
    });
    dir = p.dir;
    configFile = p.configFile;
  });
  after(async () => {
    await gw?.kill();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  async function attempt(from: string, cmds: string[]): Promise<number> {
    const c = await RawSmtp.connect(ports.submissions, { localAddress: from, implicitTls: true });
    assert.equal((await c.reply()).code, 220);
    await c.cmd('EHLO laptop.test');
    let code = 0;
    for (const cmd of cmds) code = (await c.cmd(cmd)).code;
    await c.quit();
    return code;
  }

  function lines(text: string): Line[] {
    return text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Line);
  }

  it('the typed name never appears; the same name hashes the same, across a restart; success logs the account', async () => {
    gw = await spawnGateway(configFile, ports.admin);
    assert.equal(await attempt('127.0.0.2', [`AUTH PLAIN ${authPlain(TYPED, 'x')}`]), 535);
    assert.equal(await attempt('127.0.0.2', [`AUTH PLAIN ${authPlain(TYPED, 'y')}`]), 535);
    assert.equal(await attempt('127.0.0.2', ['AUTH LOGIN', b64(TYPED), b64('z')]), 535);
    assert.equal(await attempt('127.0.0.3', [`AUTH PLAIN ${authPlain(OTHER, 'x')}`]), 535);
    // The fourth failure from 127.0.0.2 locks it out; the next attempt is refused before the password check.
    assert.equal(await attempt('127.0.0.2', [`AUTH PLAIN ${authPlain(TYPED, 'w')}`]), 535);
    assert.equal(await attempt('127.0.0.2', [`AUTH PLAIN ${authPlain(TYPED, 'v')}`]), 454);
    assert.equal(await attempt('127.0.0.4', [`AUTH PLAIN ${authPlain('alice@isp.test', 'alice-secret-1')}`]), 235);
    await gw.waitForOutput(/"result":"ok"/);
    await gw.kill('SIGTERM');
    const first = gw.output();

    gw = await spawnGateway(configFile, ports.admin);
    assert.equal(await attempt('127.0.0.5', [`AUTH PLAIN ${authPlain(TYPED, 'u')}`]), 535);
    await gw.waitForOutput(/"result":"fail"/);
    await gw.kill('SIGTERM');
    const second = gw.output();

    for (const text of [first, second]) {
      for (const s of [TYPED, OTHER]) {
        assert.ok(!text.includes(s), `the typed name ${s} is in the log: ${text.split("\n").filter((l) => l.includes(s)).slice(0, 3).join("\n")}`);
        assert.ok(!text.includes(b64(s)), `the typed name ${s} is in the log, base64`);
        assert.ok(!text.toLowerCase().includes(s.toLowerCase()), `the typed name ${s} is in the log, other case`);
      }
    }

    const failed = (text: string) => lines(text).filter((l) => l.evt === 'auth' && l.result === 'fail');
    const f1 = failed(first);
    assert.equal(f1.length, 5, first);
    for (const l of f1) {
      assert.match(String(l.userHash), /^[0-9a-f]{16}$/, JSON.stringify(l));
      assert.equal(l.user, undefined);
    }
    const typedHash = f1[0]!.userHash;
    assert.equal(f1[1]!.userHash, typedHash, 'same name, same hash (PLAIN)');
    assert.equal(f1[2]!.userHash, typedHash, 'same name, same hash (LOGIN)');
    const otherHash = f1.find((l) => l.ip === '127.0.0.3')!.userHash;
    assert.notEqual(otherHash, typedHash);
    assert.equal(failed(second)[0]!.userHash, typedHash, 'same hash after a restart (per-install secret)');
    // Keyed: not the plain digest of the name.
    assert.ok(!createHash('sha256').update(TYPED).digest('hex').startsWith(String(typedHash)));
    assert.ok(!createHash('sha256').update(TYPED.toLowerCase()).digest('hex').startsWith(String(typedHash)));

    const locked = lines(first).find((l) => l.evt === 'auth' && l.result === 'locked');
    assert.ok(locked, first);
    assert.equal(locked.userHash, typedHash);
    const ok = lines(first).find((l) => l.evt === 'auth' && l.result === 'ok');
    assert.equal(ok?.user, 'alice@isp.test');

    const key = path.join(dir, 'spool', 'log-hash.key');
    assert.equal(statSync(key).mode & 0o777, 0o600);
  });
});
