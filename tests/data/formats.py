"""Fixture builders for other tools' formats, written from their published descriptions and
never through our own readers: ZIP (PKWARE APPNOTE 6.3.x §4.3), TFRecord framing
(tensorflow/core/lib/io/record_writer.cc's documented layout) and LMDB pages (the struct
layouts documented in liblmdb's mdb.c: MDB_page, MDB_node, MDB_meta)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import crc32c

# --- ZIP ---------------------------------------------------------------------------------

S_IFLNK, S_IFREG, S_IFDIR = 0o120000, 0o100000, 0o040000


@dataclass(frozen=True)
class Member:
    """One archive member as the central directory will describe it."""

    name: str
    data: bytes = b""
    method: int = 8  # 0 stored, 8 deflated; anything else is written as given
    flags: int = 0  # general-purpose bits; bit 0 = encrypted
    mode: int = S_IFREG | 0o644  # unix mode in the high 16 bits of the external attributes
    declared_size: int | None = None  # uncompressed size to claim (default: the real one)


def zip_bytes(members: list[Member]) -> bytes:
    """A ZIP archive: local file headers with data, then the central directory, then EOCD."""
    out = bytearray()
    central = bytearray()
    for m in members:
        name = m.name.encode()
        flags = m.flags | 0x800  # bit 11: the name is UTF-8
        if m.method == 8:
            co = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, no zlib wrapper
            payload = co.compress(m.data) + co.flush()
        else:
            payload = m.data
        crc = zlib.crc32(m.data)
        usize = len(m.data) if m.declared_size is None else m.declared_size
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, m.method, 0, 0x21,
                           crc, len(payload), usize, len(name), 0)
        out += name + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 20, 20, flags,
                               m.method, 0, 0x21, crc, len(payload), usize, len(name), 0, 0,
                               0, 0, (m.mode << 16) | (0x10 if m.mode & S_IFDIR else 0),
                               offset)
        central += name
    cd_offset = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                       len(central), cd_offset, 0)
    return bytes(out)


def write_zip(path: Path, members: list[Member]) -> Path:
    path.write_bytes(zip_bytes(members))
    return path


# --- TFRecord ----------------------------------------------------------------------------

def masked_crc32c(data: bytes) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(payload: bytes, claimed_length: int | None = None) -> bytes:
    """uint64 length, masked crc32c of those 8 bytes, data, masked crc32c of the data."""
    length = struct.pack("<Q", len(payload) if claimed_length is None else claimed_length)
    return (length + struct.pack("<I", masked_crc32c(length)) + payload
            + struct.pack("<I", masked_crc32c(payload)))


# --- LMDB pages --------------------------------------------------------------------------

P_BRANCH, P_LEAF, P_OVERFLOW, P_META = 0x01, 0x02, 0x04, 0x08


def lmdb_pages(data_mdb: Path) -> dict[int, list[int]]:
    """Page numbers by page type flag; the page size is MDB_meta.mm_psize in page 0
    (mm_dbs[FREE_DBI].md_pad, right after the 16-byte page header and the 24-byte
    magic/version/address/mapsize prefix of MDB_meta)."""
    raw = data_mdb.read_bytes()
    (psize,) = struct.unpack_from("<I", raw, 16 + 24)
    found: dict[int, list[int]] = {}
    pgno = 0
    while pgno * psize < len(raw):
        flags, = struct.unpack_from("<H", raw, pgno * psize + 10)
        kind = flags & (P_BRANCH | P_LEAF | P_OVERFLOW | P_META)
        found.setdefault(kind, []).append(pgno)
        if kind == P_OVERFLOW:  # mp_pages: the run of pages this value occupies
            pgno += max(1, struct.unpack_from("<I", raw, pgno * psize + 12)[0])
        else:
            pgno += 1
    return found


def patch_lmdb_page(data_mdb: Path, kind: int, offset: int, value: bytes,
                    which: int = 0) -> None:
    """Overwrite bytes at ``offset`` of the ``which``-th page of type ``kind``."""
    pages = lmdb_pages(data_mdb)[kind]
    raw = bytearray(data_mdb.read_bytes())
    (psize,) = struct.unpack_from("<I", raw, 16 + 24)
    at = pages[which] * psize + offset
    raw[at:at + len(value)] = value
    data_mdb.write_bytes(bytes(raw))


def lmdb_node_offset(data_mdb: Path, kind: int, which: int, node: int) -> int:
    """File offset of MDB_node ``node`` of the ``which``-th page of type ``kind``: the
    node's offset in its page is mp_ptrs[node], the u16 array after the 16-byte header."""
    raw = data_mdb.read_bytes()
    (psize,) = struct.unpack_from("<I", raw, 16 + 24)
    page = lmdb_pages(data_mdb)[kind][which] * psize
    (ptr,) = struct.unpack_from("<H", raw, page + 16 + 2 * node)
    return page + ptr


def patch_bytes(path: Path, offset: int, value: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(value)] = value
    path.write_bytes(bytes(raw))


# --- PNG -----------------------------------------------------------------------------------

def png_chunk(kind: bytes, data: bytes) -> bytes:
    """length (u32 BE), type, data, CRC-32 of type and data (PNG spec §5.3)."""
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))


def png_header_only(width: int, height: int, bit_depth: int = 8, color_type: int = 6) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` but whose IDAT holds one row: what a
    decompression bomb's header looks like to a decoder (PNG spec §11.2.2)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))
