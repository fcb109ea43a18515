/**
 * Subscriber netblock matching: loading 100,000 prefixes (an IPAM export as
 * a text file, as netblocks.yaml `files:` reads it; and, for comparison, the
 * same as a YAML list) and longest-prefix lookups per second: by address
 * text (what a connection gives us: parse + match) and by number (the trie
 * alone). 80% IPv4 prefixes /12–/30, 20% IPv6 /32–/64; lookups are half
 * inside some prefix, half random. The files are generated here; loading and
 * lookups are measured in a fresh child process, as a gateway start would
 * see them (not inside a heap full of the generator's garbage). Bounded: a
 * few seconds.
 *
 *   node dist/bench/netblock.js [PREFIXES]
 */
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadNetblocks } from '../src/policy/netblocks';
import { formatIp, parseIp } from '../src/policy/ip';

const N = Number(process.argv[2] ?? 100_000);
let seed = 7;
const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
const u32 = () => Math.floor(rnd() * 2 ** 32) >>> 0;

function v4Prefix(): { text: string; n: number; len: number } {
  const len = 12 + Math.floor(rnd() * 19);
  const n = (u32() & ((0xffffffff << (32 - len)) >>> 0)) >>> 0;
  return { text: `${formatIp(Uint32Array.of(n), 4)}/${len}`, n, len };
}

function v6Prefix(): string {
  const len = 32 + Math.floor(rnd() * 33);
  const w = Uint32Array.of(0x20010db8, u32(), 0, 0);
  // Keep the first len−32 bits of the second word (none for a /32).
  w[1] = len === 32 ? 0 : len < 64 ? (w[1]! & ((0xffffffff << (64 - len)) >>> 0)) >>> 0 : w[1]!;
  return `${formatIp(w, 6)}/${len}`;
}

async function main(): Promise<void> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'smarthost-bench-nb-'));
  try {
    const v4: Array<{ n: number; len: number }> = [];
    const lines: string[] = [];
    const classes = ['residential-dynamic', 'residential-static', 'business'];
    const seen = new Set<string>();
    while (lines.length < N) {
      const isV6 = rnd() < 0.2;
      const p = isV6 ? { text: v6Prefix() } : v4Prefix();
      if (seen.has(p.text)) continue;
      seen.add(p.text);
      if (!isV6) v4.push(p as { n: number; len: number });
      lines.push(`${p.text} ${classes[lines.length % 3]}`);
    }
    await fsp.writeFile(path.join(dir, 'ipam.txt'), `${lines.join('\n')}\n`);
    await fsp.writeFile(path.join(dir, 'netblocks.yaml'), 'files:\n  - file: ipam.txt\n');

    await fsp.writeFile(path.join(dir, 'probes.json'), JSON.stringify({ v4: v4.slice(0, 65536).map((p) => [p.n, p.len]) }));
    const out = execFileSync(process.execPath, [__filename, '--measure', dir], { encoding: 'utf8', timeout: 120_000 });
    process.stdout.write(out);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** In a fresh process: load the files, then look up. */
async function measure(dir: string): Promise<void> {
  {
    let t0 = performance.now();
    const nb = loadNetblocks(path.join(dir, 'netblocks.yaml'));
    const loadText = performance.now() - t0;
    const v4 = (JSON.parse(await fsp.readFile(path.join(dir, 'probes.json'), 'utf8')) as { v4: Array<[number, number]> }).v4.map(([n, len]) => ({ n, len }));
    const lines = (await fsp.readFile(path.join(dir, 'ipam.txt'), 'utf8')).trimEnd().split('\n');

    // The same prefixes as a YAML list, for comparison (after the text file, so it cannot slow that one).
    const yamlDir = path.join(dir, 'y');
    await fsp.mkdir(yamlDir);
    await fsp.writeFile(
      path.join(yamlDir, 'netblocks.yaml'),
      `netblocks:\n${lines.map((l) => { const [c, k] = l.split(' '); return `  - { cidr: ${c}, class: ${k} }`; }).join('\n')}\n`,
    );
    t0 = performance.now();
    loadNetblocks(path.join(yamlDir, 'netblocks.yaml'));
    const loadYaml = performance.now() - t0;

    // Probe addresses: half inside a known IPv4 prefix, half random; some IPv6.
    const probes: string[] = [];
    const nums = new Uint32Array(1 << 16);
    for (let i = 0; i < nums.length; i++) {
      const p = v4[Math.floor(rnd() * v4.length)]!;
      const a = i % 2 ? u32() : (p.n | (u32() & (2 ** (32 - p.len) - 1))) >>> 0;
      nums[i] = a;
      probes.push(formatIp(Uint32Array.of(a), 4));
    }
    const probes6 = Array.from({ length: 1 << 14 }, () => formatIp(Uint32Array.of(0x20010db8, u32(), u32(), u32()), 6));

    const rate = (fn: (i: number) => unknown, count: number): number => {
      for (let i = 0; i < 200_000; i++) fn(i); // warm up
      const s = performance.now();
      let hits = 0;
      for (let i = 0; i < count; i++) if (fn(i) !== undefined) hits++;
      const ms = performance.now() - s;
      if (hits < 0) console.log(hits);
      return count / (ms / 1000);
    };
    const COUNT = 3_000_000;
    const textV4 = rate((i) => nb.match(probes[i & 0xffff]!), COUNT);
    const textV6 = rate((i) => nb.match(probes6[i & 0x3fff]!), COUNT);
    const trie = (nb as unknown as { trie: { lookup4(n: number): unknown } }).trie;
    const numV4 = rate((i) => trie.lookup4(nums[i & 0xffff]!), COUNT);
    const scratch = new Uint32Array(4);
    const parseOnly = rate((i) => parseIp(probes[i & 0xffff]!, scratch) || undefined, COUNT);

    const fmt = (n: number) => `${(n / 1e6).toFixed(2)} M/s`;
    console.log(`netblocks: ${nb.size} prefixes (${lines.filter((l) => l.includes(':')).length} IPv6), ${nb.classes.size} classes, node ${process.version}, ${os.cpus()[0]?.model ?? ''}`);
    console.log(`  load from text file (netblocks.yaml files:)  ${loadText.toFixed(0)} ms`);
    console.log(`  load from a YAML list (for comparison)        ${loadYaml.toFixed(0)} ms`);
    console.log(`  lookup IPv4 address text (parse + match)      ${fmt(textV4)}`);
    console.log(`  lookup IPv6 address text (parse + match)      ${fmt(textV6)}`);
    console.log(`  lookup IPv4 number (table only)               ${fmt(numV4)}`);
    console.log(`  parse IPv4 text only                          ${fmt(parseOnly)}`);
  }
}

if (process.argv[2] === '--measure') void measure(process.argv[3]!);
else void main();
