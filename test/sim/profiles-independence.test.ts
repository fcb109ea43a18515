/**
 * The behaviour profiles are blind to the detector: every module in
 * src/sim/profiles imports only its siblings and Node built-ins — never
 * src/containment, the policy layer, containment.yaml or quotas.yaml — so
 * the attackers and legitimate senders cannot be shaped by the thresholds
 * they are measured against. Each profile cites the public description of
 * its shape.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { PROFILES } from '../../src/sim/profiles';

const DIR = path.resolve(__dirname, '../../../src/sim/profiles');

/** Every module specifier a TypeScript source mentions: import/export … from, import(), require(). */
export function specifiers(source: string): string[] {
  const out: string[] = [];
  for (const re of [/\b(?:import|export)\s[^'";]*?from\s*['"]([^'"]+)['"]/g, /\bimport\s*['"]([^'"]+)['"]/g, /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g, /\brequire\s*\(\s*['"]([^'"]+)['"]\s*\)/g]) {
    for (const m of source.matchAll(re)) out.push(m[1]!);
  }
  return out;
}

export function forbidden(source: string): string[] {
  const bad = specifiers(source).filter((s) => !(s.startsWith('./') && !s.includes('/', 2)) && !s.startsWith('node:'));
  // Reading the policy files by name (fs + a path) is as bad as importing the detector.
  for (const word of ['containment.yaml', 'quotas.yaml', 'policies/']) if (source.includes(word)) bad.push(word);
  return bad;
}

describe('behaviour profiles are independent of the detector', () => {
  it('src/sim/profiles imports only its siblings and node: built-ins, and never names a policy file', () => {
    const files = readdirSync(DIR).filter((f) => f.endsWith('.ts'));
    assert.ok(files.length >= 4, `profile modules found: ${files.join(', ')}`);
    for (const f of files) assert.deepEqual(forbidden(readFileSync(path.join(DIR, f), 'utf8')), [], `${f} reaches outside the profiles`);
  });

  it('the check sees the imports it must refuse', () => {
    assert.deepEqual(forbidden("import { loadContainment } from '../../containment/config';"), ['../../containment/config']);
    assert.deepEqual(forbidden("import type { PlanThresholds } from '../../containment/config';"), ['../../containment/config']);
    assert.deepEqual(forbidden("const c = require('../../policy/quotas');"), ['../../policy/quotas']);
    assert.deepEqual(forbidden("readFileSync('policies/containment.yaml')"), ['containment.yaml', 'policies/']);
    assert.deepEqual(forbidden("import { World } from './world';\nimport { createHash } from 'node:crypto';"), []);
  });

  it('every profile names its side and cites the public description of its shape', () => {
    const names = PROFILES.map((p) => p.name);
    assert.equal(new Set(names).size, names.length);
    for (const want of ['address-book-phishing', 'credential-stuffing', 'low-and-slow', 'snowshoe', 'sextortion-blast', 'infected-host', 'compromised-business']) assert.ok(PROFILES.some((p) => p.name === want && p.side === 'attacker'), want);
    for (const want of ['newsletter', 'event-invitation', 'holiday-greetings', 'club-list-forward', 'small-business-onboarding', 'traveller', 'family-photo']) assert.ok(PROFILES.some((p) => p.name === want && p.side === 'legitimate'), want);
    for (const p of PROFILES) assert.ok(p.source.length > 80, `${p.name} cites its source`);
  });
});
