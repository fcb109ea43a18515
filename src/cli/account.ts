/**
 * `smarthost account …`: edits the account file (atomic write); a running
 * gateway notices the change within a second.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { AccountStore } from '../accounts/store';
import { hashPassword } from '../accounts/password';
import { CliError, configFrom } from './common';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

/** What the command accepts (usage.ts describes each; a test compares). */
export const ACCOUNT_OPTIONS = {
  config: { type: 'string', short: 'c' },
  sender: { type: 'string', multiple: true },
  plan: { type: 'string' },
  'password-stdin': { type: 'boolean' },
} satisfies ParseArgsConfig['options'];

export async function runAccount(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: ACCOUNT_OPTIONS,
  });
  const [op, name] = positionals;
  const cfg = configFrom(values, { serving: false });
  const store = new AccountStore(cfg.accounts.file, 0);
  const needName = () => {
    if (!name) throw new CliError(`account ${op} needs an account name`, 2);
    return name;
  };
  const password = async (): Promise<{ value: string; generated: boolean }> => {
    if (values['password-stdin']) {
      const value = await readStdin();
      if (value.length < 8) throw new CliError('password must be at least 8 characters');
      return { value, generated: false };
    }
    return { value: randomBytes(12).toString('base64url'), generated: true };
  };
  switch (op) {
    case 'add': {
      const n = needName();
      store.load();
      if (store.get(n)) throw new CliError(`account ${n} exists (use passwd to change its password)`);
      const pw = await password();
      const account = await AccountStore.newAccount(n, pw.value, { senders: values.sender, plan: values.plan });
      await store.upsert(n, () => account);
      process.stdout.write(`added ${n}${pw.generated ? ` with password ${pw.value}` : ''}\n`);
      return 0;
    }
    case 'passwd': {
      const n = needName();
      store.load();
      const existing = store.get(n);
      if (!existing) throw new CliError(`no account ${n}`);
      const pw = await password();
      const passwordHash = await hashPassword(pw.value);
      await store.upsert(n, (a) => (a ? { ...a, passwordHash } : a));
      process.stdout.write(`password of ${n} changed${pw.generated ? ` to ${pw.value}` : ''}\n`);
      return 0;
    }
    case 'suspend':
    case 'unsuspend': {
      const n = needName();
      store.load();
      if (!store.get(n)) throw new CliError(`no account ${n}`);
      await store.upsert(n, (a) => (a ? { ...a, suspended: op === 'suspend' } : a));
      process.stdout.write(`${n} ${op}ed\n`);
      return 0;
    }
    case 'list': {
      store.load();
      const rows = store.all().map((a) => [a.name, a.plan, a.suspended ? 'suspended' : 'active', a.senders.join(',')].join('\t'));
      process.stdout.write(`${['NAME', 'PLAN', 'STATE', 'SENDERS'].join('\t')}\n${rows.join('\n')}${rows.length ? '\n' : ''}`);
      return 0;
    }
    default:
      throw new CliError(op === undefined ? 'account needs add, passwd, suspend, unsuspend or list' : `unknown account command "${op}"`, 2);
  }
}
