#!/usr/bin/python3
"""
A FUSE file system that forgets, at a simulated power cut, everything that
was not made durable: the power-loss test's disk (test/spool/powercut.test.ts).

    powercut_fs.py BACKING MOUNTPOINT strict|ext4

Every operation works on the *volatile* state (what the page cache and
dcache would show); what survives a cut is the *durable* state. Writing
"cut" to MOUNTPOINT/.powercut throws the volatile state away (the test kills
the gateway first: nothing is open) and writes the durable image back to
BACKING, which is also the image the mount starts from. Reading .powercut
returns counters as JSON.

Durability model, `strict` (POSIX, nothing more):
  - a file's data (and size) is durable only after fsync/fdatasync of that
    file; a file never synced comes back empty;
  - a directory's entries (create, mkdir, link, unlink, rename) are durable only
    after fsync of that directory; a directory never synced comes back empty;
  - rename is atomic: when either directory of a pending rename is synced,
    the whole rename (both entries) becomes durable, as on every Linux
    journaling file system (the new name is never lost while the old one
    disappears).
`ext4` (ext4 data=ordered with delayed allocation, no periodic commit):
  - any fsync/fdatasync/fsyncdir commits the file system journal: every
    pending directory operation, everywhere, becomes durable;
  - file data is durable only after its own fsync/fdatasync (delalloc: data
    of other files is not allocated, hence not flushed, by the commit),
    except a file renamed over an existing name, whose data the commit
    flushes first (auto_da_alloc: rename-replace durability follows its
    data).
Anything not covered above (times, permissions beyond the mode) is not
modelled.
"""
import errno
import json
import os
import stat
import sys
import threading
import time

try:
    import fusepy as fuse  # Debian's python3-fusepy
except ImportError:  # pragma: no cover
    import fuse

FuseOSError = fuse.FuseOSError
CONTROL = '/.powercut'


class Inode:
    __slots__ = ('ino', 'is_dir', 'mode', 'data', 'entries', 'mtime')

    def __init__(self, ino, is_dir, mode):
        self.ino = ino
        self.is_dir = is_dir
        self.mode = mode
        self.data = bytearray()
        self.entries = {}
        self.mtime = time.time()


class PowerCutFS(fuse.Operations):
    def __init__(self, backing, model):
        self.backing = backing
        self.model = model
        self.mu = threading.RLock()
        self.next_ino = 2
        self.inodes = {}  # volatile: ino -> Inode
        self.d_entries = {}  # durable: dir ino -> {name: ino}
        self.d_data = {}  # durable: file ino -> bytes
        self.kinds = {}  # ino -> (is_dir, mode): fixed at creation
        self.pending_renames = []  # strict: (src_dir, src_name, dst_dir, dst_name, ino)
        self.replaced = set()  # ext4: inodes renamed over an existing name since the last commit
        self.stats = {'cuts': 0, 'fsync': 0, 'fdatasync': 0, 'fsyncdir': 0, 'lost_entries': 0, 'lost_bytes': 0}
        self._load()

    # ---- the image on the backing directory -----------------------------------
    def _load(self):
        self.kinds[1] = (True, 0o40700)
        self.d_entries[1] = {}

        def walk(real, ino):
            for name in sorted(os.listdir(real)):
                p = os.path.join(real, name)
                st = os.lstat(p)
                child = self.next_ino
                self.next_ino += 1
                if stat.S_ISDIR(st.st_mode):
                    self.kinds[child] = (True, st.st_mode)
                    self.d_entries[child] = {}
                    walk(p, child)
                else:
                    self.kinds[child] = (False, st.st_mode)
                    with open(p, 'rb') as f:
                        self.d_data[child] = f.read()
                self.d_entries[ino][name] = child

        walk(self.backing, 1)
        self._restore()

    def _restore(self):
        """The volatile state := the durable state."""
        self.inodes = {}
        for ino, (is_dir, mode) in self.kinds.items():
            n = Inode(ino, is_dir, mode)
            if is_dir:
                n.entries = dict(self.d_entries.get(ino, {}))
            else:
                n.data = bytearray(self.d_data.get(ino, b''))
            self.inodes[ino] = n
        self.pending_renames = []
        self.replaced = set()

    def _save(self):
        """Write the durable image reachable from the root back to the backing directory."""
        def write(real, ino):
            want = self.d_entries.get(ino, {})
            for name in os.listdir(real):
                if name not in want:
                    p = os.path.join(real, name)
                    if os.path.isdir(p) and not os.path.islink(p):
                        import shutil
                        shutil.rmtree(p)
                    else:
                        os.unlink(p)
            for name, child in want.items():
                p = os.path.join(real, name)
                is_dir, mode = self.kinds[child]
                if is_dir:
                    if not os.path.isdir(p):
                        if os.path.exists(p):
                            os.unlink(p)
                        os.mkdir(p, 0o700)
                    write(p, child)
                else:
                    if os.path.isdir(p):
                        import shutil
                        shutil.rmtree(p)
                    with open(p, 'wb') as f:
                        f.write(self.d_data.get(child, b''))

        write(self.backing, 1)

    # ---- durability -----------------------------------------------------------
    def _cut(self):
        def entries():
            return {(ino, name, child) for ino, n in self.inodes.items() if n.is_dir for name, child in n.entries.items()}

        def sizes():
            return {ino: len(n.data) for ino, n in self.inodes.items() if not n.is_dir}

        before_e, before_s = entries(), sizes()
        self._restore()
        after_e, after_s = entries(), sizes()
        self.stats['cuts'] += 1
        # Entries the cut took away, entries it brought back (unlinks and renames not yet durable).
        self.stats['lost_entries'] += len(before_e - after_e)
        self.stats['resurrected_entries'] = self.stats.get('resurrected_entries', 0) + len(after_e - before_e)
        self.stats['lost_bytes'] += sum(max(0, n - after_s.get(ino, 0)) for ino, n in before_s.items())
        self._save()

    def _commit_all_entries(self):
        for ino, n in self.inodes.items():
            if n.is_dir:
                self.d_entries[ino] = dict(n.entries)
        for ino in self.replaced:
            if ino in self.inodes:
                self.d_data[ino] = bytes(self.inodes[ino].data)
        self.replaced = set()
        self.pending_renames = []

    def _sync_file(self, ino):
        self.d_data[ino] = bytes(self.inodes[ino].data)
        if self.model == 'ext4':
            self._commit_all_entries()

    def _sync_dir(self, ino):
        if self.model == 'ext4':
            self._commit_all_entries()
            return
        self.d_entries[ino] = dict(self.inodes[ino].entries)
        keep = []
        for (sd, sn, dd, dn, child) in self.pending_renames:
            if sd != ino and dd != ino:
                keep.append((sd, sn, dd, dn, child))
                continue
            # The rename is one operation: its other half becomes durable with it.
            if sd != ino and self.d_entries.setdefault(sd, {}).get(sn) == child:
                del self.d_entries[sd][sn]
            if dd != ino:
                self.d_entries.setdefault(dd, {})[dn] = child
        self.pending_renames = keep

    # ---- path resolution ------------------------------------------------------
    def _lookup(self, path):
        n = self.inodes[1]
        for part in [p for p in path.split('/') if p]:
            if not n.is_dir or part not in n.entries:
                raise FuseOSError(errno.ENOENT)
            n = self.inodes[n.entries[part]]
        return n

    def _parent(self, path):
        head, name = os.path.split(path.rstrip('/'))
        parent = self._lookup(head or '/')
        if not parent.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return parent, name

    def _new(self, is_dir, mode):
        ino = self.next_ino
        self.next_ino += 1
        n = Inode(ino, is_dir, mode)
        self.inodes[ino] = n
        self.kinds[ino] = (is_dir, mode)
        return n

    # ---- FUSE operations ------------------------------------------------------
    def getattr(self, path, fh=None):
        with self.mu:
            if path == CONTROL:
                return {'st_mode': stat.S_IFREG | 0o600, 'st_nlink': 1, 'st_size': 4096}
            n = self._lookup(path)
            now = n.mtime
            if n.is_dir:
                return {'st_mode': stat.S_IFDIR | (n.mode & 0o7777), 'st_nlink': 2, 'st_size': 4096, 'st_mtime': now, 'st_ctime': now, 'st_atime': now, 'st_ino': n.ino}
            return {'st_mode': stat.S_IFREG | (n.mode & 0o7777), 'st_nlink': 1, 'st_size': len(n.data), 'st_mtime': now, 'st_ctime': now, 'st_atime': now, 'st_ino': n.ino}

    def readdir(self, path, fh):
        with self.mu:
            return ['.', '..'] + list(self._lookup(path).entries.keys())

    def mkdir(self, path, mode):
        with self.mu:
            parent, name = self._parent(path)
            if name in parent.entries:
                raise FuseOSError(errno.EEXIST)
            parent.entries[name] = self._new(True, stat.S_IFDIR | mode).ino
            parent.mtime = time.time()

    def rmdir(self, path):
        with self.mu:
            parent, name = self._parent(path)
            n = self._lookup(path)
            if not n.is_dir:
                raise FuseOSError(errno.ENOTDIR)
            if n.entries:
                raise FuseOSError(errno.ENOTEMPTY)
            del parent.entries[name]

    def unlink(self, path):
        with self.mu:
            parent, name = self._parent(path)
            if name not in parent.entries:
                raise FuseOSError(errno.ENOENT)
            if self.inodes[parent.entries[name]].is_dir:
                raise FuseOSError(errno.EISDIR)
            del parent.entries[name]
            parent.mtime = time.time()

    def create(self, path, mode, fi=None):
        with self.mu:
            if path == CONTROL:
                return 0
            parent, name = self._parent(path)
            if name in parent.entries:
                n = self.inodes[parent.entries[name]]
                n.data = bytearray()
                return n.ino
            n = self._new(False, stat.S_IFREG | mode)
            parent.entries[name] = n.ino
            parent.mtime = time.time()
            return n.ino

    def open(self, path, flags):
        with self.mu:
            if path == CONTROL:
                return 0
            n = self._lookup(path)
            if flags & os.O_TRUNC and not n.is_dir:
                n.data = bytearray()
            return n.ino

    def opendir(self, path):
        with self.mu:
            return self._lookup(path).ino

    def read(self, path, size, offset, fh):
        with self.mu:
            if path == CONTROL:
                return json.dumps(self.stats).encode()[offset:offset + size]
            return bytes(self.inodes[fh].data[offset:offset + size])

    def write(self, path, data, offset, fh):
        with self.mu:
            if path == CONTROL:
                if data.strip() == b'cut':
                    self._cut()
                return len(data)
            n = self.inodes[fh]
            if offset > len(n.data):
                n.data.extend(b'\0' * (offset - len(n.data)))
            n.data[offset:offset + len(data)] = data
            n.mtime = time.time()
            return len(data)

    def truncate(self, path, length, fh=None):
        with self.mu:
            if path == CONTROL:
                return
            n = self.inodes[fh] if fh else self._lookup(path)
            if length < len(n.data):
                del n.data[length:]
            else:
                n.data.extend(b'\0' * (length - len(n.data)))

    def rename(self, old, new):
        with self.mu:
            sp, sn = self._parent(old)
            dp, dn = self._parent(new)
            if sn not in sp.entries:
                raise FuseOSError(errno.ENOENT)
            child = sp.entries[sn]
            if dn in dp.entries:
                if self.inodes[dp.entries[dn]].is_dir:
                    raise FuseOSError(errno.EISDIR)
                self.replaced.add(child)
            del sp.entries[sn]
            dp.entries[dn] = child
            sp.mtime = dp.mtime = time.time()
            self.pending_renames.append((sp.ino, sn, dp.ino, dn, child))

    def link(self, target, source):
        # ln source target: a second name for source's inode (an entry operation like create).
        with self.mu:
            n = self._lookup(source)
            if n.is_dir:
                raise FuseOSError(errno.EPERM)
            parent, name = self._parent(target)
            if name in parent.entries:
                raise FuseOSError(errno.EEXIST)
            parent.entries[name] = n.ino
            parent.mtime = time.time()

    def fsync(self, path, datasync, fh):
        with self.mu:
            self.stats['fdatasync' if datasync else 'fsync'] += 1
            self._sync_file(fh)
            return 0

    def fsyncdir(self, path, datasync, fh):
        with self.mu:
            self.stats['fsyncdir'] += 1
            self._sync_dir(self._lookup(path).ino)
            return 0

    def chmod(self, path, mode):
        with self.mu:
            n = self._lookup(path)
            n.mode = (n.mode & ~0o7777) | (mode & 0o7777)
            return 0

    def chown(self, path, uid, gid):
        return 0

    def utimens(self, path, times=None):
        return 0

    def access(self, path, amode):
        with self.mu:
            if path != CONTROL:
                self._lookup(path)
            return 0

    def statfs(self, path):
        return {'f_bsize': 4096, 'f_frsize': 4096, 'f_blocks': 1 << 20, 'f_bfree': 1 << 19, 'f_bavail': 1 << 19, 'f_files': 1 << 20, 'f_ffree': 1 << 19, 'f_favail': 1 << 19, 'f_namemax': 255}

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return 0

    def releasedir(self, path, fh):
        return 0


def main():
    backing, mountpoint, model = sys.argv[1], sys.argv[2], sys.argv[3]
    if model not in ('strict', 'ext4'):
        sys.exit('model: strict or ext4')
    fs = PowerCutFS(os.path.abspath(backing), model)
    # No kernel caching of names, attributes or data: after a cut every lookup and read comes here.
    fuse.FUSE(fs, mountpoint, foreground=True, nothreads=False, direct_io=True, attr_timeout=0, entry_timeout=0, negative_timeout=0, default_permissions=False)


if __name__ == '__main__':
    main()
