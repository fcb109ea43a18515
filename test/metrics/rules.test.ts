/**
 * The alert rules and the dashboards as files: `promtool check rules` and
 * `promtool test rules` (prometheus/alerts.test.yml: each alert firing and
 * not firing) pass; every alert has a promtool test; the dashboards are
 * importable (stable uid, a datasource variable, every panel on it).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { ALERTS_FILE, alertRules, DASHBOARD_DIR, REPO, stripComparisons } from './promql';

const run = promisify(execFile);
const PROMTOOL = '/usr/bin/promtool';

describe('alert rules and dashboards', () => {
  it('promtool check rules passes', async () => {
    const { stdout } = await run(PROMTOOL, ['check', 'rules', ALERTS_FILE]);
    assert.match(stdout, /SUCCESS: \d+ rules found/);
  });

  it('promtool test rules passes, with a test for every alert', async () => {
    const testFile = path.join(REPO, 'prometheus', 'alerts.test.yml');
    const { stdout } = await run(PROMTOOL, ['test', 'rules', testFile], { cwd: path.dirname(testFile) });
    assert.match(stdout, /SUCCESS/);
    const tests = YAML.parse(readFileSync(testFile, 'utf8')) as { tests: Array<{ alert_rule_test: Array<{ alertname: string; exp_alerts: unknown[] }> }> };
    for (const { alert } of alertRules()) {
      const cases = tests.tests.flatMap((t) => t.alert_rule_test).filter((c) => c.alertname === alert);
      assert.ok(cases.some((c) => c.exp_alerts.length > 0), `${alert}: no test where it fires`);
      assert.ok(cases.some((c) => c.exp_alerts.length === 0), `${alert}: no test where it stays silent`);
    }
  });

  it('the issue\'s alerts are all there', () => {
    const names = alertRules().map((r) => r.alert);
    for (const a of ['SmarthostDown', 'SmarthostQueueBacklogGrowing', 'SmarthostOldestMessageTooOld', 'SmarthostDeliveryFailureRatioHigh', 'SmarthostAuthFailureSpike', 'SmarthostDnsblLookupsFailing', 'SmarthostPolicyReloadFailed']) {
      assert.ok(names.includes(a), a);
    }
  });

  it('strips comparisons down to the compared series', () => {
    assert.equal(stripComparisons('up{job="smarthost"} == 0'), 'up{job="smarthost"}');
    assert.equal(stripComparisons('(a{x!="1"} / b) > 0.3 and c > 0.05'), '(a{x!="1"} / b) and c');
    assert.equal(stripComparisons('max(x[5m]) > 14400'), 'max(x[5m])');
  });

  it('dashboards are importable: stable uid, a datasource variable used by every panel', () => {
    const files = readdirSync(DASHBOARD_DIR).filter((f) => f.endsWith('.json'));
    assert.deepEqual(files.sort(), ['abuse-desk.json', 'noc-overview.json']);
    const uids = new Set<string>();
    for (const f of files) {
      const d = JSON.parse(readFileSync(path.join(DASHBOARD_DIR, f), 'utf8')) as {
        uid: string; title: string; templating: { list: Array<{ name: string; type: string }> };
        panels: Array<{ type: string; title: string; id: number; datasource?: { uid: string }; targets?: Array<{ datasource: { uid: string } }> }>;
      };
      assert.match(d.uid, /^smarthost-[a-z-]+$/, f);
      assert.ok(!uids.has(d.uid), `duplicate uid ${d.uid}`);
      uids.add(d.uid);
      assert.ok(d.templating.list.some((v) => v.name === 'datasource' && v.type === 'datasource'), `${f}: no datasource variable`);
      const ids = new Set<number>();
      for (const p of d.panels) {
        assert.ok(!ids.has(p.id), `${f}: duplicate panel id ${p.id}`);
        ids.add(p.id);
        if (p.type === 'row') continue;
        assert.equal(p.datasource?.uid, '${datasource}', `${f} "${p.title}"`);
        for (const t of p.targets ?? []) assert.equal(t.datasource.uid, '${datasource}', `${f} "${p.title}"`);
      }
    }
  });
});
