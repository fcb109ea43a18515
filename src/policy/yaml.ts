/**
 * Reading one policy file: YAML syntax errors become ConfigError with the
 * file and line, like the main config; an absent file is `undefined` (every
 * policy file is optional and has a stated default).
 */
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { ConfigError } from '../config/validate';

export function readYaml(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(file, '', `cannot read: ${(err as Error).message}`);
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0]?.line;
    throw new ConfigError(file, line ? `line ${line}` : '', `YAML syntax: ${e.message.split('\n')[0]}`);
  }
  return doc.toJS() ?? undefined;
}
