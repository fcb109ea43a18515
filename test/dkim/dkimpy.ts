/**
 * dkimpy (Debian's python3-dkim) as an independent verifier: each
 * DKIM-Signature of a message with its d= and whether it verifies, the
 * public keys given as a map of TXT records (no DNS).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

const SCRIPT = `
import sys, json, re, dkim
recs = json.loads(sys.argv[1])
msg = sys.stdin.buffer.read()
def dnsfunc(name, timeout=5):
    n = (name.decode() if isinstance(name, bytes) else name).rstrip('.')
    v = recs.get(n)
    return v.encode() if v else None
head = msg.split(b'\\r\\n\\r\\n')[0]
sigs = re.findall(rb'(?im)^dkim-signature:([^\\r\\n]*(?:\\r\\n[ \\t][^\\r\\n]*)*)', head)
out = []
for i, s in enumerate(sigs):
    d = re.search(rb'(?:^|;)\\s*d\\s*=\\s*([^;\\s]+)', re.sub(rb'\\r\\n[ \\t]', b' ', s)).group(1).decode()
    out.append({'d': d, 'ok': bool(dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc))})
print(json.dumps(out))
`;

/** A python3 that has dkimpy and PyNaCl (Ed25519), or undefined. */
export const DKIMPY_PYTHON = ['/usr/bin/python3', 'python3'].find((py) => spawnSync(py, ['-c', 'import dkim, nacl'], { timeout: 10_000 }).status === 0);

/** @param records TXT records by name ("s1._domainkey.example.com" → "v=DKIM1; ...") */
export function dkimpyVerify(message: Buffer, records: Readonly<Record<string, string>>): Array<{ d: string; ok: boolean }> {
  assert.ok(DKIMPY_PYTHON, "python3 with dkim and nacl is missing: install the Debian package python3-dkim (npm test's pretest does as root)");
  const r = spawnSync(DKIMPY_PYTHON, ['-c', SCRIPT, JSON.stringify(records)], { input: message, timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr.toString());
  return JSON.parse(r.stdout.toString()) as Array<{ d: string; ok: boolean }>;
}
