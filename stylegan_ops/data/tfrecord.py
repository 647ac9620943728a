"""TFRecord framing and the two-feature ``tf.train.Example`` of NVIDIA's dataset layout.

Written without TensorFlow so that extraction workers start in milliseconds and need no
TensorFlow in their image. The tests read what this writes with TensorFlow's own parser.

A record is ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``,
little endian. The Example is hand-encoded protobuf with its features in key order, so the
bytes are a pure function of the image.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import crc32c
import numpy as np

from stylegan_ops.errors import StageError

_MASK_DELTA = 0xA282EAD8
# One record's payload read into memory at most. NVIDIA's largest level (1024 px) is 3 MB a
# record; a header claiming more than this, or more than the file holds, is damage.
MAX_RECORD_BYTES = 1 << 28


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC32C of ``data``."""
    return _mask(crc32c.crc32c(data))


# --- protobuf wire format, just enough for tf.train.Example ---------------------------

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _header(number: int, length: int) -> bytes:
    """Key and length of a length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(length)


def _field(number: int, payload: bytes) -> bytes:
    return _header(number, len(payload)) + payload


def example_parts(shape: tuple[int, ...]) -> tuple[bytes, bytes]:
    """The bytes before and after the pixel data in NVIDIA's Example for this image shape.

    Example{features{feature{"data": bytes_list{data}}, feature{"shape": int64_list{shape}}}}:
    every length is fixed by the shape, so both parts are computed once per level.
    """
    n = int(np.prod(shape))
    value_hdr = _header(1, n)  # BytesList.value
    list_hdr = _header(1, len(value_hdr) + n)  # Feature.bytes_list
    feature_len = len(list_hdr) + len(value_hdr) + n
    key = _field(1, b"data")
    feature_hdr = _header(2, feature_len)  # map entry value
    entry_len = len(key) + len(feature_hdr) + feature_len
    entry_hdr = _header(1, entry_len)  # Features.feature
    packed = b"".join(_varint(int(d)) for d in shape)
    shape_entry = _field(1, _field(1, b"shape") + _field(2, _field(3, _field(1, packed))))
    example_hdr = _header(1, len(entry_hdr) + entry_len + len(shape_entry))  # Example.features
    return example_hdr + entry_hdr + key + feature_hdr + list_hdr + value_hdr, shape_entry


def record_size(shape: tuple[int, ...]) -> int:
    """Bytes one framed record of an image of this shape takes in a TFRecord file."""
    prefix, suffix = example_parts(shape)
    return 16 + len(prefix) + int(np.prod(shape)) + len(suffix)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _iter_fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield (field number, wire type, value) for each field of a message."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated field")
            yield number, wire, buf[pos:pos + length]
            pos += length
        elif wire == 5:
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise ValueError(f"unsupported wire type {wire}")


def decode_example(payload: bytes | memoryview) -> np.ndarray:
    """Parse NVIDIA's Example (any field order, packed or unpacked shape) to a CHW uint8 array."""
    data: memoryview | None = None
    shape: list[int] = []
    for number, _, features in _iter_fields(memoryview(payload)):
        if number != 1 or not isinstance(features, memoryview):
            continue
        for _, _, entry in _iter_fields(features):
            assert isinstance(entry, memoryview)
            key, feature = b"", memoryview(b"")
            for n, _, v in _iter_fields(entry):
                if n == 1 and isinstance(v, memoryview):
                    key = bytes(v)
                elif n == 2 and isinstance(v, memoryview):
                    feature = v
            for kind, _, lst in _iter_fields(feature):
                if not isinstance(lst, memoryview):
                    continue
                if key == b"data" and kind == 1:
                    for n, _, v in _iter_fields(lst):
                        if n == 1 and isinstance(v, memoryview):
                            data = v
                elif key == b"shape" and kind == 3:
                    for _, wire, v in _iter_fields(lst):
                        if wire == 2 and isinstance(v, memoryview):
                            pos = 0
                            while pos < len(v):
                                dim, pos = _read_varint(v, pos)
                                shape.append(dim)
                        elif isinstance(v, int):
                            shape.append(v)
    if data is None or len(shape) != 3:
        raise ValueError("record is not an NVIDIA dataset Example (needs 'data' and 'shape')")
    if math.prod(shape) != len(data):  # Python ints: a hostile shape cannot wrap around
        raise ValueError(f"shape {shape} does not match {len(data)} data bytes")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


# --- files -----------------------------------------------------------------------------

def iter_records(path: Path, *, check_crc: bool = True) -> Iterator[bytes]:
    """Yield the payload of every record in a TFRecord file.

    A record's claimed length is checked against the bytes left in the file and against
    MAX_RECORD_BYTES before anything is allocated for it.
    """
    try:
        f = path.open("rb")
    except OSError as exc:
        raise StageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with f:
        size = os.fstat(f.fileno()).st_size
        index = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) != 12:
                raise StageError(f"{path}: truncated record header")
            (length,) = struct.unpack("<Q", header[:8])
            if check_crc and struct.unpack("<I", header[8:])[0] != masked_crc(header[:8]):
                raise StageError(f"{path}: corrupt record header (crc mismatch)")
            left = size - f.tell() - 4
            if length > left or length > MAX_RECORD_BYTES:
                raise StageError(f"{path}: record {index} claims {length} bytes; "
                                 f"{max(left, 0)} are left in the file and at most "
                                 f"{MAX_RECORD_BYTES} are read")
            index += 1
            body = f.read(length + 4)
            if len(body) != length + 4:
                raise StageError(f"{path}: truncated record")
            payload = body[:length]
            if check_crc and struct.unpack("<I", body[length:])[0] != masked_crc(payload):
                raise StageError(f"{path}: corrupt record data (crc mismatch)")
            yield payload


def read_images(path: Path, n: int) -> list[np.ndarray]:
    """The first ``n`` images of one level file, CHW uint8."""
    return [decode_example(p) for p in islice(iter_records(path), n)]


class LevelWriter:
    """Appends same-shape images as framed Examples to one TFRecord file.

    The Example's header bytes, the record header and its CRC depend only on the shape, so
    each write is one CRC pass over the pixels and a few writes, with no payload copies.
    """

    def __init__(self, path: Path, shape: tuple[int, int, int], append: bool = False) -> None:
        self.path = path
        self.shape = shape
        self.prefix, self.suffix = example_parts(shape)
        length = len(self.prefix) + int(np.prod(shape)) + len(self.suffix)
        header = struct.pack("<Q", length)
        self.header = header + struct.pack("<I", masked_crc(header))
        self.prefix_crc = crc32c.crc32c(self.prefix)
        self.file = path.open("ab" if append else "wb")
        self.count = 0

    def write(self, image: np.ndarray) -> None:
        assert image.shape == self.shape and image.flags.c_contiguous, image.shape
        data = image.data.cast("B")
        crc = crc32c.crc32c(self.suffix, crc32c.crc32c(data, self.prefix_crc))
        self.file.write(self.header)
        self.file.write(self.prefix)
        self.file.write(data)
        self.file.write(self.suffix)
        self.file.write(struct.pack("<I", _mask(crc)))
        self.count += 1

    def close(self) -> None:
        self.file.close()
