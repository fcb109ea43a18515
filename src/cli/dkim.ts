/**
 * `smarthost dkim keygen|check`: create keys (printing the exact TXT record
 * to publish) and compare what DNS publishes with the keys on disk. Keys
 * live under dkim.keysDir (or --keys-dir), and keygen says which directory
 * that was; a running gateway picks new ones up on reload (SIGHUP /
 * `smarthost reload`) and dated ones on their date.
 */
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { dkimCheck, dkimKeygen } from '../dkim/cli';
import { CliError, configFrom } from './common';

/** What the command accepts (usage.ts describes each; a test compares). */
export const DKIM_OPTIONS = {
  config: { type: 'string', short: 'c' },
  domain: { type: 'string' },
  selector: { type: 'string' },
  algo: { type: 'string', default: 'rsa' },
  bits: { type: 'string' },
  'active-from': { type: 'string' },
  'retire-at': { type: 'string' },
  dns: { type: 'string', multiple: true },
  'keys-dir': { type: 'string' },
  json: { type: 'boolean' },
} satisfies ParseArgsConfig['options'];

export async function runDkim(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: DKIM_OPTIONS,
  });
  const [op] = positionals;
  if (op !== 'keygen' && op !== 'check') throw new CliError(op === undefined ? 'dkim needs keygen or check' : `unknown dkim command "${op}"`, 2);
  if (!values.domain) throw new CliError(`dkim ${op} needs --domain`, 2);
  const cfg = configFrom(values, { serving: false });
  const keysDir = path.resolve(values['keys-dir'] ?? cfg.dkim.keysDir);
  const keysDirFrom = values['keys-dir'] ? '--keys-dir' : cfg.embedded ? 'the embedded default; --keys-dir or --config to choose' : `dkim.keysDir of ${cfg.file}`;
  switch (op) {
    case 'keygen': {
      if (!values.selector) throw new CliError('dkim keygen needs --selector', 2);
      if (values.algo !== 'rsa' && values.algo !== 'ed25519') throw new CliError('--algo must be rsa or ed25519', 2);
      const r = await dkimKeygen({
        keysDir,
        domain: values.domain,
        selector: values.selector,
        algo: values.algo,
        bits: values.bits ? Number(values.bits) : undefined,
        activeFrom: values['active-from'],
        retireAt: values['retire-at'],
      }).catch((err: Error) => {
        throw new CliError(err.message);
      });
      if (values.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      else
        process.stdout.write(
          `keys directory: ${keysDir} (${keysDirFrom})\nprivate key: ${r.privateKeyPath} (mode 0600)\nmetadata:    ${r.metadataPath}\n\nPublish this TXT record:\n  name:  ${r.dnsName}\n  value: ${r.txtRecord}\n\nZone file line:\n${r.zoneLine}\n`,
        );
      return 0;
    }
    case 'check': {
      const r = await dkimCheck({ keysDir, domain: values.domain, dnsServers: values.dns ?? cfg.relay.dns.servers });
      if (values.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      else {
        for (const s of r.selectors) {
          const mark = s.matches ? 'OK      ' : s.published ? 'MISMATCH' : 'MISSING ';
          process.stdout.write(`${mark} ${s.dnsName} (${s.algorithm}, ${s.state}): ${s.reason}\n`);
          if (!s.matches) process.stdout.write(`         publish: ${s.expected}\n`);
        }
        for (const p of r.problems) process.stdout.write(`PROBLEM  ${JSON.stringify(p)}\n`);
        if (r.selectors.length === 0) process.stdout.write(`no keys for ${r.domain} under ${keysDir} (${keysDirFrom})\n`);
      }
      return r.ok ? 0 : 1;
    }
  }
}
