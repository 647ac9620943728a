"""Archives and datasets under hostile input: unzip, prepare (lsun, images, merge), inspect.

Every fixture is generated from the format's published description (tests/data/formats.py)
or written by the format's own library (lmdb, Pillow), then damaged by patching bytes.
Each case is one line; the harness asserts the suite's properties (exit 0 correct or exit 2
with one line naming the problem, no traceback or signal, nothing half-written).
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import lmdb
import numpy as np
import pytest
from PIL import Image

from tests.data.formats import (
    P_BRANCH,
    P_LEAF,
    P_META,
    S_IFDIR,
    S_IFLNK,
    Member,
    lmdb_node_offset,
    lmdb_pages,
    patch_bytes,
    png_header_only,
    tfrecord_frame,
    write_zip,
)
from tests.faults.harness import Case, check_case

Setup = Callable[[Path], None]
Check = Callable[[Path, subprocess.CompletedProcess[str]], None]
# Address space for the memory-bound cases: a plain run needs ~0.45 GB of it, so one image
# decoded at 13000x13000 (RGBA: 0.68 GB) or a 2 GB read cannot fit. BLAS and malloc are held
# to one thread/arena each so the reservation does not grow with the machine's core count.
MEM = 640 << 20
LEAN = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}


# --- unzip -------------------------------------------------------------------------------

def steps(*setups: Setup) -> Setup:
    """Several setups in order (a fixture, then the damage done to it)."""
    def setup(d: Path) -> None:
        for one in setups:
            one(d)
    return setup


def truncate(name: str, size: int) -> Setup:
    return lambda d: os.truncate(d / name, size)


def patch(name: str, offset: int, value: bytes) -> Setup:
    return lambda d: patch_bytes(d / name, offset, value)


def zip_of(*members: Member) -> Setup:
    def setup(d: Path) -> None:
        write_zip(d / "a.zip", list(members))
    return setup


def absent(*names: str) -> Check:
    """Nothing was left: neither the named outputs nor any other new entry in {d}."""
    def check(d: Path, res: subprocess.CompletedProcess[str]) -> None:
        for name in names:
            assert not (d / name).exists(), f"{name} was left behind"
    return check


def extracted_then(change: Callable[[Path], None]) -> Setup:
    """An archive extracted once into {d}/out (by a real run), then ``change``d."""
    def setup(d: Path) -> None:
        write_zip(d / "a.zip", [Member("cat/data.mdb", b"d" * 5000), Member("cat/x", b"1")])
        res = subprocess.run([*CLI, "unzip", str(d / "a.zip"), "--out", str(d / "out")],
                             capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr
        change(d / "out")
    return setup


def unzipped_ok(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    assert (d / "out/a/b.txt").read_bytes() == b"hello"
    assert (d / "out/c").read_bytes() == b"x" * 1000
    marker = json.loads((d / "out/.unzip.json").read_text())
    assert set(marker["files"]) == {"a/b.txt", "c"}
    assert sorted(p.name for p in d.iterdir()) == ["a.zip", "out"]


def _append(path: Path) -> None:
    with path.open("ab") as f:
        f.write(b"!")


def _same_size_edit(path: Path) -> None:
    path.write_bytes(b"e" * path.stat().st_size)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))


CLI = [sys.executable, "-m", "stylegan_ops.cli"]
UNZIP = ("unzip", "{d}/a.zip", "--out", "{d}/out")
DEEP = "a/" * 1500 + "f"

UNZIP_CASES = [
    Case("unzip-ok", UNZIP, zip_of(Member("a/b.txt", b"hello"), Member("c", b"x" * 1000,
                                                                       method=0)),
         expect="ok", message='"files": 2', check=unzipped_ok),
    Case("unzip-duplicate-name", UNZIP, zip_of(Member("a", b"1"), Member("a", b"2")),
         message="holds 'a' twice", check=absent("out")),
    Case("unzip-duplicate-after-normalising", UNZIP,
         zip_of(Member("d/a", b"1"), Member("d//./a", b"2")), message="twice",
         check=absent("out")),
    Case("unzip-file-then-dir", UNZIP, zip_of(Member("a", b"1"), Member("a/b", b"2")),
         message="which member 'a' is a file", check=absent("out")),
    Case("unzip-dir-then-file", UNZIP, zip_of(Member("a/b", b"1"), Member("a", b"2")),
         message="member 'a' is a file where member 'a/b' needs a directory",
         check=absent("out")),
    Case("unzip-dir-entry-over-file", UNZIP,
         zip_of(Member("a", b"1"), Member("a/", mode=S_IFDIR | 0o755, method=0)),
         message="member 'a/' is a directory where member 'a' is a file", check=absent("out")),
    Case("unzip-encrypted", UNZIP, zip_of(Member("ok", b"1"), Member("secret", b"x", flags=1)),
         message="'secret' is encrypted", check=absent("out")),
    Case("unzip-compression-99", UNZIP, zip_of(Member("a", b"1", method=99)),
         message="compression method 99", check=absent("out")),
    Case("unzip-compression-implode", UNZIP, zip_of(Member("a", b"1", method=6)),
         message="compression method 6", check=absent("out")),
    Case("unzip-name-component-256", UNZIP, zip_of(Member("d/" + "x" * 256, b"1")),
         message="longer than 255 bytes", check=absent("out")),
    Case("unzip-path-over-4096", UNZIP, zip_of(Member("/".join(["y" * 200] * 21), b"1")),
         message="longer than 4096 bytes", check=absent("out")),
    Case("unzip-nested-1500-deep", UNZIP, zip_of(Member(DEEP, b"1")),
         message="nested 1501 directories deep", check=absent("out")),
    Case("unzip-symlink", UNZIP, zip_of(Member("l", b"/etc/passwd", mode=S_IFLNK | 0o777)),
         message="symbolic link", check=absent("out")),
    Case("unzip-zip-slip", UNZIP, zip_of(Member("ok", b"1"), Member("../evil", b"x")),
         message="escapes the output directory", check=absent("out", "evil")),
    Case("unzip-absolute", UNZIP, zip_of(Member("/tmp/evil", b"x")),
         message="escapes the output directory", check=absent("out")),
    Case("unzip-empty-name", UNZIP, zip_of(Member("./", b"", method=0)),
         message="without a file name", check=absent("out")),
    Case("unzip-member-named-like-marker", UNZIP,
         zip_of(Member("data", b"1"), Member(".unzip.json", b"{}")),
         message="marker file", check=absent("out")),
    Case("unzip-dir-named-like-marker", UNZIP, zip_of(Member(".UNZIP.json/x", b"{}")),
         message="marker file", check=absent("out")),
    Case("unzip-size-lie", UNZIP, zip_of(Member("a", b"\0" * 2_000_000, declared_size=10)),
         message="cannot extract 'a'", check=absent("out")),
    Case("unzip-not-a-zip", UNZIP, lambda d: (d / "a.zip").write_bytes(b"PK\3\4garbage"),
         message="not a zip archive", check=absent("out")),
    Case("unzip-truncated", UNZIP,
         steps(zip_of(Member("a", os.urandom(5000))), truncate("a.zip", 3000)),
         message="not a zip archive", check=absent("out")),
    Case("unzip-corrupt-data", UNZIP,
         steps(zip_of(Member("a", bytes(range(256)) * 400)),
               patch("a.zip", 200, b"\xff\xff\xff\xff")),
         message="cannot extract 'a'", check=absent("out")),
    Case("unzip-archive-is-a-directory", UNZIP, lambda d: (d / "a.zip").mkdir(),
         message="archive is not a regular file", check=absent("out")),
    Case("unzip-rerun-reuses", UNZIP, extracted_then(lambda out: None), expect="ok",
         message='"reused": true'),
    Case("unzip-rerun-after-append", UNZIP,
         extracted_then(lambda out: _append(out / "cat/x")), message="cat/x was changed"),
    Case("unzip-rerun-after-same-size-edit", UNZIP,
         extracted_then(lambda out: _same_size_edit(out / "cat/data.mdb")),
         message="cat/data.mdb was changed"),
    Case("unzip-rerun-extra-file", UNZIP,
         extracted_then(lambda out: (out / "cat/new").write_bytes(b"n")),
         message="extra file cat/new"),
    Case("unzip-rerun-missing-file", UNZIP,
         extracted_then(lambda out: (out / "cat/x").unlink()), message="cat/x is missing"),
    Case("unzip-rerun-damaged-marker", UNZIP,
         extracted_then(lambda out: (out / ".unzip.json").write_text("{")),
         message="already exists"),
]


# --- prepare lsun: LMDBs written by liblmdb, then damaged --------------------------------

def _png(seed: int, size: int = 40) -> bytes:
    """A noisy RGB PNG of ~5 KB: bigger than a page, so LMDB stores it in overflow pages."""
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def lmdb_with(damage: Callable[[Path], None] | None = None, small: int = 0) -> Setup:
    """{d}/db: 6 PNG records in overflow pages (+ ``small`` tiny inline ones), ``damage``d."""
    def setup(d: Path) -> None:
        env = lmdb.open(str(d / "db"), map_size=1 << 26)
        with env.begin(write=True) as txn:
            for i in range(6):
                txn.put(b"%040d" % i, _png(i))
            for i in range(small):
                txn.put(b"%040d" % (1000 + i), b"s" * 60)
        env.close()
        (d / "db/lock.mdb").unlink(missing_ok=True)
        if damage is not None:
            damage(d / "db/data.mdb")
    return setup


def _value_size(data_mdb: Path) -> None:
    """mn_hi of the first leaf node += 0x100: its value now claims 16 MB more than the file
    holds. liblmdb copies it from the map and the process dies of SIGBUS."""
    at = lmdb_node_offset(data_mdb, P_LEAF, 0, 0)
    (hi,) = struct.unpack_from("<H", data_mdb.read_bytes(), at + 2)
    patch_bytes(data_mdb, at + 2, struct.pack("<H", hi + 0x100))


def _node_offset(data_mdb: Path) -> None:
    """mp_ptrs[1] of the first leaf page points into the middle of another node."""
    raw = data_mdb.read_bytes()
    (psize,) = struct.unpack_from("<I", raw, 40)
    page = lmdb_pages(data_mdb)[P_LEAF][0] * psize
    (ptr,) = struct.unpack_from("<H", raw, page + 18)
    patch_bytes(data_mdb, page + 18, struct.pack("<H", ptr + 6))


def _lower(data_mdb: Path) -> None:
    """mp_lower of the first leaf page claims 40 more nodes than were written."""
    raw = data_mdb.read_bytes()
    (psize,) = struct.unpack_from("<I", raw, 40)
    page = lmdb_pages(data_mdb)[P_LEAF][0] * psize
    (lower,) = struct.unpack_from("<H", raw, page + 12)
    patch_bytes(data_mdb, page + 12, struct.pack("<H", lower + 80))


def _flags(data_mdb: Path) -> None:
    raw = data_mdb.read_bytes()
    (psize,) = struct.unpack_from("<I", raw, 40)
    patch_bytes(data_mdb, lmdb_pages(data_mdb)[P_LEAF][0] * psize + 10, b"\x01\x00")


def _branch_child(data_mdb: Path) -> None:
    """The second child of the branch page points far past the end of the file."""
    at = lmdb_node_offset(data_mdb, P_BRANCH, 0, 1)
    patch_bytes(data_mdb, at, struct.pack("<HH", 0xFFF0, 0))


def _truncate(data_mdb: Path) -> None:
    os.truncate(data_mdb, data_mdb.stat().st_size * 6 // 10)


def _metas(data_mdb: Path) -> None:
    raw = data_mdb.read_bytes()
    (psize,) = struct.unpack_from("<I", raw, 40)
    for pgno in lmdb_pages(data_mdb)[P_META]:
        patch_bytes(data_mdb, pgno * psize + 16, b"\0\0\0\0")


def _image_bytes(data_mdb: Path) -> None:
    """Damage inside one value (a PNG's pixels): a damaged record, skipped and counted."""
    raw = data_mdb.read_bytes()
    at = raw.index(b"IDAT") + 40
    patch_bytes(data_mdb, at, b"\xde\xad\xbe\xef" * 8)


def skipped_has(count: int, reason: str) -> Check:
    def check(d: Path, res: subprocess.CompletedProcess[str]) -> None:
        meta = json.loads((d / "ds/dataset.json").read_text())
        assert meta["count"] == count, meta["count"]
        reasons = [r["reason"] for r in meta["skipped"]["records"]]
        assert meta["skipped"]["count"] == len(reasons) >= 1
        assert any(reason in r for r in reasons), reasons
    return check


LSUN = ("prepare", "lsun", "{d}/db", "--out", "{d}/ds", "--resolution", "8")

LSUN_CASES = [
    Case("lsun-ok", LSUN, lmdb_with(), expect="ok", message='"count": 6'),
    Case("lsun-value-size-past-eof", LSUN, lmdb_with(_value_size),
         message="would run past the end of the file", check=absent("ds")),
    Case("lsun-value-size-past-eof-workers", (*LSUN, "--workers", "3"), lmdb_with(_value_size),
         message="would run past the end of the file", check=absent("ds")),
    Case("lsun-node-offset", LSUN, lmdb_with(_node_offset), message="damaged LMDB",
         check=absent("ds")),
    Case("lsun-phantom-nodes", LSUN, lmdb_with(_lower), message="damaged LMDB",
         check=absent("ds")),
    Case("lsun-page-flags", LSUN, lmdb_with(_flags), message="damaged header",
         check=absent("ds")),
    Case("lsun-branch-child-past-eof", LSUN, lmdb_with(_branch_child, small=300),
         message="is referenced but the file has", check=absent("ds")),
    Case("lsun-truncated", LSUN, lmdb_with(_truncate), message="damaged LMDB",
         check=absent("ds")),
    Case("lsun-meta-pages", LSUN, lmdb_with(_metas), message="not an LMDB meta page",
         check=absent("ds")),
    Case("lsun-damaged-value-is-skipped", LSUN, lmdb_with(_image_bytes), expect="ok",
         check=skipped_has(5, "undecodable")),
    Case("lsun-empty-data-mdb", LSUN,
         steps(lambda d: (d / "db").mkdir(), lambda d: (d / "db/data.mdb").touch()),
         message="damaged LMDB", check=absent("ds")),
    Case("lsun-data-mdb-is-a-directory", LSUN, lambda d: (d / "db/data.mdb").mkdir(parents=True),
         message="no data.mdb", check=absent("ds")),
]


# --- prepare images: odd pixel formats, huge headers --------------------------------------

def folder_with(name: str, make: Callable[[Path], None]) -> Setup:
    """{d}/imgs: one ordinary RGB image a.png, and ``name`` made by ``make``."""
    def setup(d: Path) -> None:
        (d / "imgs").mkdir()
        Image.fromarray(np.full((12, 10, 3), 90, np.uint8)).save(d / "imgs/a.png")
        make(d / "imgs" / name)
    return setup


def _pil(mode: str, fmt: str, alpha: int | None = None, **save: object) -> Callable[[Path],
                                                                                   None]:
    def make(path: Path) -> None:
        if mode in ("I;16", "I", "F"):
            dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
            img = Image.fromarray(np.arange(64, dtype=dtype).reshape(8, 8) * 1000)
        else:
            opaque = (*([0] * (len(mode) - 1)), 255) if mode.endswith("A") else 0
            img = Image.new(mode, (8, 8), opaque)
            if alpha is not None:
                img.putpixel((3, 3), (*([0] * (len(mode) - 1)), alpha))
        img.save(path, format=fmt, **save)
    return make


def _palette_transparent(path: Path) -> None:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.save(path, format="GIF", transparency=0)


def _palette_unused_transparency(path: Path) -> None:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.save(path, format="PNG", transparency=0)  # index 0 is transparent but never used


def _sparse(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with path.open("wb") as f:
            f.write(png_header_only(16, 16)[:64])
            f.truncate(size)  # sparse: costs no disk
    return make


def images(*extra: str) -> tuple[str, ...]:
    return ("prepare", "images", "{d}/imgs", "--out", "{d}/ds", "--resolution", "8", *extra)


def counted(count: int) -> Check:
    def check(d: Path, res: subprocess.CompletedProcess[str]) -> None:
        meta = json.loads((d / "ds/dataset.json").read_text())
        assert meta["count"] == count and meta["skipped"]["count"] == 0
    return check


IMAGE_CASES = [
    Case("images-png-16-bit", images(), folder_with("b.png", _pil("I;16", "PNG")),
         expect="ok", check=skipped_has(1, "pixel format I;16")),
    Case("images-tiff-int32", images(), folder_with("b.tif", _pil("I", "TIFF")),
         expect="ok", check=skipped_has(1, "pixel format I ")),
    Case("images-tiff-float", images(), folder_with("b.tif", _pil("F", "TIFF")),
         expect="ok", check=skipped_has(1, "pixel format F ")),
    Case("images-jpeg-cmyk", images(), folder_with("b.jpg", _pil("CMYK", "JPEG")),
         expect="ok", check=skipped_has(1, "pixel format CMYK")),
    Case("images-rgba-transparent", images(), folder_with("b.png", _pil("RGBA", "PNG", 0)),
         expect="ok", check=skipped_has(1, "transparent pixels")),
    Case("images-la-transparent", images(), folder_with("b.png", _pil("LA", "PNG", 10)),
         expect="ok", check=skipped_has(1, "LA image has transparent pixels")),
    Case("images-gif-transparent-index", images(), folder_with("b.gif", _palette_transparent),
         expect="ok", check=skipped_has(1, "transparent pixels")),
    Case("images-rgba-opaque-is-used", images(), folder_with("b.png", _pil("RGBA", "PNG", 255)),
         expect="ok", check=counted(2)),
    Case("images-palette-unused-transparency-is-used", images(),
         folder_with("b.png", _palette_unused_transparency), expect="ok", check=counted(2)),
    Case("images-bilevel-is-used", images(), folder_with("b.png", _pil("1", "PNG")),
         expect="ok", check=counted(2)),
    Case("images-header-60000px", images(),
         folder_with("b.png", lambda p: p.write_bytes(png_header_only(60000, 60000))),
         expect="ok", check=skipped_has(1, "too large"), mem_limit=MEM, env=LEAN),
    Case("images-header-13000px", images(),
         folder_with("b.png", lambda p: p.write_bytes(png_header_only(13000, 13000))),
         expect="ok", check=skipped_has(1, "13000x13000 px"), mem_limit=MEM, env=LEAN),
    Case("images-file-of-2-gb", images(), folder_with("b.png", _sparse(2 << 30)),
         expect="ok", check=skipped_has(1, "over the 268435456-byte limit"), mem_limit=MEM,
         env=LEAN),
    Case("images-postscript-named-png", images(),
         folder_with("b.png", lambda p: p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n")),
         expect="ok", check=skipped_has(1, "undecodable")),
    Case("images-labels-header-lies", images("--labels", "{d}/l.npy"),
         steps(folder_with("b.png", _pil("RGB", "PNG")), lambda d: _lying_npy(d / "l.npy")),
         message="l.npy: its header says", check=absent("ds"), mem_limit=MEM, env=LEAN),
    Case("images-labels-npz", images("--labels", "{d}/l.npz"),
         steps(folder_with("b.png", _pil("RGB", "PNG")),
               lambda d: np.savez(d / "l.npz", a=np.zeros((2, 2)))),
         message="l.npz", check=absent("ds")),
    Case("images-labels-strings", images("--labels", "{d}/l.npy"),
         steps(folder_with("b.png", _pil("RGB", "PNG")),
               lambda d: np.save(d / "l.npy", np.array([["a"], ["b"]]))),
         message="not a numeric .npy", check=absent("ds")),
]


def _lying_npy(path: Path) -> None:
    """A .npy v1.0 header (magic, version, u16 length, dict) claiming 2**40 rows."""
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 2), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
                     + b"\0" * 16)


# --- inspect: TFRecord framing from the spec ---------------------------------------------

def _example(c: int, h: int, w: int, data: bytes) -> bytes:
    """tf.train.Example{features{feature{"data": bytes_list}, feature{"shape": int64_list}}}
    in protobuf wire format (field 1 = features, map entries field 1 key / 2 value)."""
    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    shape = field(3, field(1, b"".join(_varint(v) for v in (c, h, w))))  # packed int64s
    data_f = field(1, field(1, data))  # Feature.bytes_list{value}
    entries = (field(1, field(1, b"data") + field(2, data_f))
               + field(1, field(1, b"shape") + field(2, shape)))
    return field(1, entries)


def _flip_last(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0xFF])


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def dataset(level3: bytes | None = None, dir_level: bool = False) -> Setup:
    """{d}/ds: levels r02 and r03 of one image (a valid pyramid), with r03 replaced."""
    def setup(d: Path) -> None:
        (d / "ds").mkdir()
        img = np.full((3, 8, 8), 100, np.uint8)
        (d / "ds/ds-r02.tfrecords").write_bytes(
            tfrecord_frame(_example(3, 4, 4, img[:, ::2, ::2].tobytes())))
        if dir_level:
            (d / "ds/ds-r03.tfrecords").mkdir()
        else:
            (d / "ds/ds-r03.tfrecords").write_bytes(
                level3 if level3 is not None else tfrecord_frame(_example(3, 8, 8,
                                                                          img.tobytes())))
    return setup


INSPECT = ("inspect", "{d}/ds")
INSPECT_CASES = [
    Case("inspect-ok", INSPECT, dataset(), expect="ok", message='"count": 1'),
    Case("inspect-record-claims-2-40-bytes", INSPECT,
         dataset(tfrecord_frame(b"x" * 32, claimed_length=1 << 40)),
         message="claims 1099511627776 bytes", mem_limit=MEM, env=LEAN),
    Case("inspect-record-claims-past-eof", INSPECT,
         dataset(tfrecord_frame(b"x" * 32, claimed_length=1 << 20)),
         message="claims 1048576 bytes"),
    Case("inspect-level-is-a-directory", INSPECT, dataset(dir_level=True),
         message="ds-r03.tfrecords is not a regular file"),
    Case("inspect-shape-overflow", INSPECT,
         dataset(tfrecord_frame(_example(1 << 32, 1 << 32, 1, b""))),
         message="does not match 0 data bytes"),
    Case("inspect-crc", INSPECT, dataset(_flip_last(tfrecord_frame(_example(3, 8, 8,
                                                                            bytes(192))))),
         message="crc mismatch"),
]


# --- merge: shards made by real runs, shard.json then edited ------------------------------

_SHARDS: dict[str, Path] = {}


def _shard_source() -> Path:
    """Two shards (0/2, 1/2) of 10 images from a 14-record LMDB, made once per session."""
    if "root" not in _SHARDS:
        root = Path(tempfile.mkdtemp(prefix="data-faults-"))
        atexit.register(shutil.rmtree, root, True)
        lmdb_with()(root)
        env = lmdb.open(str(root / "db"), map_size=1 << 26)
        with env.begin(write=True) as txn:  # more records, a damaged one among them
            for i in range(6, 14):
                txn.put(b"%040d" % i, _png(i) if i != 8 else b"broken")
        env.close()
        for i in (0, 1):
            res = subprocess.run([*CLI, "prepare", "lsun", str(root / "db"), "--out",
                                  str(root / f"s{i}"), "--resolution", "8", "--max-images",
                                  "10", "--shard", f"{i}/2"], capture_output=True, text=True,
                                 check=False)
            assert res.returncode == 0, res.stderr
        _SHARDS["root"] = root
    return _SHARDS["root"]


def shards(edit: Callable[[dict, Path], None] | None = None) -> Setup:
    """{d}/db and {d}/s0, {d}/s1 (copies); ``edit(meta, shard_dir)`` changes s1's record."""
    def setup(d: Path) -> None:
        root = _shard_source()
        for name in ("s0", "s1"):
            shutil.copytree(root / name, d / name)
        if edit is not None:
            meta = json.loads((d / "s1/shard.json").read_text())
            edit(meta, d / "s1")
            (d / "s1/shard.json").write_text(json.dumps(meta))
    return setup


def _set(path: str, value: object) -> Callable[[dict, Path], None]:
    def edit(meta: dict, shard: Path) -> None:
        *head, last = path.split(".")
        node = meta
        for key in head:
            node = node[key]
        node[last] = value
    return edit


def _inflate(meta: dict, shard: Path) -> None:
    """Claim the damaged record as an image: the counts add up, the files do not (merge
    would truncate to a size the files never had, which extends them with zeros)."""
    meta["count"] += len(meta["skipped"])
    meta["skipped"] = []


def _many_shards(d: Path) -> None:
    """A self-consistent shard 0 of 10**12 (an empty range, empty files): merging it alone
    must not enumerate 10**12 expected shard numbers."""
    shards()(d)
    meta = json.loads((d / "s0/shard.json").read_text())
    meta["request"]["shard"] = [0, 10**12]
    meta.update(start=0, stop=0, next_position=0, count=0, skipped=[])
    empty = hashlib.sha256(b"").hexdigest()
    for name in meta["files"]:
        (d / "s0" / name).write_bytes(b"")
        meta["files"][name] = {"sha256": empty, "size": 0}
    (d / "s0/shard.json").write_text(json.dumps(meta))


def raw_shard_json(text: str | None) -> Setup:
    """s1's shard.json replaced by ``text`` (None: by a directory)."""
    def setup(d: Path) -> None:
        shards()(d)
        (d / "s1/shard.json").unlink()
        if text is None:
            (d / "s1/shard.json").mkdir()
        else:
            (d / "s1/shard.json").write_text(text)
    return setup


def level_dir(d: Path) -> None:
    shards()(d)
    (d / "s1/shard-r03.tfrecords").unlink()
    (d / "s1/shard-r03.tfrecords").mkdir()


def merged_ok(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    meta = json.loads((d / "m/dataset.json").read_text())
    assert meta["count"] == 10 and meta["skipped"]["count"] == 1


MERGE = ("prepare", "merge", "{d}/s0", "{d}/s1", "--out", "{d}/m")
MERGE_CASES = [
    Case("merge-ok", MERGE, shards(), expect="ok", check=merged_ok),
    Case("merge-count-a-string", MERGE, shards(_set("count", "5")),
         message="count is not an integer", check=absent("m")),
    Case("merge-count-huge", MERGE, shards(_set("count", 10**15)),
         message="positions read", check=absent("m")),
    Case("merge-count-inflated", MERGE, shards(_inflate), message="images at this level take",
         check=absent("m")),
    Case("merge-range-not-its-shard", MERGE, shards(_set("start", 0)),
         message="is not shard 1/2", check=absent("m")),
    Case("merge-next-position-past-stop", MERGE, shards(_set("next_position", 10**12)),
         message="outside", check=absent("m")),
    Case("merge-skipped-not-a-list", MERGE, shards(_set("skipped", {"a": 1})),
         message="skipped is not a list", check=absent("m")),
    Case("merge-shard-count-huge", MERGE, shards(_set("request.shard", [1, 10**12])),
         message="is not shard 1/1000000000000", check=absent("m")),
    Case("merge-claims-10-12-shards", ("prepare", "merge", "{d}/s0", "--out", "{d}/m"),
         _many_shards, message="needs shards 0..999999999999 exactly once",
         check=absent("m"), mem_limit=MEM, env=LEAN, timeout=20),
    Case("merge-shard-index-out-of-range", MERGE, shards(_set("request.shard", [5, 2])),
         message="is not [i, N]", check=absent("m")),
    Case("merge-resolution-2-40", MERGE, shards(_set("request.resolution", 1 << 40)),
         message="resolution", check=absent("m")),
    Case("merge-source-path-relative", MERGE,
         shards(_set("request.source.path", "../../etc")), message="absolute path",
         check=absent("m")),
    Case("merge-labels-path-relative", MERGE, shards(_set("request.labels", "../l.npy")),
         message="labels", check=absent("m")),
    Case("merge-files-path-escapes", MERGE,
         shards(lambda m, s: m["files"].update({"../x": m["files"].pop("shard-r02.tfrecords")})),
         message="must list exactly", check=absent("m")),
    Case("merge-kind-missing", MERGE, shards(lambda m, s: m.pop("kind")),
         message="kind is not", check=absent("m")),
    Case("merge-shard-json-a-list", MERGE, raw_shard_json("[1, 2]"), message="kind is not",
         check=absent("m")),
    Case("merge-shard-json-not-json", MERGE, raw_shard_json("{'a':"),
         message="is not valid JSON", check=absent("m")),
    Case("merge-shard-json-deeply-nested", MERGE, raw_shard_json("[" * 100000),
         message="is not valid JSON", check=absent("m")),
    Case("merge-shard-json-is-a-directory", MERGE, raw_shard_json(None),
         message="shard.json is not a regular file", check=absent("m")),
    Case("merge-level-is-a-directory", MERGE, level_dir,
         message="shard-r03.tfrecords is missing or not a regular file", check=absent("m")),
    Case("merge-level-truncated", MERGE,
         steps(shards(), truncate("s1/shard-r02.tfrecords", 98)),
         message="shard-r02.tfrecords is 98 bytes", check=absent("m")),
    Case("merge-shard-is-a-file", ("prepare", "merge", "{d}/s0", "{d}/f", "--out", "{d}/m"),
         steps(shards(), lambda d: (d / "f").write_text("x")),
         message="not a shard directory", check=absent("m")),
]

CASES = UNZIP_CASES + LSUN_CASES + IMAGE_CASES + INSPECT_CASES + MERGE_CASES


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_data_faults(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
