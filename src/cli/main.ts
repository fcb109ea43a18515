/**
 * The `smarthost` command. Each subcommand lives in its own file; this one
 * only dispatches. Exit codes: 0 ok, 1 failure (message on stderr), 2 usage.
 */
import './threadpool';
import { runAccount } from './account';
import { runCheckConfig } from './check-config';
import { runContainment } from './containment';
import { runDkim } from './dkim';
import { runPolicy } from './policy';
import { runQueue } from './queue';
import { runReload } from './reload';
import { runStart } from './start';
import { CliError } from './common';

const USAGE = `usage: smarthost <command> [options]

  start [--config FILE]                 run the gateway (embedded defaults without --config)
  check-config [--config FILE]          validate config, policies and accounts; exit 1 on error
  reload [--config FILE]                re-read the policy files of the running gateway (as SIGHUP)
  policy explain --listener NAME --ip ADDR [--user U] --from ADDR --rcpt ADDR... [--live] [--json]
                                        what the policy would decide, rule by rule, without sending
  policy check [--policy-dir DIR]       validate a policy directory
  queue list|show ID|flush [ID]|delete ID|hold ID|release ID [--config FILE] [--json]
  account add NAME [--sender ADDR]... [--plan PLAN] [--password-stdin]
  account passwd NAME [--password-stdin]
  account suspend|unsuspend NAME
  account list
  dkim keygen --domain D --selector S [--algo rsa|ed25519] [--bits N] [--active-from ISO]
  dkim check --domain D [--dns IP:PORT]    compare published TXT records with the keys
  containment show [--account N | --ip A]  contained subjects, or one subject's signals and score
  containment release|legitimate --account N | --ip A [--for 30d]
`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'start':
      return runStart(rest);
    case 'check-config':
      return runCheckConfig(rest);
    case 'queue':
      return runQueue(rest);
    case 'policy':
      return runPolicy(rest);
    case 'reload':
      return runReload(rest);
    case 'account':
      return runAccount(rest);
    case 'dkim':
      return runDkim(rest);
    case 'containment':
      return runContainment(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      process.stderr.write(`smarthost: unknown command "${cmd}"\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== -1) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof CliError) {
      process.stderr.write(`smarthost: ${err.message}\n`);
      process.exitCode = err.exitCode;
    } else {
      process.stderr.write(`smarthost: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
