/**
 * Every command's usage text, in one place: `smarthost help <command>`,
 * `smarthost <command> --help` and every usage error print these. A test
 * checks that every command (commands.ts) has one and that each option the
 * command accepts appears in it.
 */

const COMMON = `common options:
  -c, --config FILE     the configuration (default ./smarthost.yaml when present,
                        else the embedded defaults)
  -h, --help            this text`;

export const COMMAND_USAGE: Readonly<Record<string, string>> = {
  start: `usage: smarthost start [--config FILE]

Run the gateway in the foreground (logs to stdout). SIGTERM/SIGINT drain and
stop; SIGHUP re-reads the policy files and DKIM keys (as \`smarthost reload\`).

${COMMON}
`,
  'check-config': `usage: smarthost check-config [--config FILE]

Validate everything \`start\` would read (config, policy files, accounts file,
certificate files) without binding a port; exit 1 with "file: key: reason".

${COMMON}
`,
  reload: `usage: smarthost reload [--config FILE]

Ask the running gateway (admin API) to re-read its policy files and DKIM keys;
exit 1 naming file, key and reason when the new policy is refused (the old one
stays in force).

${COMMON}
`,
  policy: `usage: smarthost policy explain --listener NAME --ip ADDR [--user USER] --from ADDR
                        --rcpt ADDR... [--header-from ADDR]... [--size BYTES]
                        [--policy-dir DIR] [--live] [--json] [--config FILE]
       smarthost policy check [--policy-dir DIR] [--config FILE]

  explain               what the policy would decide, rule by rule, without
                        sending; real DNS lookups, empty counters
    --listener NAME     the listener the client connects to
    --ip ADDR           the client's address
    --user USER         the authenticated account (submission listeners)
    --from ADDR         the envelope sender ("" for the null sender)
    --rcpt ADDR         a recipient; repeat for several
    --header-from ADDR  a From: header address; repeat for several
    --size BYTES        the message size
    --policy-dir DIR    a candidate policy directory instead of the configured one
    --live              ask the running gateway (its live counters, read only)
    --json              the report as JSON
  check                 validate a policy directory and summarise it

${COMMON}
`,
  queue: `usage: smarthost queue list [--json] [--config FILE]
       smarthost queue show ID [--json] [--config FILE]
       smarthost queue flush [ID] [--config FILE]
       smarthost queue delete|hold|release ID [--config FILE]

Through the running gateway's admin API:
  list                  every queued message: id, state, size, age, sender,
                        pending recipients, last error
  show ID               one message, as JSON
  flush [ID]            retry now (every deferred message, or one)
  delete ID             remove a message (no bounce)
  hold ID               keep a message out of delivery until released
  release ID            return a held message to delivery
  --json                machine-readable output

${COMMON}
`,
  account: `usage: smarthost account add NAME [--sender ADDR]... [--plan PLAN] [--password-stdin]
       smarthost account passwd NAME [--password-stdin]
       smarthost account suspend|unsuspend NAME
       smarthost account list

Edit the accounts file (a running gateway notices within a second):
  add NAME              a new submission account; prints a generated password
                        unless --password-stdin
  passwd NAME           a new password (generated, or read from stdin)
  suspend|unsuspend NAME
  list                  name, plan, state, senders
  --sender ADDR         an address or @domain the account may send as; repeat
  --plan PLAN           the quota plan (policies/quotas.yaml)
  --password-stdin      read the password from stdin (at least 8 characters)

${COMMON}
`,
  dkim: `usage: smarthost dkim keygen --domain D --selector S [--algo rsa|ed25519] [--bits N]
                        [--active-from ISO] [--retire-at ISO] [--keys-dir DIR]
                        [--json] [--config FILE]
       smarthost dkim check --domain D [--dns IP:PORT]... [--keys-dir DIR] [--json]
                        [--config FILE]

  keygen                write a key pair under the keys directory and print the
                        TXT record to publish
  check                 compare the published TXT records with the keys
  --domain D            the signing domain (d=)
  --selector S          the selector (s=)
  --algo rsa|ed25519    default rsa
  --bits N              RSA key size: 2048 (default), 3072 or 4096
  --active-from ISO     sign with the key from this time on (rotation)
  --retire-at ISO       stop signing with it at this time
  --keys-dir DIR        the keys directory (default: dkim.keysDir of the config)
  --dns IP:PORT         the DNS server to ask; repeat for several
                        (default: relay.dns.servers of the config)
  --json                machine-readable output

${COMMON}
`,
  containment: `usage: smarthost containment show [--account NAME | --ip ADDR] [--json] [--config FILE]
       smarthost containment release --account NAME | --ip ADDR [--config FILE]
       smarthost containment legitimate --account NAME | --ip ADDR [--for DURATION] [--config FILE]

Through the running gateway's admin API:
  show                  subjects contained since start, or one subject's
                        response, score and signals
  release               lift a hold or suspension (held mail stays held:
                        smarthost queue release|delete)
  legitimate            the pattern is theirs: thresholds relaxed for a while
                        (--for; default legitimate.for in containment.yaml,
                        30d), and released
  --account NAME        an account
  --ip ADDR             a client address
  --json                machine-readable output

${COMMON}
`,
};

export const MAIN_USAGE = `usage: smarthost <command> [options]

  start                 run the gateway
  check-config          validate config, policies, accounts; exit 1 on error
  reload                re-read the running gateway's policy files (as SIGHUP)
  policy explain|check  what the policy would decide, rule by rule; validate a policy
  queue                 list|show|flush|delete|hold|release queued mail
  account               add|passwd|suspend|unsuspend|list submission accounts
  dkim                  keygen|check DKIM keys
  containment           show|release|legitimate contained subjects
  help COMMAND          that command's options (also: smarthost COMMAND --help)
`;
