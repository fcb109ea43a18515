#!/usr/bin/env node
// npm's install step (and `npm test`'s pretest when it is missing): builds
// native/tcp_quickack.c (src/net/quick-ack.ts) with the node-gyp that comes
// with npm. The gateway runs without it and says so at start, so a failed
// build is reported here and does not fail the install; `npm test` fails.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

// Where node (and the npm that came with it) is installed, e.g. /usr.
const prefix = path.join(path.dirname(process.execPath), '..');
// npm names its node-gyp for lifecycle scripts; run directly, look where npm keeps it.
const bundled = path.join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const gyp = [process.env.npm_config_node_gyp, bundled].find((f) => f && fs.existsSync(f));
// Node's own headers where they were installed with it (else node-gyp downloads them).
const nodedir = process.env.npm_config_nodedir || (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined);
const r = gyp
  ? spawnSync(process.execPath, [gyp, 'rebuild', ...(nodedir ? [`--nodedir=${nodedir}`] : [])], { cwd: path.join(__dirname, '..'), stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' })
  : { status: null, error: new Error('node-gyp not found (it comes with npm)') };
if (r.status === 0) {
  console.log('smarthost: native helper built (build/Release/tcp_quickack.node)');
} else {
  const why = r.error ? r.error.message : (r.stderr || r.stdout || '').trim().split('\n').slice(-8).join('\n');
  console.warn(`smarthost: warning: native helper not built; the gateway runs without TCP quick ACKs (needs python3, make and a C compiler).\n${why}`);
}
