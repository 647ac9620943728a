"""Checkout: materialise a version in a directory, through which no write can silently
reach a stored object.

Modes: ``reflink`` clones each object (copy-on-write: a write to the checkout never
reaches the store; XFS, btrfs, bcachefs, ZFS 2.2+), ``link`` hard-links it (instant and no
space on any filesystem, but the checkout *is* the stored object: a write through it, which
read-only permissions do not stop for root, alters the object; the store records each
object's stat and the next use that finds it changed rehashes it and flags the version
damaged), ``copy`` copies it. ``auto`` (the default) takes the first that works in that
order; across filesystems that is a copy.

A checkout marks itself with ``.stylegan-checkout.json`` (ref, id, modes, files), and
``--replace`` swaps out only a directory that is such a checkout and holds nothing else:
never one holding the store, never one with other files.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.store.base import (
    CHECKOUT_MARKER,
    failpoint,
    log,
    now,
    read_json_record,
)
from stylegan_ops.store.model import Entry, Manifest, Version, check_path
from stylegan_ops.store.objects import REPAIR, Stat, stat_key
from stylegan_ops.store.records import RecordLayer

MODES = ("auto", "reflink", "link", "copy")
FICLONE = 0x40049409  # _IOW(0x94, 9, int): clone a whole file, Linux ≥ 4.5
NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOTTY,
              errno.ENOSYS, errno.EPERM}
NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
AT_FDCWD = -100
RENAME_EXCHANGE = 2


def _renameat2() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None


_RENAMEAT2 = _renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE); False where unsupported."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def reflink(src: Path | str, dst: str) -> None:
    """Clone ``src`` to the new file ``dst`` sharing its blocks (copy-on-write)."""
    sfd = os.open(src, os.O_RDONLY)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
        except OSError:
            os.close(dfd)
            os.unlink(dst)
            raise
        os.close(dfd)
    finally:
        os.close(sfd)


def _sibling(dest: Path, kind: str) -> Path:
    return dest.parent / f".{dest.name}.tmp-{kind}-{os.getpid()}-{os.urandom(4).hex()}"


class CheckoutLayer(RecordLayer):
    """Checkouts of versions."""

    def checkout(self, text: str, dest: Path, verify: bool = False, replace: bool = False,
                 mode: str = "auto") -> Version:
        """Materialise a version read-only at ``dest``; ``replace`` swaps out a previous
        checkout there once the new one is complete. ``verify`` rehashes every object
        first (otherwise only those whose stat changed since they were last known good)."""
        if mode not in MODES:
            raise StageError(f"unknown checkout mode {mode!r}: use one of {', '.join(MODES)}")
        version = self.resolve(text)
        manifest = self.manifest(version.id)
        if any(e.path == CHECKOUT_MARKER for e in manifest.entries):
            raise StageError(f"{version.ref} holds a file named {CHECKOUT_MARKER}, which "
                             "checkout reserves for its marker")
        dest = Path(dest)
        with self.maybe_locked() as writable, self._dest_lock(dest, writable):
            old = self._check_target(dest, replace)
            problems, good = self.check_objects(version.ref, manifest.entries, full=verify,
                                                record=writable)
            if problems:
                p = problems[0]
                raise StageError(f"{version.ref} is damaged ({len(problems)} files, first: "
                                 f"{p.path} {p.problem}); nothing checked out; {REPAIR}")
            if writable:
                self._clean_stale(dest)
            tmp = _sibling(dest, "checkout")
            try:
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    tmp.mkdir()
                except OSError as exc:
                    raise StageError(f"cannot create a checkout beside {dest}: "
                                     f"{exc.strerror}") from exc
                modes, linked = self._materialise(manifest, tmp, dest, mode)
                known = self._after_linking(version, manifest, linked, good, writable)
                marker = {"stylegan_checkout": 1, "ref": version.ref, "id": version.id,
                          "store": str(self.root.resolve()), "modes": modes, "created": now(),
                          "files": [e.path for e in manifest.entries]}
                (tmp / CHECKOUT_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
                failpoint("checkout-before-swap")
                known.update(self._swap_in(tmp, dest, old, writable, known))
                if writable:
                    self._remember_good(known)  # once: each write rewrites its shards
            except OSError as exc:
                raise StageError(f"cannot check out {version.ref} into {dest}: "
                                 f"{exc.strerror or exc}") from exc
            finally:
                if os.path.lexists(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
        return version

    # --- the target -------------------------------------------------------------------

    @contextlib.contextmanager
    def _dest_lock(self, dest: Path, writable: bool) -> Iterator[None]:
        """One checkout at a time into one directory (two tries of a task, say)."""
        if not writable:
            yield
            return
        key = hashlib.sha256(os.fsencode(os.path.abspath(dest))).hexdigest()[:32]
        with self._lock(self.root / "state" / "locks" / f"checkout-{key}", exclusive=True):
            yield

    def _check_target(self, dest: Path, replace: bool) -> dict[str, Any] | None:
        """Refuse any target but an absent or empty directory or, with ``replace``, a
        previous checkout holding nothing else; returns that checkout's marker."""
        store = self.root.resolve()
        target = dest.resolve() if os.path.lexists(dest) else \
            dest.parent.resolve() / dest.name
        if target == store or target.is_relative_to(store):
            raise StageError(f"checkout target {dest} is inside the version store {self.root}")
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StageError(f"cannot use checkout target {dest}: {exc.strerror}") from exc
        if stat.S_ISLNK(st.st_mode):
            raise StageError(f"checkout target {dest} is a symbolic link; name the real "
                             "directory")
        if not stat.S_ISDIR(st.st_mode):
            raise StageError(f"checkout target {dest} exists and is not a directory")
        if store.is_relative_to(target):
            raise StageError(f"refusing to check out into {dest}: it holds the version store "
                             f"{self.root}")
        try:
            empty = not os.listdir(dest)
        except OSError as exc:
            raise StageError(f"cannot read checkout target {dest}: {exc.strerror}") from exc
        if empty:
            return None
        if not replace:
            raise StageError(f"checkout target is not an empty directory: {dest} (--replace "
                             "swaps out a previous checkout)")
        return self._previous_checkout(dest, st.st_dev)

    def _previous_checkout(self, dest: Path, dev: int) -> dict[str, Any]:
        """The marker of the checkout at ``dest``, if it holds nothing but that checkout."""
        try:
            marker = read_json_record(dest / CHECKOUT_MARKER, CHECKOUT_MARKER)
        except StageError as exc:
            raise StageError(f"refusing to replace {dest}: it is not a checkout (no "
                             f"readable {CHECKOUT_MARKER}: {exc})") from exc
        files = marker.get("files") if isinstance(marker, dict) else None
        if (not isinstance(marker, dict) or marker.get("stylegan_checkout") != 1
                or not isinstance(files, list) or not all(isinstance(f, str) for f in files)):
            raise StageError(f"refusing to replace {dest}: its {CHECKOUT_MARKER} is not a "
                             "checkout marker")
        known = set(files)

        def fail(exc: OSError) -> None:
            raise StageError(f"refusing to replace {dest}: cannot read "
                             f"{exc.filename}: {exc.strerror}")

        for root, dirs, names in os.walk(dest, onerror=fail):
            rel_root = os.path.relpath(root, dest)
            for d in dirs:
                st = os.lstat(os.path.join(root, d))
                if stat.S_ISLNK(st.st_mode) or st.st_dev != dev:
                    raise StageError(f"refusing to replace {dest}: {os.path.join(root, d)} is "
                                     "a link or another filesystem, not part of a checkout")
            for n in names:
                rel = n if rel_root == "." else f"{rel_root}/{n}"
                if rel == CHECKOUT_MARKER:
                    continue
                if rel not in known or not stat.S_ISREG(os.lstat(os.path.join(root, n)).st_mode):
                    raise StageError(f"refusing to replace {dest}: it holds files that are not "
                                     f"part of its checkout (first: {rel})")
        return marker

    def _clean_stale(self, dest: Path) -> None:
        """Remove what a killed checkout into ``dest`` left beside it (we hold its lock)."""
        pattern = re.compile(rf"\.{re.escape(dest.name)}\.tmp-(checkout|old)-\d+-[0-9a-f]{{8}}")
        with contextlib.suppress(OSError):
            for name in os.listdir(dest.parent):
                if pattern.fullmatch(name):
                    log.info("removing %s, left by a killed checkout", dest.parent / name)
                    shutil.rmtree(dest.parent / name, ignore_errors=True)

    # --- placing files ------------------------------------------------------------------

    def _materialise(self, manifest: Manifest, tmp: Path, dest: Path, mode: str
                     ) -> tuple[dict[str, int], set[str]]:
        """Place every file under ``tmp``; returns files per mode used and linked objects."""
        method = "reflink" if mode == "auto" else mode
        counts = {"reflink": 0, "link": 0, "copy": 0}
        linked: set[str] = set()
        made = {str(tmp)}
        for i, e in enumerate(manifest.entries):
            # check_path refuses '..' and absolute paths, and tmp is fresh and holds only
            # what we create, so no target can leave it.
            target = os.path.join(tmp, check_path(e.path))
            parent = os.path.dirname(target)
            try:
                if parent not in made:
                    os.makedirs(parent, exist_ok=True)
                    made.add(parent)
                used = self._place(self._obj(e.sha256), target, method, mode, dest)
            except OSError as exc:
                raise StageError(f"cannot check out {e.path} into {dest}: "
                                 f"{exc.strerror or exc}") from exc
            if mode == "auto":
                method = used  # what failed once fails for every file of this pair
            counts[used] += 1
            if used == "link":
                linked.add(e.sha256)
            if i == 0:
                failpoint("checkout-after-first-file")
        return {k: v for k, v in counts.items() if v}, linked

    def _place(self, obj: str, target: str, method: str, mode: str, dest: Path) -> str:
        if method == "reflink":
            try:
                reflink(obj, target)
                return "reflink"
            except OSError as exc:
                if exc.errno not in NO_REFLINK:
                    raise
                if mode == "reflink":
                    raise StageError(f"--mode reflink: the filesystem of {dest} cannot clone "
                                     f"files from the store ({exc.strerror}); use --mode link "
                                     "or copy") from exc
                method = "link"
        if method == "link":
            try:
                os.link(obj, target)
                return "link"
            except OSError as exc:
                if exc.errno not in NO_LINK:
                    raise
                if mode == "link":
                    raise StageError(f"--mode link: cannot hard-link from the store into "
                                     f"{dest} ({exc.strerror}); use --mode copy") from exc
        shutil.copyfile(obj, target)
        os.chmod(target, 0o444)
        return "copy"

    def _after_linking(self, version: Version, manifest: Manifest, linked: set[str],
                       good: dict[str, Stat], writable: bool) -> dict[str, Stat]:
        """Linking changed each linked object's ctime: the new stat is good, unless size or
        mtime moved too (written meanwhile: rehash, and refuse if altered)."""
        fresh: dict[str, Stat] = {}
        if not linked:
            return fresh
        moved = []
        for sha in linked:
            st = stat_key(os.lstat(self._obj(sha)))
            if st[:3] == good[sha][:3]:
                fresh[sha] = st
            else:
                moved.append(sha)
        if moved:
            problems, again = self.check_objects(
                version.ref, [e for e in manifest.entries if e.sha256 in moved], full=True,
                record=writable)
            if problems:
                raise StageError(f"{version.ref} changed while being checked out "
                                 f"({problems[0].path}); nothing checked out; {REPAIR}")
            fresh.update(again)
        return fresh

    # --- swapping in --------------------------------------------------------------------

    def _swap_in(self, tmp: Path, dest: Path, old: dict[str, Any] | None,
                 writable: bool, pending: dict[str, Stat]) -> dict[str, Stat]:
        """Put the checkout at ``dest``; the new good stats of objects whose old links
        went (``pending``: good stats not yet recorded)."""
        if not os.path.lexists(dest):
            os.rename(tmp, dest)
            return {}
        if exchange(tmp, dest):  # atomic: dest is at every moment a complete checkout
            failpoint("checkout-after-swap")
            return self._remove_old(tmp, old, writable, pending)
        aside = _sibling(dest, "old")
        os.rename(dest, aside)
        failpoint("checkout-after-move-aside")
        os.rename(tmp, dest)
        return self._remove_old(aside, old, writable, pending)

    def _remove_old(self, old_dir: Path, marker: dict[str, Any] | None,
                    writable: bool, pending: dict[str, Stat]) -> dict[str, Stat]:
        """Delete a swapped-out checkout. Unlinking its hard links changes the objects'
        ctime, so objects known good just before are good after (if their size and mtime
        did not move): returned, to be recorded, sparing the next use a rehash."""
        entries: list[Entry] = []
        if writable and marker and marker.get("store") == str(self.root.resolve()):
            with contextlib.suppress(StageError):
                entries = list(self.manifest(str(marker.get("id"))).entries)
        known = {**self.good_stats({e.sha256 for e in entries}), **pending}
        before: dict[str, Stat] = {}
        base = str(old_dir)
        for e in entries:
            with contextlib.suppress(OSError):
                link_st = os.lstat(f"{base}/{e.path}")
                obj_st = os.lstat(self._obj(e.sha256))
                if (link_st.st_ino, link_st.st_dev) == (obj_st.st_ino, obj_st.st_dev) and \
                        known.get(e.sha256) == stat_key(obj_st):
                    before[e.sha256] = stat_key(obj_st)
        shutil.rmtree(old_dir, ignore_errors=True)
        after: dict[str, Stat] = {}
        for sha, st in before.items():
            with contextlib.suppress(OSError):
                now_st = stat_key(os.lstat(self._obj(sha)))
                if now_st[:3] == st[:3]:
                    after[sha] = now_st
        return after
