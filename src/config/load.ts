/**
 * Reading the config: a YAML file, or the embedded defaults when none is
 * given (the quick start). YAML syntax errors are reported with the file
 * and line like any other config error.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { EMBEDDED_DEFAULTS } from './defaults';
import { parseConfig, type Config, type ParseOptions } from './schema';
import { ConfigError } from './validate';

export function loadConfigFile(file: string, opts: ParseOptions = {}): Config {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    throw new ConfigError(abs, '', `cannot read: ${(err as Error).message}`);
  }
  return parseConfigText(text, abs, path.dirname(abs), opts);
}

export function parseConfigText(text: string, file: string, baseDir: string, opts: ParseOptions = {}): Config {
  const doc = YAML.parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0]?.line;
    throw new ConfigError(file, line ? `line ${line}` : '', `YAML syntax: ${e.message.split('\n')[0]}`);
  }
  return parseConfig(doc.toJS() ?? {}, file, baseDir, opts);
}

/** --config FILE, else ./smarthost.yaml if present, else the embedded defaults. */
export function loadConfig(file: string | undefined, cwd = process.cwd(), opts: ParseOptions = {}): Config {
  if (file) return loadConfigFile(file, opts);
  const local = path.join(cwd, 'smarthost.yaml');
  if (existsSync(local)) return loadConfigFile(local, opts);
  const cfg = parseConfigText(EMBEDDED_DEFAULTS, '(embedded defaults)', cwd);
  cfg.embedded = true;
  return cfg;
}
