#!/usr/bin/env node
// npm run docs:config: writes docs/configuration-reference.md from the config
// parser (src/config/reference.ts; run after `npm run build`). Refuses, naming
// them, keys without a description or never read.
'use strict';
const { writeFileSync } = require('node:fs');
const path = require('node:path');
const { buildReference, REFERENCE_FILE } = require('../dist/src/config/reference.js');

const root = path.resolve(__dirname, '..');
const { markdown, problems } = buildReference(root);
if (problems.length > 0) {
  process.stderr.write(`docs:config: ${problems.length} problem(s):\n${problems.map((p) => `  ${p}\n`).join('')}`);
  process.exit(1);
}
writeFileSync(path.join(root, REFERENCE_FILE), markdown);
process.stdout.write(`wrote ${REFERENCE_FILE}\n`);
