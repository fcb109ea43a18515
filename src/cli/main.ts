/**
 * The `smarthost` command. Each subcommand lives in its own file and its
 * usage text in usage.ts; this one dispatches, answers --help, and turns
 * usage and configuration errors into one clean message (never a stack
 * trace). Exit codes: 0 ok, 1 failure (message on stderr), 2 usage.
 */
import './threadpool';
import { ConfigError } from '../config/validate';
import { COMMANDS } from './commands';
import { CliError } from './common';
import { COMMAND_USAGE, MAIN_USAGE } from './usage';

/** --help or -h among the options (not after `--`, where it would be a value). */
function asksForHelp(args: string[]): boolean {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).some((a) => a === '--help' || a === '-h');
}

/** A refusal by the operating system about a path (ENOENT, EACCES, ENOTDIR, EROFS, …): the machine's state, not a bug. */
function isPathError(err: unknown): err is NodeJS.ErrnoException & { syscall: string; path: string; code: string } {
  const e = err as NodeJS.ErrnoException | undefined;
  return typeof e?.code === 'string' && typeof e.syscall === 'string' && typeof e.path === 'string';
}

/** node:util parseArgs refusals (unknown option, missing value, stray positional). */
function isParseArgsError(err: unknown): err is Error {
  return typeof (err as { code?: unknown })?.code === 'string' && (err as { code: string }).code.startsWith('ERR_PARSE_ARGS_');
}

function help(topic: string | undefined): number {
  if (topic === undefined) {
    process.stdout.write(MAIN_USAGE);
    return 0;
  }
  const usage = COMMAND_USAGE[topic];
  if (!usage) {
    process.stderr.write(`smarthost: unknown command "${topic}"\n${MAIN_USAGE}`);
    return 2;
  }
  process.stdout.write(usage);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) {
    process.stderr.write(MAIN_USAGE);
    return 2;
  }
  if (cmd === 'help' || cmd === '--help' || cmd === '-h') return help(rest[0]);
  const run = COMMANDS[cmd];
  if (!run) {
    process.stderr.write(`smarthost: unknown command "${cmd}"\n${MAIN_USAGE}`);
    return 2;
  }
  if (asksForHelp(rest)) return help(cmd);
  try {
    return await run(rest);
  } catch (err) {
    // A usage error is followed by the command's usage, however the subcommand phrased it.
    if (isParseArgsError(err)) throw new CliError(`${err.message}\n${COMMAND_USAGE[cmd]}`, 2);
    if (err instanceof CliError && err.exitCode === 2) throw new CliError(`${err.message}\n${COMMAND_USAGE[cmd]}`, 2);
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== -1) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof CliError) {
      process.stderr.write(`smarthost: ${err.message.trimEnd()}\n`);
      process.exitCode = err.exitCode;
    } else if (err instanceof ConfigError) {
      // From any command, `start` included: the same "file: key: reason" as check-config.
      process.stderr.write(`smarthost: invalid config: ${err.message}\n`);
      process.exitCode = 1;
    } else if (isPathError(err)) {
      // e.g. a spool.dir that cannot be created: which path, what was tried, why.
      const why = err.message.replace(/^[A-Z]+: /, '').replace(/, \S+ '.*'$/, '');
      process.stderr.write(`smarthost: cannot ${err.syscall} ${err.path}: ${why} (${err.code})\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`smarthost: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
