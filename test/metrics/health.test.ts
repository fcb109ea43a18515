/**
 * Scenario: the health endpoints of a running gateway. /healthz says the
 * process is alive; /readyz is 200 when the listeners are bound and the
 * spool is writable, and 503 with the reason when the spool is not (tests
 * run as root, so a chmod would not stop a write: spool/tmp is replaced by
 * a regular file, then restored). /metrics is served on the same listener.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startGateway, type TestGateway } from '../helpers/gateway';

describe('health endpoints', () => {
  let gw: TestGateway;
  let admin: string;

  before(async () => {
    gw = await startGateway();
    admin = `http://127.0.0.1:${gw.app!.admin.port}`;
  });
  after(async () => {
    await gw.stop();
  });

  it('/healthz is 200', async () => {
    const r = await fetch(`${admin}/healthz`);
    assert.equal(r.status, 200);
    assert.equal(await r.text(), 'ok\n');
  });

  it('/readyz is 200 when up, 503 with the reason when the spool is unwritable, 200 again once fixed', async () => {
    let r = await fetch(`${admin}/readyz`);
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { ready: true });

    const tmp = path.join(gw.app!.spool.dir, 'tmp');
    const saved = `${tmp}.saved`;
    await fsp.rename(tmp, saved);
    await fsp.writeFile(tmp, 'not a directory');
    try {
      r = await fetch(`${admin}/readyz`);
      assert.equal(r.status, 503);
      const body = (await r.json()) as { ready: boolean; failures: string[] };
      assert.equal(body.ready, false);
      assert.equal(body.failures.length, 1, JSON.stringify(body));
      assert.match(body.failures[0]!, /^spool: .*tmp not writable \(ENOTDIR\)$/);
    } finally {
      await fsp.rm(tmp, { force: true });
      await fsp.rename(saved, tmp);
    }
    r = await fetch(`${admin}/readyz`);
    assert.equal(r.status, 200);
  });

  it('/metrics serves the catalogue in the Prometheus text format', async () => {
    const r = await fetch(`${admin}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await r.text();
    for (const name of ['smarthost_connections_total', 'smarthost_queue_messages', 'smarthost_build_info', 'smarthost_process_cpu_seconds_total', 'smarthost_state_degraded']) {
      assert.match(text, new RegExp(`^# HELP ${name} \\S`, 'm'), name);
    }
    assert.match(text, /^smarthost_queue_messages\{state="hold"\} 0$/m);
    assert.match(text, /^smarthost_state_degraded 0$/m);
  });
});
