#!/usr/bin/env node
'use strict';
// Thin launcher: the CLI is compiled TypeScript under dist/ (`npm run build`).
require('../dist/src/cli/main.js');
