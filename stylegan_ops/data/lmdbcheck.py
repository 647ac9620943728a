"""A structural check of an LMDB file before liblmdb is allowed to walk it.

liblmdb trusts the page numbers and offsets stored in the file. One flipped byte in a page
header can make a read-only cursor touch the map past the end of the file (the process dies
of SIGBUS) or return nodes that were never written (garbage records, silently). So before
a source is read, this walks the main database's B+tree as liblmdb's mdb.c lays it out
(MDB_meta, MDB_page, MDB_node, 64-bit builds, little endian) and refuses any page, node or
value that lies outside the file or its page, any key out of order, and an entry count that
differs from the one the meta page records. The cursor walk that follows then only touches
bytes that were checked. Only page headers and leaf nodes are read, never the values: for
LSUN's cat database (42 GB) that is about 25 000 pages.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from stylegan_ops.errors import StageError

PAGEHDRSZ = 16  # mp_pgno u64, mp_pad u16, mp_flags u16, mp_lower u16, mp_upper u16
NODESIZE = 8  # mn_lo u16, mn_hi u16, mn_flags u16, mn_ksize u16, then key and data
MAGIC, DATA_VERSION = 0xBEEFC0DE, 1
P_BRANCH, P_LEAF, P_OVERFLOW, P_META, P_LEAF2, P_SUBP = 0x01, 0x02, 0x04, 0x08, 0x20, 0x40
PAGE_KINDS = P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2 | P_SUBP
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
P_INVALID = 2**64 - 1
# MDB_meta after the page header: magic, version, address, mapsize, then two MDB_db
# (md_pad u32, md_flags u16, md_depth u16, branch, leaf, overflow, entries, root: u64 each),
# then mm_last_pg and mm_txnid. FREE_DBI's md_pad holds the page size.
_META = struct.Struct("<IIQQ" + "IHHQQQQQ" * 2 + "QQ")

_checked: dict[tuple[str, int, int, int], int] = {}  # forked workers inherit the verdict


class _Meta:
    def __init__(self, raw: bytes) -> None:
        f = _META.unpack_from(raw, PAGEHDRSZ)
        self.flags = struct.unpack_from("<H", raw, 10)[0]
        self.magic, self.version = f[0], f[1]
        self.psize = f[4]
        self.main_flags, self.depth = f[13], f[14]
        self.entries, self.root = f[18], f[19]
        self.last_pg, self.txnid = f[20], f[21]


def check_lmdb(data_mdb: Path) -> int:
    """Check ``data_mdb`` and return the number of entries in its main database."""
    st = data_mdb.stat()
    key = (str(data_mdb.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _checked:
        with data_mdb.open("rb") as f:
            _checked[key] = _Walk(data_mdb, f.fileno(), st.st_size).run()
    return _checked[key]


class _Walk:
    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path, self.fd, self.size = path, fd, size
        self.psize = 4096
        self.limit = 0  # pages that exist: in the file and below mm_last_pg

    def fail(self, what: str) -> StageError:
        return StageError(f"damaged LMDB {self.path}: {what}")

    def read(self, offset: int, n: int) -> bytes:
        raw = os.pread(self.fd, n, offset)
        if len(raw) != n:
            raise self.fail(f"{n} bytes at offset {offset} lie past the end of the file")
        return raw

    def meta(self, index: int, psize: int) -> _Meta:
        raw = self.read(index * psize, PAGEHDRSZ + _META.size)
        m = _Meta(raw)
        if m.magic != MAGIC or not m.flags & P_META:
            raise self.fail(f"meta page {index} is not an LMDB meta page")
        if m.version != DATA_VERSION:
            raise self.fail(f"meta page {index} has data format {m.version}, not "
                            f"{DATA_VERSION}")
        return m

    def run(self) -> int:
        if self.size < 2 * PAGEHDRSZ + 2 * _META.size:
            raise self.fail("file too short for two meta pages")
        first = self.meta(0, 4096)
        psize = first.psize
        if psize < 512 or psize > 1 << 16 or psize & (psize - 1):
            raise self.fail(f"page size {psize} is not a power of two in 512..65536")
        self.psize = psize
        if psize != 4096:
            first = self.meta(0, psize)
        second = self.meta(1, psize)
        meta = second if second.txnid > first.txnid else first  # what liblmdb picks
        self.limit = min(self.size // psize, meta.last_pg + 1)
        if meta.main_flags:
            raise self.fail(f"main database has flags {meta.main_flags:#x} (sorted duplicates "
                            f"or integer keys), which LSUN's layout never uses")
        if meta.root == P_INVALID:
            if meta.entries:
                raise self.fail(f"meta page says {meta.entries} entries but has no root page")
            return 0
        found = self.tree(meta.root, meta.depth)
        if found != meta.entries:
            raise self.fail(f"the tree holds {found} entries, the meta page says "
                            f"{meta.entries}")
        return found

    def page(self, pgno: int, kind: int) -> bytes:
        if pgno >= self.limit:
            raise self.fail(f"page {pgno} is referenced but the file has {self.limit} pages")
        raw = self.read(pgno * self.psize, self.psize)
        stored, flags = struct.unpack_from("<Q", raw)[0], struct.unpack_from("<H", raw, 10)[0]
        if stored != pgno or flags & PAGE_KINDS != kind:
            raise self.fail(f"page {pgno} has a damaged header (number {stored}, flags "
                            f"{flags:#x})")
        return raw

    def nodes(self, pgno: int, raw: bytes) -> list[tuple[int, int, int, bytes, int]]:
        """(lo, hi, flags, key, data offset) of each node, every one inside the page."""
        lower, upper = struct.unpack_from("<HH", raw, 12)
        if not PAGEHDRSZ <= lower <= upper <= self.psize or (lower - PAGEHDRSZ) % 2:
            raise self.fail(f"page {pgno} has damaged bounds (lower {lower}, upper {upper})")
        out = []
        for i in range((lower - PAGEHDRSZ) // 2):
            (ptr,) = struct.unpack_from("<H", raw, PAGEHDRSZ + 2 * i)
            if ptr < upper or ptr % 2 or ptr + NODESIZE > self.psize:
                raise self.fail(f"page {pgno} node {i} has a damaged offset {ptr}")
            lo, hi, flags, ksize = struct.unpack_from("<HHHH", raw, ptr)
            data = ptr + NODESIZE + ksize
            if data > self.psize:
                raise self.fail(f"page {pgno} node {i} has a key past the page end")
            out.append((lo, hi, flags, raw[ptr + NODESIZE:data], data))
        return out

    def tree(self, root: int, depth: int) -> int:
        if not 1 <= depth <= 64:
            raise self.fail(f"tree depth {depth} is implausible")
        entries = 0
        last_key: bytes | None = None
        seen: set[int] = set()
        stack = [(root, 1)]
        while stack:
            pgno, level = stack.pop()
            if pgno in seen:
                raise self.fail(f"page {pgno} is referenced twice")
            seen.add(pgno)
            if level < depth:
                raw = self.page(pgno, P_BRANCH)
                children = [lo | hi << 16 | flags << 32
                            for lo, hi, flags, _, _ in self.nodes(pgno, raw)]
                if not children:
                    raise self.fail(f"branch page {pgno} is empty")
                stack.extend((child, level + 1) for child in reversed(children))
                continue
            raw = self.page(pgno, P_LEAF)
            for i, (lo, hi, flags, key, data) in enumerate(self.nodes(pgno, raw)):
                if flags & (F_SUBDATA | F_DUPDATA):
                    raise self.fail(f"page {pgno} node {i} is a sub-database or duplicate "
                                    f"key, which LSUN's layout never uses")
                if last_key is not None and key <= last_key:
                    raise self.fail(f"page {pgno} node {i}: keys are out of order")
                last_key = key
                self.value(pgno, i, lo | hi << 16, flags & F_BIGDATA, raw, data)
                entries += 1
        return entries

    def value(self, pgno: int, i: int, dsize: int, big: int, raw: bytes, data: int) -> None:
        if not big:
            if data + dsize > self.psize:
                raise self.fail(f"page {pgno} node {i} has a value past the page end")
            return
        if data + 8 > self.psize:
            raise self.fail(f"page {pgno} node {i} has a damaged overflow reference")
        (first,) = struct.unpack_from("<Q", raw, data)
        pages = (PAGEHDRSZ - 1 + dsize) // self.psize + 1  # mdb.c's OVPAGES
        if first + pages > self.limit:
            raise self.fail(f"page {pgno} node {i}: its {dsize}-byte value would run past "
                            f"the end of the file")
        head = self.read(first * self.psize, PAGEHDRSZ)
        stored, flags, count = struct.unpack_from("<QxxHI", head)
        if stored != first or flags & PAGE_KINDS != P_OVERFLOW or count < pages:
            raise self.fail(f"page {pgno} node {i}: overflow page {first} is damaged")
