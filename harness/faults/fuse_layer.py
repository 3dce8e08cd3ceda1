"""A passthrough FUSE file system that fails or delays chosen calls on command: the program
behind harness.faults.fuse, run by the system Python (/usr/bin/python3 with Debian's
python3-pyfuse3), never imported by the harness.

    /usr/bin/python3 fuse_layer.py BACKING MOUNTPOINT CONTROL_SOCKET

Every call on MOUNTPOINT is made on BACKING. The control socket takes one JSON line per
connection and answers one: {"cmd": "ping"}, {"cmd": "rule", "rule": RULE} (answers its id),
{"cmd": "clear", "id": N?} (one rule, or all), {"cmd": "report"} (each rule with `calls`, the
matching calls it saw, and `fired`, the calls it failed or delayed, plus the calls per op).
A RULE is {"op": "fsync" | [ops], "path": glob over the path under the mount ("db/*-wal"),
"errno": "EIO" | "ENOSPC" | "EDQUOT" | "EROFS" | ... or null, "nth": N (1-based, counted from
when the rule was set), "every": false (only the Nth) | true (the Nth and every one after),
"delay_ms": D (sleep first; with no errno the call then goes on)}. A failed call fails before
it reaches BACKING (nothing written, renamed or synced), as Chaos Mesh's IOChaos does.

Ops: open create read write flush fsync (fdatasync too) fsyncdir mkdir rmdir unlink rename
(matched on the old or the new path) link symlink mknod setattr (truncate, chmod, ...).
Passthrough rules learnt by the 2026-12-06 probe: O_DIRECT is stripped (unaligned writes
through FUSE fail with EINVAL), a create keeps its open flags, every open gets a file
descriptor of its own (SQLite opens its store several times with different flags).
The mount ends when unmounted (fusermount3 -u); then this program exits.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import shutil
import stat
import sys
from typing import Any

import pyfuse3
import trio
from pyfuse3 import FUSEError

TIMEOUT_S = 1.0                         # entry and attribute cache, seconds


class Rules:
    def __init__(self) -> None:
        self.rules: list[dict[str, Any]] = []
        self.next_id = 1
        self.ops: dict[str, int] = {}
        self.off = False

    def add(self, rule: dict[str, Any]) -> int:
        ops = rule.get("op") or "*"
        rule = {**rule, "op": [ops] if isinstance(ops, str) else list(ops),
                "id": self.next_id, "calls": 0, "fired": 0, "fired_on": []}
        name = rule.get("errno")
        rule["errno_value"] = getattr(errno, name) if name else None
        self.rules.append(rule)
        self.next_id += 1
        return rule["id"]

    def clear(self, rid: int | None) -> None:
        self.rules = [r for r in self.rules if rid is not None and r["id"] != rid]

    def report(self) -> dict[str, Any]:
        return {"rules": [{k: v for k, v in r.items() if k != "errno_value"}
                          for r in self.rules], "ops": dict(self.ops)}

    async def check(self, op: str, *paths: str) -> None:
        """Count the call; fail or delay it where a rule says so. After a power cut every
        call fails with EIO (the disk is gone until the layer is mounted again)."""
        self.ops[op] = self.ops.get(op, 0) + 1
        if self.off:
            raise FUSEError(errno.EIO)
        for r in self.rules:
            if not ("*" in r["op"] or op in r["op"]):
                continue
            if not any(fnmatch.fnmatchcase(p, r.get("path") or "*") for p in paths):
                continue
            r["calls"] += 1
            nth = int(r.get("nth") or 1)
            if r["calls"] < nth or (r["calls"] > nth and not r.get("every")):
                continue
            r["fired"] += 1
            if len(r["fired_on"]) < 20:
                r["fired_on"].append({"op": op, "path": paths[0]})
            if r.get("delay_ms"):
                await trio.sleep(float(r["delay_ms"]) / 1000.0)
            if r["errno_value"] is not None:
                raise FUSEError(r["errno_value"])


class Durability:
    """What a real disk would hold after a power cut (LazyFS's model, kept as undo records):
    from a checkpoint on, a write or truncate that no fsync of its file followed, and a name
    made, moved or removed that no fsync of its parent folder followed, is undone by cut().
    A file's old bytes are read before each unsynced overwrite (new files need none: their
    durable size is 0). Off until checkpoint()."""

    def __init__(self, backing: str) -> None:
        self.backing = backing
        self.on = False
        self.data: dict[str, dict[str, Any]] = {}       # path -> {size, ranges: [(off, old)]}
        self.names: list[dict[str, Any]] = []           # namespace ops, oldest first
        self.stash = os.path.join(backing, ".bxc-stash")
        self.n = 0
        self.lost: dict[str, int] = {}

    def checkpoint(self) -> None:
        """Everything so far is on the disk (a sync); track from here."""
        self.on = True
        self.data.clear()
        self.names.clear()

    def _stash(self, path: str) -> str:
        """Keep `path`'s inode under a hidden name (a hard link), for an undo to put back."""
        os.makedirs(self.stash, exist_ok=True)
        self.n += 1
        kept = os.path.join(self.stash, str(self.n))
        os.link(path, kept, follow_symlinks=False)
        return kept

    def before_write(self, path: str, fd: int, off: int, size: int) -> None:
        if not self.on:
            return
        rec = self.data.get(path)
        if rec is None:
            rec = self.data[path] = {"size": os.fstat(fd).st_size, "ranges": []}
        end = min(off + size, os.fstat(fd).st_size)
        if end > off and off < rec["size"]:
            rec["ranges"].append((off, os.pread(fd, min(end, rec["size"]) - off, off)))

    def before_truncate(self, path: str, new_size: int) -> None:
        if not self.on:
            return
        rec = self.data.get(path)
        cur = os.lstat(path).st_size
        if rec is None:
            rec = self.data[path] = {"size": cur, "ranges": []}
        if new_size < min(cur, rec["size"]):
            with open(path, "rb") as fh:
                fh.seek(new_size)
                rec["ranges"].append((new_size, fh.read(rec["size"] - new_size)))

    def created(self, path: str, kind: str) -> None:
        if self.on:
            self.names.append({"op": kind, "path": path, "dirs": [os.path.dirname(path)]})
            if kind == "create":
                self.data[path] = {"size": 0, "ranges": []}

    def before_remove(self, path: str, kind: str) -> dict[str, Any] | None:
        if not self.on:
            return None
        entry: dict[str, Any] = {"op": kind, "path": path, "dirs": [os.path.dirname(path)]}
        if kind == "unlink":
            entry["kept"] = self._stash(path)
            if path in self.data:
                self.data[entry["kept"]] = self.data.pop(path)
        self.names.append(entry)
        return entry

    def before_rename(self, old: str, new: str) -> None:
        if not self.on:
            return
        entry: dict[str, Any] = {"op": "rename", "path": old, "to": new,
                                 "dirs": sorted({os.path.dirname(old), os.path.dirname(new)})}
        if os.path.lexists(new) and not os.path.isdir(new):
            entry["kept"] = self._stash(new)
            if new in self.data:
                self.data[entry["kept"]] = self.data.pop(new)
        self.names.append(entry)

    def renamed(self, old: str, new: str) -> None:
        for p in list(self.data):
            if p == old or p.startswith(old + "/"):
                self.data[new + p[len(old):]] = self.data.pop(p)

    def synced(self, path: str) -> None:
        self.data.pop(path, None)

    def dir_synced(self, path: str) -> None:
        """A folder's fsync makes the names in it durable (a rename: both its folders)."""
        for e in self.names:
            e["dirs"] = [d for d in e["dirs"] if d != path]
        self.names = [e for e in self.names if e["dirs"]]

    def cut(self) -> dict[str, int]:
        """Undo what a power cut loses; returns the counts of what was undone."""
        lost = {"bytes_files": 0, "names": 0}
        for path, rec in self.data.items():
            try:
                fd = os.open(path, os.O_WRONLY)
            except OSError:
                continue
            try:
                for off, old in reversed(rec["ranges"]):
                    os.pwrite(fd, old, off)
                os.ftruncate(fd, rec["size"])
                lost["bytes_files"] += 1
            finally:
                os.close(fd)
        for e in reversed(self.names):
            try:
                if e["op"] in ("create", "mknod", "symlink", "link"):
                    os.unlink(e["path"])
                elif e["op"] == "mkdir":
                    shutil.rmtree(e["path"])
                elif e["op"] == "rmdir":
                    os.mkdir(e["path"])
                elif e["op"] == "unlink":
                    os.rename(e["kept"], e["path"])
                elif e["op"] == "rename":
                    os.rename(e["to"], e["path"])
                    if e.get("kept"):
                        os.rename(e["kept"], e["to"])
                lost["names"] += 1
            except OSError:
                continue
        shutil.rmtree(self.stash, ignore_errors=True)
        self.data.clear()
        self.names.clear()
        self.on = False
        self.lost = lost
        return lost


class Layer(pyfuse3.Operations):
    enable_writeback_cache = False      # every write reaches us, so a rule can fail it

    def __init__(self, backing: str, rules: Rules) -> None:
        super().__init__()
        self.backing = backing.rstrip("/")
        self.durable = Durability(self.backing)
        self.root_ino = os.lstat(self.backing).st_ino
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: self.backing}
        self.fds: dict[int, int] = {}           # fh -> fd (one per open)
        self.fh_ino: dict[int, int] = {}
        self.dirs: dict[int, list[tuple[str, Any]] | None] = {}
        self.next_fh = 1
        self.rules = rules

    # -- inodes and paths -------------------------------------------------------------
    def _ino(self, backing_ino: int) -> int:
        """The backing root's inode is FUSE's ROOT_INODE, and the other way round."""
        if backing_ino == self.root_ino:
            return pyfuse3.ROOT_INODE
        if backing_ino == pyfuse3.ROOT_INODE:
            return self.root_ino
        return backing_ino

    def _path(self, inode: int) -> str:
        try:
            return self.paths[inode]
        except KeyError:
            raise FUSEError(errno.ENOENT) from None

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.backing)

    def _join(self, parent: int, name: bytes) -> str:
        return os.path.join(self._path(parent), os.fsdecode(name))

    def _attr(self, path: str | None = None, fd: int | None = None) -> pyfuse3.EntryAttributes:
        try:
            st = os.fstat(fd) if fd is not None else os.lstat(path)  # type: ignore[arg-type]
        except OSError as exc:
            raise FUSEError(exc.errno) from None
        e = pyfuse3.EntryAttributes()
        for a in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size",
                  "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize", "st_blocks"):
            setattr(e, a, getattr(st, a))
        e.st_ino = self._ino(st.st_ino)
        e.generation = 0
        e.entry_timeout = TIMEOUT_S
        e.attr_timeout = TIMEOUT_S
        if path is not None:
            self.paths[e.st_ino] = path
        return e

    def _moved(self, old: str, new: str) -> None:
        for ino, p in list(self.paths.items()):
            if p == old:
                self.paths[ino] = new
            elif p.startswith(old + "/"):
                self.paths[ino] = new + p[len(old):]

    @staticmethod
    def _os(fn, *args):
        try:
            return fn(*args)
        except OSError as exc:
            raise FUSEError(exc.errno) from None

    # -- metadata ---------------------------------------------------------------------
    async def lookup(self, parent_inode, name, ctx=None):
        return self._attr(self._join(parent_inode, name))

    async def forget(self, inode_list):
        pass                            # paths stay known: a later call may still name them

    async def getattr(self, inode, ctx=None):
        return self._attr(self._path(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        path = self._path(inode)
        await self.rules.check("setattr", self._rel(path))
        target = self.fds.get(fh, path) if fh is not None else path
        if fields.update_size:
            self.durable.before_truncate(path, attr.st_size)
            self._os(os.truncate, target, attr.st_size)
        if fields.update_mode:
            self._os(os.chmod, target, stat.S_IMODE(attr.st_mode))
        if fields.update_uid or fields.update_gid:
            uid = attr.st_uid if fields.update_uid else -1
            gid = attr.st_gid if fields.update_gid else -1
            if isinstance(target, int):
                self._os(os.fchown, target, uid, gid)
            else:
                self._os(lambda: os.chown(target, uid, gid, follow_symlinks=False))
        if fields.update_atime or fields.update_mtime:
            old = os.lstat(path)
            ns = (attr.st_atime_ns if fields.update_atime else old.st_atime_ns,
                  attr.st_mtime_ns if fields.update_mtime else old.st_mtime_ns)
            if isinstance(target, int):
                self._os(lambda: os.utime(target, ns=ns))
            else:
                self._os(lambda: os.utime(target, ns=ns, follow_symlinks=False))
        return self._attr(path)

    async def readlink(self, inode, ctx):
        return os.fsencode(self._os(os.readlink, self._path(inode)))

    async def statfs(self, ctx):
        st = self._os(os.statvfs, self.backing)
        out = pyfuse3.StatvfsData()
        for a in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                  "f_ffree", "f_favail", "f_namemax"):
            setattr(out, a, getattr(st, a))
        return out

    # -- directories ------------------------------------------------------------------
    async def mkdir(self, parent_inode, name, mode, ctx):
        path = self._join(parent_inode, name)
        await self.rules.check("mkdir", self._rel(path))
        self._os(os.mkdir, path, mode & ~ctx.umask)
        self.durable.created(path, "mkdir")
        return self._attr(path)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        path = self._join(parent_inode, name)
        await self.rules.check("mknod", self._rel(path))
        self._os(lambda: os.mknod(path, mode & ~ctx.umask, rdev))
        self.durable.created(path, "mknod")
        return self._attr(path)

    async def symlink(self, parent_inode, name, target, ctx):
        path = self._join(parent_inode, name)
        await self.rules.check("symlink", self._rel(path))
        self._os(os.symlink, os.fsdecode(target), path)
        self.durable.created(path, "symlink")
        return self._attr(path)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        path = self._join(new_parent_inode, new_name)
        await self.rules.check("link", self._rel(path))
        self._os(lambda: os.link(self._path(inode), path, follow_symlinks=False))
        self.durable.created(path, "link")
        attr = self._attr(self._path(inode))
        return attr

    async def unlink(self, parent_inode, name, ctx):
        path = self._join(parent_inode, name)
        await self.rules.check("unlink", self._rel(path))
        self._os(self.durable.before_remove, path, "unlink")
        self._os(os.unlink, path)

    async def rmdir(self, parent_inode, name, ctx):
        path = self._join(parent_inode, name)
        await self.rules.check("rmdir", self._rel(path))
        self._os(os.rmdir, path)
        self.durable.before_remove(path, "rmdir")

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        old = self._join(parent_inode_old, name_old)
        new = self._join(parent_inode_new, name_new)
        await self.rules.check("rename", self._rel(old), self._rel(new))
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise FUSEError(errno.EINVAL)
        if flags & pyfuse3.RENAME_NOREPLACE and os.path.lexists(new):
            raise FUSEError(errno.EEXIST)
        self._os(self.durable.before_rename, old, new)
        self._os(os.rename, old, new)
        self._moved(old, new)
        self.durable.renamed(old, new)

    async def opendir(self, inode, ctx):
        fh, self.next_fh = self.next_fh, self.next_fh + 1
        self.fh_ino[fh] = inode
        self.dirs[fh] = None
        return fh

    async def readdir(self, fh, start_id, token):
        path = self._path(self.fh_ino[fh])
        if self.dirs.get(fh) is None or start_id == 0:
            try:
                names = sorted(os.listdir(path))
            except OSError as exc:
                raise FUSEError(exc.errno) from None
            entries = []
            for n in names:
                try:
                    entries.append((n, self._attr(os.path.join(path, n))))
                except FUSEError:
                    continue            # gone since the listing
            self.dirs[fh] = entries
        for i, (n, attr) in enumerate(self.dirs[fh][start_id:], start_id):
            if not pyfuse3.readdir_reply(token, os.fsencode(n), attr, i + 1):
                break

    async def releasedir(self, fh):
        self.dirs.pop(fh, None)
        self.fh_ino.pop(fh, None)

    async def fsyncdir(self, fh, datasync):
        path = self._path(self.fh_ino[fh])
        await self.rules.check("fsyncdir", self._rel(path))
        fd = self._os(os.open, path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._os(os.fsync, fd)
        finally:
            os.close(fd)
        self.durable.dir_synced(path)

    # -- files ------------------------------------------------------------------------
    def _new_fh(self, fd: int, inode: int) -> pyfuse3.FileInfo:
        fh, self.next_fh = self.next_fh, self.next_fh + 1
        self.fds[fh] = fd
        self.fh_ino[fh] = inode
        return pyfuse3.FileInfo(fh=fh)

    def _fh_path(self, fh: int) -> str:
        return self._rel(self.paths.get(self.fh_ino.get(fh, -1), "?"))

    async def open(self, inode, flags, ctx):
        path = self._path(inode)
        await self.rules.check("open", self._rel(path))
        if flags & os.O_TRUNC:
            self._os(self.durable.before_truncate, path, 0)
        fd = self._os(os.open, path, flags & ~(os.O_DIRECT | os.O_CREAT))
        return self._new_fh(fd, inode)

    async def create(self, parent_inode, name, mode, flags, ctx):
        path = self._join(parent_inode, name)
        await self.rules.check("create", self._rel(path))
        existed = os.path.lexists(path)
        if existed and flags & os.O_TRUNC:
            self.durable.before_truncate(path, 0)
        fd = self._os(os.open, path, (flags & ~os.O_DIRECT) | os.O_CREAT, mode & ~ctx.umask)
        if not existed:
            self.durable.created(path, "create")
        attr = self._attr(path)
        return self._new_fh(fd, attr.st_ino), attr

    async def read(self, fh, off, size):
        return self._os(os.pread, self.fds[fh], size, off)

    async def write(self, fh, off, buf):
        await self.rules.check("write", self._fh_path(fh))
        path = self.paths.get(self.fh_ino.get(fh, -1))
        if path is not None:
            self._os(self.durable.before_write, path, self.fds[fh], off, len(buf))
        return self._os(os.pwrite, self.fds[fh], buf, off)

    async def flush(self, fh):
        await self.rules.check("flush", self._fh_path(fh))

    async def fsync(self, fh, datasync):
        await self.rules.check("fsync", self._fh_path(fh))
        self._os(os.fdatasync if datasync else os.fsync, self.fds[fh])
        path = self.paths.get(self.fh_ino.get(fh, -1))
        if path is not None:
            self.durable.synced(path)

    async def release(self, fh):
        fd = self.fds.pop(fh, None)
        self.fh_ino.pop(fh, None)
        if fd is not None:
            os.close(fd)


async def serve_control(sock_path: str, rules: Rules, layer: Layer) -> None:
    """One JSON line in, one out, per connection."""
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    await listener.bind(sock_path)
    listener.listen(8)
    while True:
        conn, _ = await listener.accept()
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = await conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            try:
                req = json.loads(data or b"{}")
                cmd = req.get("cmd")
                if cmd == "ping":
                    out: dict[str, Any] = {"ok": True, "pid": os.getpid()}
                elif cmd == "rule":
                    out = {"ok": True, "id": rules.add(req["rule"])}
                elif cmd == "clear":
                    rules.clear(req.get("id"))
                    out = {"ok": True}
                elif cmd == "checkpoint":
                    layer.durable.checkpoint()
                    out = {"ok": True}
                elif cmd == "cut":
                    rules.off = True
                    out = {"ok": True, "lost": layer.durable.cut()}
                elif cmd == "report":
                    out = {"ok": True, **rules.report()}
                else:
                    out = {"ok": False, "error": f"unknown command {cmd!r}"}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            reply = json.dumps(out).encode() + b"\n"
            while reply:
                reply = reply[await conn.send(reply):]


async def run(backing: str, mountpoint: str, control: str) -> None:
    rules = Rules()
    ops = Layer(backing, rules)
    options = set(pyfuse3.default_options) - {"default_permissions"}
    options |= {"fsname=bxc-fuse", "allow_other", "subtype=bxc"}
    pyfuse3.init(ops, mountpoint, options)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_control, control, rules, ops)
            await pyfuse3.main(min_tasks=2, max_tasks=16)
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=False)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    trio.run(run, argv[1], argv[2], argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
