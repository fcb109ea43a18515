/**
 * Where a benchmark keeps its spools and journals must be a disk: on tmpfs
 * (or ramfs) every fsync is free, and a figure that rests on "synced before
 * the 250" would not be a disk's. Shared by `npm run bench` and
 * `npm run bench:floor`.
 */
import { spawnSync } from 'node:child_process';

/** The filesystem type under DIR (`stat -f`), e.g. ext2/ext3 (ext4 reports so), xfs, tmpfs. */
export function fsType(dir: string): string {
  const r = spawnSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'unknown';
}

/** DIR's filesystem type; exits (2) with the reason when it is memory and `allowTmpfs` is not set. */
export function diskOrExit(who: string, dir: string, allowTmpfs: boolean): string {
  const fs = fsType(dir);
  if ((fs === 'tmpfs' || fs === 'ramfs') && !allowTmpfs) {
    console.error(`${who}: ${dir} is on ${fs}: fsync costs nothing there, so the figures would not be a disk's. Use --dir on a disk filesystem, or --allow-tmpfs.`);
    process.exit(2);
  }
  return fs;
}
