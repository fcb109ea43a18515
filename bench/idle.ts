/**
 * The benchmark's idle-connection scenario: opens N connections to the
 * gateway from 13 loopback addresses (127.0.0.2–14: inside the test
 * netblock 127.0.0.0/28, under 1,000 connections each, so no per-address
 * limit is the bound), waits for each greeting, then holds them silent and reads
 * the gateway's PSS (every process). Connections open in batches so the
 * kernel's listen backlog never overflows.
 */
import net from 'node:net';
import { treePssKb } from './proc';

export interface IdleResult {
  workers: number;
  connections: number;
  failed: number;
  pssBeforeMb: number;
  pssAfterMb: number;
  kbPerConnection: number;
}

function openGreeted(port: number, localAddress: string): Promise<net.Socket | undefined> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    const timer = setTimeout(() => done(false), 30_000);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.removeAllListeners('data');
      if (!ok) s.destroy();
      resolve(ok ? s : undefined);
    };
    s.once('data', (d: Buffer) => done(d.toString('latin1').startsWith('220 ')));
    s.once('error', () => done(false));
  });
}

export async function holdIdle(port: number, pid: number, n: number, workers: number): Promise<IdleResult> {
  const before = treePssKb(pid);
  const socks: net.Socket[] = [];
  let failed = 0;
  try {
    for (let i = 0; i < n; i += 250) {
      const batch = await Promise.all(Array.from({ length: Math.min(250, n - i) }, (_, k) => openGreeted(port, `127.0.0.${2 + ((i + k) % 13)}`)));
      for (const s of batch) {
        if (s) socks.push(s);
        else failed++;
      }
    }
    await new Promise((r) => setTimeout(r, 500));
    const after = treePssKb(pid);
    return { workers, connections: socks.length, failed, pssBeforeMb: before / 1024, pssAfterMb: after / 1024, kbPerConnection: socks.length ? (after - before) / socks.length : 0 };
  } finally {
    for (const s of socks) s.destroy();
  }
}
