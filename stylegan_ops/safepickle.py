"""A pickle reader for files from elsewhere: it rebuilds plain numeric arrays and nothing else.

Python's pickle runs whatever callables a file names. This reader maps the few globals
that numpy's and Python's own picklers write for an array (``_reconstruct``, ``ndarray``,
``dtype``, ``scalar``, ``_frombuffer``, ``_codecs.encode``) to functions of ours that check
their arguments and build the array from the file's bytes themselves; every other global
is refused, whichever opcode names it. An array is accepted only with a plain numeric
dtype (bool, ints, floats, complex; any byte order) and a raw byte string whose length is
exactly shape × itemsize, so nothing is allocated beyond what the file really holds, and
no forged dtype (object, structured, subarray, flags) can turn bytes into pointers.

Callers name the record classes they expect (``classes``); those are instantiated without
arguments and receive their state through ``__setstate__``.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from stylegan_ops.errors import StageError

# plain numeric dtypes by numpy's type string (no object, void, string, datetime, longdouble)
NUMERIC_CODES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8",
                           "f2", "f4", "f8", "c8", "c16"})
BYTE_ORDERS = frozenset({"<", ">", "|", "="})
MAX_NDIM = 32
MAX_DEPTH = 64  # nesting of containers in a loaded object


class UnsafePickleError(Exception):
    """Raised while loading; turned into a StageError naming the file."""


class _BoundedReader(io.RawIOBase):
    """A file whose reads never ask for more than is left, so a length field claiming
    2^40 bytes cannot make the unpickler allocate 2^40 bytes."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f, self._left = f, size

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        limit = self._left if size is None or size < 0 else min(size, self._left)
        data = self._f.readline(limit)
        self._left -= len(data)
        return data


def _as_bytes(data: Any, what: str) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, memoryview):
        return data.tobytes()
    if isinstance(data, str):  # Python 2 pickles hold raw data as str (encoding='latin1')
        return data.encode("latin1")
    raise UnsafePickleError(f"{what}: raw data is a {type(data).__name__}, not bytes")


class _Dtype:
    """Stands for ``numpy.dtype(code, align, copy)`` until its state arrives."""

    def __init__(self, code: Any = None, align: Any = False, copy: Any = True) -> None:
        # numpy writes the bare type string ('f4'); the byte order comes with the state
        if not isinstance(code, str) or code not in NUMERIC_CODES:
            raise UnsafePickleError(f"dtype {_short(code)} is not a plain numeric type")
        self.code = code
        self.dtype: np.dtype[Any] | None = None

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize,
        # alignment, flags[, metadata]); a plain numeric type has nothing but the order
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)):
            raise UnsafePickleError(f"dtype {self.code}: unsupported state {_short(state)}")
        _, order, subarray, names, fields, elsize, alignment, flags = state[:8]
        extra = state[8] if len(state) == 9 else None
        if order not in BYTE_ORDERS:
            raise UnsafePickleError(f"dtype {self.code}: byte order {order!r}")
        if (subarray, names, fields, extra) != (None, None, None, None):
            raise UnsafePickleError(f"dtype {self.code}: structured or subarray dtypes are "
                                    "refused")
        if elsize != -1 or alignment != -1 or flags != 0 or isinstance(flags, bool):
            raise UnsafePickleError(f"dtype {self.code}: forged size/alignment/flags "
                                f"({elsize!r}, {alignment!r}, {flags!r})")
        self.dtype = np.dtype(self.code).newbyteorder("=" if order == "|" else order)

    def resolve(self, what: str) -> np.dtype[Any]:
        if self.dtype is None:
            raise UnsafePickleError(f"{what}: dtype {self.code} has no state")
        return self.dtype


def _dtype_of(obj: Any, what: str) -> np.dtype[Any]:
    if not isinstance(obj, _Dtype):
        raise UnsafePickleError(f"{what}: dtype is a {type(obj).__name__}")
    return obj.resolve(what)


def _shape_of(shape: Any, what: str) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)) or len(shape) > MAX_NDIM or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise UnsafePickleError(f"{what}: bad shape {_short(shape)}")
    return tuple(shape)


def _array(raw: Any, dtype: np.dtype[Any], shape: tuple[int, ...], fortran: bool,
           what: str) -> np.ndarray:
    data = _as_bytes(raw, what)
    need = math.prod(shape) * dtype.itemsize
    if len(data) != need:
        raise UnsafePickleError(f"{what}: shape {shape} of {dtype.str} needs {need} bytes, the "
                            f"file holds {len(data)}")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


class _ArrayClass:
    """Stands for ``numpy.ndarray``; only ever an argument of ``_reconstruct``."""

    def __init__(self, *args: Any) -> None:
        raise UnsafePickleError("numpy.ndarray may only be named as _reconstruct's class")


class _Array:
    """An array being rebuilt: ``_reconstruct`` makes it, BUILD gives it its state."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise UnsafePickleError(f"array: unsupported state {_short(state)}")
        _, shape, dtype, fortran, raw = state
        if not isinstance(fortran, bool):
            raise UnsafePickleError(f"array: order flag {fortran!r}")
        self.array = _array(raw, _dtype_of(dtype, "array"), _shape_of(shape, "array"),
                            fortran, "array")


def _reconstruct(cls: Any, shape: Any = (0,), typecode: Any = b"b") -> _Array:
    if cls is not _ArrayClass:
        raise UnsafePickleError("_reconstruct may only rebuild numpy.ndarray")
    return _Array()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if order not in ("C", "F"):
        raise UnsafePickleError(f"array: order {order!r}")
    return _array(buf, _dtype_of(dtype, "array"), _shape_of(shape, "array"), order == "F",
                  "array")


def _scalar(dtype: Any, data: Any = None) -> Any:
    array = _array(data, _dtype_of(dtype, "scalar"), (), False, "scalar")
    return array[()]


def _encode(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    # protocol-2 pickles spell bytes as _codecs.encode(str, "latin1"); no other codec
    if not (isinstance(obj, str) and isinstance(encoding, str)
            and encoding.lower().replace("_", "-") in ("latin1", "latin-1", "iso-8859-1")):
        raise UnsafePickleError(f"_codecs.encode with codec {_short(encoding)} is refused")
    return obj.encode("latin1")


def _bytes(*args: Any) -> bytes:
    # protocol 2 writes an empty bytes object as the call bytes()
    if args:
        raise UnsafePickleError("bytes() with arguments is refused")
    return b""


_NUMPY = {"_reconstruct": ("multiarray", _reconstruct), "scalar": ("multiarray", _scalar),
          "_frombuffer": ("numeric", _frombuffer)}
GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _ArrayClass,
    ("numpy", "dtype"): _Dtype,
    ("_codecs", "encode"): _encode,
    ("__builtin__", "bytes"): _bytes,
    ("builtins", "bytes"): _bytes,
    **{(f"numpy.{core}.{mod}", name): fn for name, (mod, fn) in _NUMPY.items()
       for core in ("core", "_core")},
}


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, (list, tuple, dict)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: Any, classes: Mapping[tuple[str, str], type]) -> None:
        super().__init__(f, encoding="latin1")
        self._classes = classes

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in self._classes:
            return self._classes[key]
        if key in GLOBALS:
            return GLOBALS[key]
        raise UnsafePickleError(f"refusing to load global {module}.{name} from the pickle")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent ids are refused")


def _finish(obj: Any, records: tuple[type, ...], depth: int, seen: set[int]) -> Any:
    """Swap rebuilt arrays in for their placeholders; refuse anything but plain data."""
    if isinstance(obj, (str, bytes, int, float, complex, type(None), np.generic, np.ndarray)):
        return obj
    if isinstance(obj, _Array):
        if obj.array is None:
            raise UnsafePickleError("an array was never given its data")
        return obj.array
    if depth > MAX_DEPTH:
        raise UnsafePickleError(f"nested deeper than {MAX_DEPTH} levels")
    if id(obj) in seen:
        raise UnsafePickleError("the pickle holds a cyclic structure")
    seen.add(id(obj))
    try:
        if isinstance(obj, list):
            return [_finish(v, records, depth + 1, seen) for v in obj]
        if isinstance(obj, tuple):
            return tuple(_finish(v, records, depth + 1, seen) for v in obj)
        if isinstance(obj, dict):
            return {_finish(k, records, depth + 1, seen): _finish(v, records, depth + 1, seen)
                    for k, v in obj.items()}
        if isinstance(obj, records):
            state = getattr(obj, "state", None)
            if not isinstance(state, dict):
                raise UnsafePickleError(f"a {type(obj).__name__} without a state dict")
            obj.state = _finish(state, records, depth + 1, seen)  # type: ignore[attr-defined]
            return obj
    finally:
        seen.discard(id(obj))
    raise UnsafePickleError(f"unexpected {type(obj).__name__} object in the pickle")


def load(path: Path, classes: Mapping[tuple[str, str], type]) -> Any:
    """Read ``path`` with only plain arrays and ``classes`` allowed; StageError otherwise."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, io.SEEK_END)
            f.seek(0)
            reader = io.BufferedReader(_BoundedReader(f, size))
            obj = _Unpickler(reader, classes).load()
            if reader.read(1):
                raise UnsafePickleError("data after the pickle's end")
        return _finish(obj, tuple(classes.values()), 0, set())
    except FileNotFoundError as exc:
        raise StageError(f"no such file: {path}") from exc
    except IsADirectoryError as exc:
        raise StageError(f"{path}: is a directory, not a pickle") from exc
    except PermissionError as exc:
        raise StageError(f"{path}: cannot read ({exc.strerror})") from exc
    except UnsafePickleError as exc:
        raise StageError(f"{path}: {exc}") from exc
    except MemoryError as exc:
        raise StageError(f"{path}: too large to load") from exc
    except RecursionError as exc:
        raise StageError(f"{path}: nested too deeply") from exc
    except Exception as exc:
        # pickle raises UnpicklingError, EOFError, ValueError, TypeError, KeyError,
        # IndexError, AttributeError, OverflowError… for damaged or crafted input
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise StageError(f"{path}: not a readable pickle ({reason})") from exc
