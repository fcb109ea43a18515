/**
 * CPU time and memory of a process tree from /proc (Linux), for the benchmark:
 * the gateway may run several processes, so every descendant counts. Memory is
 * PSS (proportional set size, /proc/PID/smaps_rollup): pages shared between
 * processes (Postfix's ~60 daemons share their binaries and libraries; a
 * cluster's workers share Node's) count once in all, split between the
 * sharers. Summed RSS counts them once per process and overstates a
 * multi-process peer several times over.
 */
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const TICK_MS = 10; // USER_HZ = 100 on Linux

/** /proc/PID/stat's fields after the command name (in parentheses, and it may contain spaces): rest[0] is the state. */
function statFields(pid: number | 'self'): string[] {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2).split(' ');
}

function stat(pid: number): { ppid: number; cpuMs: number } | undefined {
  try {
    const rest = statFields(pid);
    // utime + stime, plus cutime + cstime: children that already exited and were
    // reaped (Postfix's smtpd processes come and go) still count, once.
    return { ppid: Number(rest[1]), cpuMs: (Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14])) * TICK_MS };
  } catch {
    return undefined;
  }
}

function pssKb(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export function treePids(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = stat(Number(name));
    if (!st) continue;
    const list = children.get(st.ppid) ?? [];
    list.push(Number(name));
    children.set(st.ppid, list);
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(root);
  return out;
}

/** One process's CPU (all its threads, and its reaped children), 0 once it is gone. */
export function procCpuMs(pid: number): number {
  return stat(pid)?.cpuMs ?? 0;
}

/**
 * CPU of this process's children that exited and were reaped (cutime +
 * cstime of /proc/self/stat): read before and after a load generator ran
 * and was waited for, the difference is that generator's whole CPU.
 */
export function reapedChildrenCpuMs(): number {
  const rest = statFields('self');
  return (Number(rest[13]) + Number(rest[14])) * TICK_MS;
}

/** The whole machine's busy and total CPU time so far (/proc/stat, every core): a window's busy share is Δbusy / Δtotal. */
export function machineCpuMs(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  // idle and iowait are the idle ones; steal is time the machine did not get.
  return { busy: (total - f[3]! - f[4]! - f[7]!) * TICK_MS, total: total * TICK_MS };
}

export function treeCpuMs(root: number): number {
  return treePids(root).reduce((sum, p) => sum + (stat(p)?.cpuMs ?? 0), 0);
}

/** PSS of the tree: the fair figure to compare a one-process gateway with a multi-process one. */
export function treePssKb(root: number): number {
  return treePids(root).reduce((sum, p) => sum + pssKb(p), 0);
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** Until the gateway's admin API answers /readyz with 200 (bounded: 30 s); throws if the gateway exits first. */
export async function waitReady(adminPort: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error('gateway exited during start');
    try {
      if ((await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error('gateway not ready');
    await new Promise((r) => setTimeout(r, 50));
  }
}
