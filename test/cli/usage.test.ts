/**
 * Usage texts: every command answers `smarthost help CMD`, `CMD --help` and
 * `CMD -h` with its own usage; an unknown option prints the refusal and the
 * usage (exit 2), never a parseArgs stack trace; every option a command
 * accepts is in its usage text.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ACCOUNT_OPTIONS } from '../../src/cli/account';
import { CHECK_CONFIG_OPTIONS } from '../../src/cli/check-config';
import { COMMANDS } from '../../src/cli/commands';
import { CONTAINMENT_OPTIONS } from '../../src/cli/containment';
import { DKIM_OPTIONS } from '../../src/cli/dkim';
import { POLICY_CHECK_OPTIONS, POLICY_EXPLAIN_OPTIONS } from '../../src/cli/policy';
import { QUEUE_OPTIONS } from '../../src/cli/queue';
import { RELOAD_OPTIONS } from '../../src/cli/reload';
import { START_OPTIONS } from '../../src/cli/start';
import { COMMAND_USAGE, MAIN_USAGE } from '../../src/cli/usage';
import { runCli } from '../helpers/cli';

const ACCEPTS: Record<string, Array<Record<string, { type: string; short?: string }>>> = {
  start: [START_OPTIONS],
  'check-config': [CHECK_CONFIG_OPTIONS],
  reload: [RELOAD_OPTIONS],
  policy: [POLICY_EXPLAIN_OPTIONS, POLICY_CHECK_OPTIONS],
  queue: [QUEUE_OPTIONS],
  account: [ACCOUNT_OPTIONS],
  dkim: [DKIM_OPTIONS],
  containment: [CONTAINMENT_OPTIONS],
};

describe('usage texts', () => {
  it('every command has one, and it names every option the command accepts', () => {
    assert.deepEqual(Object.keys(COMMAND_USAGE).sort(), Object.keys(COMMANDS).sort(), 'a usage text for every command, and no other');
    assert.deepEqual(Object.keys(ACCEPTS).sort(), Object.keys(COMMANDS).sort(), 'this test knows every command');
    for (const [cmd, sets] of Object.entries(ACCEPTS)) {
      const usage = COMMAND_USAGE[cmd]!;
      assert.ok(usage.startsWith(`usage: smarthost ${cmd}`), cmd);
      for (const opts of sets) {
        for (const [name, o] of Object.entries(opts)) {
          assert.ok(usage.includes(`--${name}`), `smarthost ${cmd}: --${name} is accepted but not in the usage text`);
          if (o.short) assert.ok(usage.includes(`-${o.short}, --${name}`), `smarthost ${cmd}: -${o.short} not in the usage text`);
        }
      }
      assert.ok(MAIN_USAGE.includes(`\n  ${cmd} `), `${cmd} is in the command list`);
    }
  });

  for (const cmd of Object.keys(COMMAND_USAGE)) {
    it(`${cmd}: help, --help after the command, an unknown option`, async () => {
      const sub = cmd === 'policy' ? ['explain'] : cmd === 'queue' ? ['list'] : [];
      for (const args of [['help', cmd], [cmd, '--help'], [cmd, ...sub, '--config', 'x.yaml', '-h']]) {
        const r = await runCli(args);
        assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
        assert.equal(r.stdout, COMMAND_USAGE[cmd], args.join(' '));
      }
      const bad = await runCli([cmd, ...sub, '--no-such-option']);
      assert.equal(bad.code, 2, bad.stderr);
      assert.equal(bad.stdout, '');
      assert.ok(bad.stderr.startsWith("smarthost: Unknown option '--no-such-option'"), bad.stderr);
      assert.ok(bad.stderr.includes(COMMAND_USAGE[cmd]!.trimEnd()), 'followed by the usage');
      assert.doesNotMatch(bad.stderr, /^\s+at |ERR_PARSE_ARGS|TypeError/m);
    });
  }

  it('a missing subcommand, an unknown one, help for an unknown command', async () => {
    const none = await runCli(['queue']);
    assert.equal(none.code, 2);
    assert.ok(none.stderr.startsWith('smarthost: queue needs list, show, flush, delete, hold or release\nusage: smarthost queue list'), none.stderr);
    const unknown = await runCli(['dkim', 'rotate']);
    assert.equal(unknown.code, 2);
    assert.ok(unknown.stderr.startsWith('smarthost: unknown dkim command "rotate"\nusage: smarthost dkim keygen'), unknown.stderr);
    const help = await runCli(['help', 'frobnicate']);
    assert.equal(help.code, 2);
    assert.ok(help.stderr.startsWith('smarthost: unknown command "frobnicate"\nusage: smarthost <command>'), help.stderr);
    const all = await runCli(['--help']);
    assert.equal(all.code, 0);
    assert.equal(all.stdout, MAIN_USAGE);
  });
});
