/**
 * Modules only some configurations use are loaded when first used, not at
 * start: every gateway process would otherwise carry their code and heap
 * (imapflow alone brought a MIME and charset stack: ~10 MiB of PSS; mailauth
 * ~40 MB RSS). Read from a fresh process that loads every command, as
 * `smarthost start` does, and lists what it required.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { it } from 'node:test';

const COMMANDS = path.resolve(__dirname, '../../src/cli/commands.js');

/** Used only by: an IMAP feedback mailbox, complaint reports, the console's held-message view, Redis state, a generated certificate. */
const ON_FIRST_USE = ['imapflow', 'postal-mime', 'mailauth', 'ioredis', 'selfsigned'];

it('modules of optional features are not loaded with the commands', () => {
  const loaded: string[] = JSON.parse(
    execFileSync(process.execPath, ['-e', `require(${JSON.stringify(COMMANDS)}); console.log(JSON.stringify(Object.keys(require.cache)))`], { encoding: 'utf8' }),
  );
  const packages = new Set(loaded.flatMap((f) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(f)?.[1] ?? []));
  assert.ok(packages.has('pino') && packages.has('yaml'), `read ${loaded.length} modules: the commands were not loaded`);
  assert.deepEqual(ON_FIRST_USE.filter((p) => packages.has(p)), []);
});
