/**
 * The power-loss test's disk: test/helpers/powercut_fs.py mounted with
 * FUSE over a backing directory (its durability models are described
 * there). `cut()` throws away everything not made durable; run it only
 * after every process using the mount is dead.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';

export type DurabilityModel = 'strict' | 'ext4';

export interface PowerCutStats {
  cuts: number;
  fsync: number;
  fdatasync: number;
  fsyncdir: number;
  /** Directory entries and file bytes the cuts threw away (so far). */
  lost_entries: number;
  resurrected_entries?: number;
  lost_bytes: number;
}

export interface PowerCutMount {
  cut(): Promise<PowerCutStats>;
  stats(): Promise<PowerCutStats>;
  unmount(): Promise<void>;
}

const SCRIPT = path.resolve(__dirname, '../../../test/helpers/powercut_fs.py');

function mounted(mountpoint: string): boolean {
  return readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mountpoint);
}

export async function mountPowerCut(backing: string, mountpoint: string, model: DurabilityModel): Promise<PowerCutMount> {
  await fsp.mkdir(backing, { recursive: true });
  await fsp.mkdir(mountpoint, { recursive: true });
  let log = '';
  const child: ChildProcess = spawn('/usr/bin/python3', [SCRIPT, backing, mountpoint, model], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  for (let i = 0; !mounted(mountpoint); i++) {
    if (child.exitCode !== null || i > 300) {
      child.kill('SIGKILL');
      throw new Error(`powercut_fs did not mount ${mountpoint} (needs python3-fusepy, fuse and /dev/fuse): ${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const control = path.join(mountpoint, '.powercut');
  const stats = async () => JSON.parse(await fsp.readFile(control, 'utf8')) as PowerCutStats;
  return {
    stats,
    async cut() {
      await fsp.writeFile(control, 'cut');
      return stats();
    },
    async unmount() {
      const fusermount = existsSync('/usr/bin/fusermount') ? 'fusermount' : 'fusermount3';
      try {
        execFileSync(fusermount, ['-u', mountpoint], { stdio: 'pipe' });
      } catch {
        execFileSync('umount', ['-l', mountpoint], { stdio: 'pipe' });
      }
      const exited = new Promise((r) => child.once('exit', r));
      if (child.exitCode === null) await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}
