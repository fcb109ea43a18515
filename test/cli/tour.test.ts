/**
 * The README's five-minute tour, run as written: every line of its `sh`
 * block against a gateway started by `smarthost start` on the embedded
 * defaults in a scratch directory (the quick start), `npx smarthost`
 * standing for this checkout's CLI. A command the README shows that fails,
 * or prints nothing, fails here. The embedded ports (2587, 2465, 2525, 8025)
 * are fixed by the quick start; other tests use ports the kernel picks.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { spawnGateway, type GatewayProcess } from '../helpers/process';

const ROOT = path.resolve(__dirname, '../../..');
const CLI = path.resolve(__dirname, '../../src/cli/main.js');
/** The quick start's admin port (the embedded defaults). */
const EMBEDDED_ADMIN_PORT = 8025;

/** The lines of the sh block under "## A five-minute tour", comments removed. */
function tourCommands(): string[] {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.split(/^## A five-minute tour$/m)[1]?.split(/^## /m)[0];
  assert.ok(section, 'README has a "## A five-minute tour" section');
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(block, 'the tour has a sh block');
  return block
    .split('\n')
    .map((l) => l.replace(/\s{2,}#.*$/, '').trim())
    .filter((l) => l !== '');
}

function sh(command: string, cwd: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('bash', ['-o', 'pipefail', '-c', command], { cwd, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

describe("the README's tour", () => {
  let cwd: string;
  let gateway: GatewayProcess;

  before(async () => {
    cwd = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-tour-'));
    await fsp.cp(path.join(ROOT, 'policies'), path.join(cwd, 'policies'), { recursive: true });
    gateway = await spawnGateway(undefined, EMBEDDED_ADMIN_PORT, cwd);
  });
  after(async () => {
    await gateway?.kill('SIGTERM');
    await fsp.rm(cwd, { recursive: true, force: true });
  });

  it('every command runs and says something', async () => {
    const commands = tourCommands();
    assert.ok(commands.length >= 5, `the tour shows ${commands.length} commands`);
    for (const command of commands) {
      const runnable = command.replaceAll('npx smarthost', `${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)}`);
      const r = await sh(runnable, cwd);
      assert.equal(r.code, 0, `${command}\n${r.out}`);
      assert.notEqual(r.out.trim(), '', `${command} printed nothing`);
    }
  });
});
