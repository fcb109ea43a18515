/**
 * The configuration reference, docs/configuration-reference.md, made by the
 * parser itself: while the embedded defaults, smarthost.example.yaml and
 * scripts/config-reference/optional-keys.yaml are parsed, the readers of
 * validate.ts tell a recorder every key a section accepts and each value's
 * type, default and example. A key's description is the parser's own
 * (`at.child(key, { doc })`), else the comment on that key's line in
 * smarthost.example.yaml, else in optional-keys.yaml.
 *
 * `npm run docs:config` writes the file; test/config/reference.test.ts fails
 * when it is stale, when a key has no description, or when a key the parser
 * accepts is never read (so has no type).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { EMBEDDED_DEFAULTS } from './defaults';
import { parseConfig } from './schema';
import { At, type KeyMeta, type KeyRecorder } from './validate';

/** Where a value was seen; the example column prefers the first. */
const SOURCES = ['example', 'optional', 'defaults'] as const;
type Source = (typeof SOURCES)[number];

interface KeyInfo {
  types: string[];
  defaults: Map<string, unknown>;
  required?: boolean;
  examples: Partial<Record<Source, unknown>>;
  meta: KeyMeta;
  /** A mapping the parser opened (obj()): a heading, not a row, unless also typed. */
  section: boolean;
}

export class ReferenceRecorder implements KeyRecorder {
  /** In discovery order: a section's keys in the order the parser lists them. */
  readonly keys = new Map<string, KeyInfo>();
  source: Source = 'defaults';

  private get(p: string): KeyInfo {
    let k = this.keys.get(p);
    if (!k) this.keys.set(p, (k = { types: [], defaults: new Map(), examples: {}, meta: {}, section: false }));
    return k;
  }
  section(p: string, keys: readonly string[]): void {
    if (p) this.get(p).section = true;
    for (const k of keys) this.get(p ? `${p}.${k}` : k);
  }
  leaf(p: string, r: { type: string; dflt?: unknown; required: boolean; value: unknown }): void {
    const k = this.get(p);
    if (!k.types.includes(r.type)) k.types.push(r.type);
    k.required = (k.required ?? true) && r.required;
    if (r.dflt !== undefined) k.defaults.set(JSON.stringify(r.dflt), r.dflt);
    if (r.value !== undefined && r.value !== null && k.examples[this.source] === undefined) k.examples[this.source] = r.value;
  }
  meta(p: string, m: KeyMeta): void {
    const k = this.get(p);
    k.meta = { ...k.meta, ...m };
  }
}

export interface Reference {
  markdown: string;
  /** Keys without a description, never read, or with defaults that differ and no words for them. */
  problems: string[];
}

export const REFERENCE_FILE = 'docs/configuration-reference.md';
export const OPTIONAL_KEYS_FILE = 'scripts/config-reference/optional-keys.yaml';

/**
 * @param root the repository (smarthost.example.yaml, scripts/config-reference/)
 * @param extra reads more keys with the recorder after the real parses (the test adds one)
 */
export function buildReference(root: string, extra?: (at: At) => void): Reference {
  const rec = new ReferenceRecorder();
  const example = readFileSync(path.join(root, 'smarthost.example.yaml'), 'utf8');
  const optionalFile = path.join(root, OPTIONAL_KEYS_FILE);
  const optional = readFileSync(optionalFile, 'utf8');

  rec.source = 'defaults';
  parseConfig(YAML.parse(EMBEDDED_DEFAULTS), '(embedded defaults)', root, { serving: false, recorder: rec });
  rec.source = 'example';
  parseConfig(YAML.parse(example), 'smarthost.example.yaml', root, { serving: false, recorder: rec });
  rec.source = 'optional';
  for (const doc of YAML.parseAllDocuments(optional)) {
    parseConfig(doc.toJS(), OPTIONAL_KEYS_FILE, path.dirname(optionalFile), { serving: false, recorder: rec });
  }
  rec.source = 'example';
  extra?.(new At('(extra)', '', rec));

  const comments = exampleComments(example);
  for (const [p, c] of exampleComments(optional)) if (!comments.has(p)) comments.set(p, c);
  return render(rec, comments);
}

// ---------------------------------------------------------------- comments

/**
 * Key path → the comment that documents it in an example YAML file: the
 * comment on the key's line (with its continuation lines aligned under it),
 * else the comment lines right above the key. Commented-out keys
 * (`# key: value  # what it is`) count when they carry their own comment.
 */
export function exampleComments(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const lines = text.split('\n');
  let stack: Array<{ indent: number; path: string }> = [];
  let above: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith('---')) {
      stack = [];
      above = [];
      continue;
    }
    const real = /^(\s*)(- )?([A-Za-z_][\w-]*):(\s.*)?$/.exec(line);
    const commented = real ? null : /^(\s*)#( *)(- )?([A-Za-z_][\w-]*):(\s.*)?$/.exec(line);
    if (!real && !commented) {
      const c = /^\s*#\s?(.*)$/.exec(line);
      above = c ? [...above, c[1]!.trim()] : [];
      continue;
    }
    const indent = real ? real[1]!.length : commented![1]!.length + Math.max(0, commented![2]!.length - 1);
    const dash = real ? real[2] : commented![3];
    const key = real ? real[3]! : commented![4]!;
    const rest = (real ? real[4] : commented![5]) ?? '';
    const keyIndent = dash ? indent + 2 : indent;
    stack = stack.filter((s) => s.indent < (dash ? indent : keyIndent));
    let parent = stack.length ? stack[stack.length - 1]!.path : '';
    if (dash) {
      parent = `${parent}[]`;
      stack.push({ indent, path: parent });
    }
    const p = parent ? `${parent}.${key}` : key;
    stack.push({ indent: keyIndent, path: p });

    const hash = trailingHash(rest);
    let text: string | undefined;
    if (hash >= 0) {
      const col = line.length - rest.length + hash;
      const parts = [rest.slice(hash + 1).trim()];
      // Continuation: a comment-only line whose text starts under this comment.
      while (i + 1 < lines.length && lines[i + 1]!.length > col && lines[i + 1]![col] === '#' && /^\s*(#\s*)?$/.test(lines[i + 1]!.slice(0, col))) {
        parts.push(lines[++i]!.slice(col + 1).trim());
      }
      text = parts.join(' ');
    } else if (real && !dash && above.length > 0) {
      text = above.join(' ');
    }
    if (text && !out.has(p)) out.set(p, text);
    above = [];
  }
  return out;
}

/** Index of a `#` starting a comment in a YAML value (not inside quotes), or -1. */
function trailingHash(s: string): number {
  let quote = '';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (quote) {
      if (ch === quote) quote = '';
    } else if (ch === '"' || ch === "'") quote = ch;
    else if (ch === '#' && (i === 0 || /\s/.test(s[i - 1]!))) return i;
  }
  return -1;
}

// ---------------------------------------------------------------- rendering

function parentOf(p: string): string {
  if (p.endsWith('[]')) return p.slice(0, -2);
  const dot = p.lastIndexOf('.');
  return dot < 0 ? '' : p.slice(0, dot);
}

function flow(v: unknown): string {
  return YAML.stringify(v, { collectionStyle: 'flow', lineWidth: 0 }).trim();
}

function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

const STRING_LIKE = new Set(['string']);

function typeOf(k: KeyInfo): string {
  if (k.meta.type) return k.meta.type;
  let types = k.types.filter((t) => !STRING_LIKE.has(t));
  if (types.length === 0) types = [...k.types];
  if (k.section) types.push('mapping');
  return types.join(' or ');
}

function render(rec: ReferenceRecorder, comments: Map<string, string>): Reference {
  const problems: string[] = [];
  const keys = new Map(rec.keys);

  // A list whose items are read one by one reads as "list of <item type>".
  for (const [p, k] of keys) {
    const parent = p.endsWith('[]') ? keys.get(parentOf(p)) : undefined;
    if (!parent || k.types.length === 0 || k.section) continue;
    parent.types = parent.types.map((t) => (t === 'list' ? `list of ${typeOf(k)}` : t));
    keys.delete(p);
  }

  const children = new Map<string, string[]>();
  for (const p of keys.keys()) {
    const parent = parentOf(p);
    children.set(parent, [...(children.get(parent) ?? []), p]);
  }
  const rowsUnder = (p: string): string[] => (children.get(p) ?? []).flatMap((c) => [c, ...rowsUnder(c)]);

  const row = (p: string): string | undefined => {
    const k = keys.get(p)!;
    if (k.types.length === 0) {
      if (!k.section && !p.endsWith('[]')) problems.push(`${p}: accepted but never read while the example and ${OPTIONAL_KEYS_FILE} are parsed (give it a value in one of them)`);
      return undefined;
    }
    const doc = k.meta.doc ?? comments.get(p);
    if (!doc) problems.push(`${p}: no description (a comment on its line in smarthost.example.yaml, or at.child('${p.split('.').pop()}', { doc }) in the parser)`);
    let dflt: string;
    if (k.meta.default !== undefined) dflt = k.meta.default;
    else if (k.required) dflt = '**required**';
    else if (k.defaults.size === 0) dflt = '—';
    else if (k.defaults.size > 1) {
      problems.push(`${p}: the default differs from read to read (${[...k.defaults.keys()].join(', ')}): say it in words with at.child(key, { default })`);
      dflt = '?';
    } else dflt = `\`${cell(flow([...k.defaults.values()][0]))}\``;
    const ex = SOURCES.map((s) => k.examples[s]).find((v) => v !== undefined);
    return `| \`${p}\` | ${cell(typeOf(k))} | ${dflt} | ${cell(doc ?? '').replace(/</g, '&lt;')} | ${ex === undefined ? '' : `\`${cell(flow(ex))}\``} |`;
  };

  const top = children.get('') ?? [];
  const leaves = top.filter((p) => !children.has(p));
  const out: string[] = [HEADER];
  const table = (paths: string[]): void => {
    out.push('| Key | Type | Default | Description | Example |', '|---|---|---|---|---|');
    for (const p of paths) {
      const r = row(p);
      if (r) out.push(r);
    }
    out.push('');
  };
  if (leaves.length) {
    out.push('## Top level', '');
    table(leaves);
  }
  for (const p of top.filter((q) => children.has(q))) {
    out.push(`## \`${p}\``, '');
    const intro = keys.get(p)!.meta.doc;
    if (intro) out.push(intro, '');
    table([p, ...rowsUnder(p)]);
  }
  out.push('## Embedded defaults', '', 'With no config file (`npm start`, the quick start) the gateway runs on these:', '', '```yaml', EMBEDDED_DEFAULTS.trim(), '```', '');
  return { markdown: out.join('\n'), problems };
}

const HEADER = `<!-- Generated by \`npm run docs:config\` from the config parser (src/config/reference.ts). Do not edit: test/config/reference.test.ts fails when this file is out of date. -->
# Configuration reference

Every key of the config file (\`smarthost start --config FILE\`), as the parser
reads it. Unknown keys are errors. Durations are written \`500ms\`, \`30s\`,
\`5m\`, \`2h\`, \`5d\` (a bare number is milliseconds); sizes \`512k\`, \`25MB\`,
\`1GB\`. Relative paths are resolved against the config file's directory.
\`listeners[]\` is a key of each list item; \`<domain>\` stands for a key
that is data. Default \`—\`: unset. Examples come from
\`smarthost.example.yaml\` (a commented production config) or, for keys it
does not show, \`${OPTIONAL_KEYS_FILE}\`. Policy files (\`policies/*.yaml\`)
are described in [policy.md](policy.md). \`smarthost check-config\` checks a config.
`;
