"""Hostile pickles: every one is refused with exit 2 and one line, never a crash.

The files are assembled opcode by opcode from the pickle protocol's published description
(``pickletools``), either alone or spliced into an otherwise valid NVIDIA network pickle, and
each is fed to ``import-pkl`` and ``generate --network`` in a real process, so a signal
(SIGSEGV from a forged dtype) would show as a negative return code."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from stylegan_ops.errors import StageError
from stylegan_ops.safepickle import load
from tests.netfiles import SMALL_KWARGS, nvidia_network_class, nvidia_networks

MARKER = b"@@HOSTILE@@"
PAYLOAD = "touch PWNED"


# --- opcodes -----------------------------------------------------------------------------
def glob(module: str, name: str) -> bytes:  # GLOBAL (protocols 0-3)
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def stack_glob(module: str, name: str) -> bytes:  # STACK_GLOBAL (protocol 4)
    return text(module) + text(name) + b"\x93"


def text(s: str) -> bytes:  # BINUNICODE
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def raw(data: bytes) -> bytes:  # BINBYTES
    return b"B" + struct.pack("<I", len(data)) + data


def num(i: int) -> bytes:  # BININT, or LONG1 beyond 32 bits
    if -(2 ** 31) <= i < 2 ** 31:
        return b"J" + struct.pack("<i", i)
    body = i.to_bytes((i.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(body)]) + body


def tup(*items: bytes) -> bytes:  # MARK … TUPLE
    return b"(" + b"".join(items) + b"t"


NONE, TRUE, FALSE, REDUCE, BUILD = b"N", b"\x88", b"\x89", b"R", b"b"


def call(fn: bytes, *args: bytes) -> bytes:
    return fn + tup(*args) + REDUCE


def dtype(code: str = "f4", order: str = "<", flags: int = 0, fields: bytes = NONE,
          names: bytes = NONE, subarray: bytes = NONE, elsize: int = -1, align: int = -1,
          version: int = 3) -> bytes:
    state = tup(num(version), text(order), subarray, names, fields, num(elsize), num(align),
                num(flags))
    return call(glob("numpy", "dtype"), text(code), FALSE, TRUE) + state + BUILD


def array(shape: tuple[int, ...] = (2,), dt: bytes | None = None,
          data: bytes = b"\0" * 8, cls: bytes | None = None, fortran: bytes = FALSE) -> bytes:
    head = call(glob("numpy.core.multiarray", "_reconstruct"), cls or glob("numpy", "ndarray"),
                tup(num(0)), raw(b"b"))
    state = tup(num(1), tup(*map(num, shape)), dt or dtype(), fortran, raw(data))
    return head + state + BUILD


def alone(body: bytes, proto: int = 2) -> bytes:
    return b"\x80" + bytes([proto]) + body + b"."


def nested(body: bytes) -> bytes:
    """A valid small NVIDIA pickle whose Gs's dlatent_avg is replaced by ``body``."""
    with nvidia_network_class() as cls:
        nets = nvidia_networks(cls, SMALL_KWARGS)
        state = nets[2].__getstate__()
        state["variables"][1] = ("dlatent_avg", MARKER)
        data = pickle.dumps(nets, protocol=3)
    spot = b"C" + bytes([len(MARKER)]) + MARKER  # SHORT_BINBYTES, never memoised first
    assert data.count(spot) == 1
    return data.replace(spot, body)


def network_state(edit: Callable[[dict], None]) -> bytes:  # type: ignore[type-arg]
    with nvidia_network_class() as cls:
        nets = nvidia_networks(cls, SMALL_KWARGS)
        edit(nets[2].__getstate__())
        return pickle.dumps(nets, protocol=3)


def valid() -> bytes:
    return network_state(lambda s: None)


def cyclic() -> bytes:
    items: list[object] = []
    items.append(items)
    return pickle.dumps(items, protocol=3)


SYSTEM = call(glob("os", "system"), text(PAYLOAD))
CASES: list[tuple[str, Callable[[], bytes]]] = [
    # globals, through every opcode that can name one
    ("global-os-system", lambda: alone(SYSTEM)),
    ("stack-global-os-system", lambda: alone(stack_glob("os", "system") + tup(text(PAYLOAD))
                                             + REDUCE, 4)),
    ("inst-os-system", lambda: b"(" + text(PAYLOAD) + b"ios\nsystem\n."),
    ("obj-os-system", lambda: b"(" + glob("os", "system") + text(PAYLOAD) + b"o."),
    ("ext1-unregistered", lambda: alone(b"\x82\x01" + tup(text(PAYLOAD)) + REDUCE)),
    ("builtins-eval", lambda: alone(call(glob("builtins", "eval"),
                                         text(f"__import__('os').system('{PAYLOAD}')")))),
    ("builtins-getattr", lambda: alone(call(glob("builtins", "getattr"),
                                            glob("numpy", "ndarray"), text("tofile")))),
    ("numpy-load", lambda: alone(call(glob("numpy", "load"), text("x.npy")))),
    ("numpy-frombuffer", lambda: alone(call(glob("numpy", "frombuffer"), raw(b"\0" * 8)))),
    ("copyreg-reconstructor", lambda: alone(call(glob("copyreg", "_reconstructor"),
                                                 glob("os", "system"), NONE, NONE))),
    ("dotted-name", lambda: alone(stack_glob("numpy", "ndarray.tofile") + b".", 4)),
    ("reconstruct-other-class", lambda: alone(array(cls=glob("dnnlib.tflib.network",
                                                             "Network")))),
    ("ndarray-called-with-2^40", lambda: alone(call(glob("numpy", "ndarray"),
                                                    tup(num(2 ** 40))))),
    ("persistent-id", lambda: alone(text("x") + b"Q")),
    ("global-inside-network", lambda: nested(SYSTEM)),
    # forged dtypes
    ("object-dtype", lambda: nested(array(dt=dtype("O8", "|")))),
    # object dtype without the list-pickle flag: raw bytes become pointers (SIGSEGV before)
    ("object-dtype-bytes-as-pointers", lambda: nested(array(
        (1,), dtype("O8", "|", flags=61), b"\x41" * 8))),
    ("void-dtype-object-flags", lambda: nested(array(dt=dtype("V8", "|", flags=63)))),
    ("float-dtype-object-flags", lambda: nested(array(dt=dtype(flags=63)))),
    ("structured-fields", lambda: nested(array(dt=dtype(
        "V8", "|", names=tup(text("a")), fields=b"}" + text("a") + tup(dtype(), num(0)) +
        b"s", elsize=8, align=1)))),
    ("subarray-dtype", lambda: nested(array(dt=dtype("V8", "|", subarray=tup(
        dtype(), tup(num(2))), elsize=8, align=4)))),
    ("forged-elsize", lambda: nested(array(dt=dtype(elsize=1000)))),
    ("bad-byte-order", lambda: nested(array(dt=dtype(order="X")))),
    ("dtype-state-version", lambda: nested(array(dt=dtype(version=99)))),
    ("string-dtype", lambda: nested(array(dt=dtype("U4")))),
    ("datetime-dtype", lambda: nested(array(dt=dtype("M8")))),
    ("dtype-without-state", lambda: nested(array(dt=call(glob("numpy", "dtype"), text("f4"),
                                                         FALSE, TRUE)))),
    ("dtype-as-a-string", lambda: nested(array(dt=text("f4")))),
    # sizes that do not match the bytes, and huge claims
    ("fewer-bytes-than-shape", lambda: nested(array((10,), data=b"\0" * 8))),
    ("shape-2^40-elements", lambda: nested(array((2 ** 40,), data=b"\0" * 4))),
    ("shape-2^62-by-2^62", lambda: nested(array((2 ** 62, 2 ** 62), data=b""))),
    ("negative-dimension", lambda: nested(array((-2,), data=b""))),
    ("too-many-dimensions", lambda: nested(array((1,) * 100, data=b"\0" * 4))),
    ("binbytes8-claims-2^40", lambda: alone(b"\x8e" + struct.pack("<Q", 2 ** 40) + b"ab", 4)),
    ("binunicode8-claims-2^62", lambda: alone(b"\x8d" + struct.pack("<Q", 2 ** 62) + b"ab",
                                              4)),
    ("long4-claims-2^31", lambda: alone(b"\x8b" + struct.pack("<i", 2 ** 31 - 1) + b"\0")),
    ("scalar-wrong-byte-count", lambda: nested(call(glob("numpy.core.multiarray", "scalar"),
                                                    dtype(), raw(b"\0" * 3)))),
    ("frombuffer-wrong-size", lambda: nested(call(glob("numpy._core.numeric", "_frombuffer"),
                                                  raw(b"\0" * 4), dtype(), tup(num(3)),
                                                  text("C")))),
    ("codec-zlib", lambda: nested(call(glob("_codecs", "encode"), text("x"), text("zlib")))),
    ("codec-rot13", lambda: nested(call(glob("_codecs", "encode"), text("x"),
                                        text("rot13")))),
    ("codec-on-bytes", lambda: nested(call(glob("_codecs", "encode"), raw(b"x"),
                                           text("latin1")))),
    ("weights-of-ints", lambda: nested(array((2,), dtype("i4"), b"\0" * 8))),
    # wrong types anywhere in the state
    ("top-level-list", lambda: pickle.dumps([1, 2, 3], protocol=3)),
    ("top-level-pair", lambda: pickle.dumps((1, 2), protocol=3)),
    ("variables-a-dict", lambda: network_state(lambda s: s.update(variables={"a": 1}))),
    ("variables-triples", lambda: network_state(
        lambda s: s.update(variables=[(n, v, v) for n, v in s["variables"]]))),
    ("variable-name-an-int", lambda: network_state(
        lambda s: s.update(variables=[(7, v) for _, v in s["variables"]]))),
    ("variable-value-a-str", lambda: network_state(
        lambda s: s["variables"].__setitem__(1, ("dlatent_avg", "zeros")))),
    ("version-a-string", lambda: network_state(lambda s: s.update(version="4"))),
    ("version-a-bool", lambda: network_state(lambda s: s.update(version=True))),
    ("components-a-list", lambda: network_state(lambda s: s.update(components=[1]))),
    ("component-an-int", lambda: network_state(lambda s: s.update(components={"mapping": 3}))),
    ("static-kwargs-a-list", lambda: network_state(lambda s: s.update(static_kwargs=[1]))),
    ("static-kwargs-int-keys", lambda: network_state(lambda s: s.update(static_kwargs={1: 2}))),
    ("name-an-int", lambda: network_state(lambda s: s.update(build_func_name=5))),
    ("network-without-state", lambda: alone(glob("dnnlib.tflib.network", "Network") +
                                            tup() + b"\x81")),
    ("cyclic-list", cyclic),
    ("nested-100000-deep", lambda: alone(b"]" * 100_000 + b"a" * 99_999)),
    # truncated and damaged files
    *[(f"truncated-at-{frac}", lambda frac=frac: valid()[:int(len(valid()) * frac)])
      for frac in (0.001, 0.3, 0.5, 0.999)],
    ("one-byte-short", lambda: valid()[:-1]),
    ("empty-file", lambda: b""),
    ("random-bytes", lambda: np.random.default_rng(0).bytes(4096)),
    ("data-after-stop", lambda: valid() + b"\x80\x02N."),
]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stylegan_ops.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("make"), [pytest.param(make, id=name) for name, make in CASES])
def test_hostile_pickles_exit_2_with_one_line(tmp_path: Path,
                                              make: Callable[[], bytes]) -> None:
    (tmp_path / "net.pkl").write_bytes(make())
    runs = [["import-pkl", "net.pkl", "--out", "snap"],
            ["generate", "--network", "net.pkl", "--seeds", "1", "--out", "img"]]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda a: _run(a, tmp_path), runs))
    for args, res in zip(runs, results, strict=True):
        assert res.returncode == 2, (args[0], res.returncode, res.stderr[-2000:])
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("stylegan-ops: error:"), res.stderr
        assert "net.pkl" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pkl"]  # no PWNED, no output


@pytest.mark.parametrize("path", ["missing.pkl", "."])
def test_missing_or_directory_path(tmp_path: Path, path: str) -> None:
    res = _run(["import-pkl", path, "--out", "snap"], tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("value", [
    pytest.param(np.arange(6, dtype="<f4").reshape(2, 3), id="f4"),
    pytest.param(np.arange(6, dtype=">f8").reshape(3, 2), id="big-endian-f8"),
    pytest.param(np.asfortranarray(np.arange(6, dtype="f2").reshape(2, 3)), id="fortran"),
    pytest.param(np.array([True, False]), id="bool"),
    pytest.param(np.array([1 + 2j], "c8"), id="complex"),
    pytest.param(np.uint16(7), id="scalar"),
    pytest.param(np.zeros((0, 4), "i8"), id="empty"),
])
def test_plain_arrays_pickled_by_numpy_come_back_equal(tmp_path: Path, protocol: int,
                                                       value: np.ndarray) -> None:
    path = tmp_path / "a.pkl"
    path.write_bytes(pickle.dumps({"v": [value]}, protocol=protocol))
    out = load(path, {})["v"][0]
    assert out.dtype == value.dtype and out.shape == value.shape
    np.testing.assert_array_equal(out, value)


def test_python2_str_data_is_read_as_latin1(tmp_path: Path) -> None:
    """Python 2 pickled raw array data as a str (SHORT_BINSTRING), read back as latin1."""
    data = np.arange(2, dtype="<f4").tobytes()
    state = tup(num(1), tup(num(2)), dtype(), FALSE, b"U" + bytes([len(data)]) + data)
    head = call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"),
                tup(num(0)), b"U\x01b")
    (tmp_path / "py2.pkl").write_bytes(alone(head + state + BUILD))
    np.testing.assert_array_equal(load(tmp_path / "py2.pkl", {}), [0.0, 1.0])


def test_a_refusal_is_a_stage_error(tmp_path: Path) -> None:
    (tmp_path / "x.pkl").write_bytes(alone(SYSTEM))
    with pytest.raises(StageError, match=r"refusing to load global os\.system"):
        load(tmp_path / "x.pkl", {})
