"""Generation and the safe import of NVIDIA-layout pickles (built here, random weights)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stylegan_ops.generate import parse_seeds
from stylegan_ops.networks.presets import preset
from stylegan_ops.networks.snapshot import Snapshot
from tests.conftest import cli
from tests.netfiles import make_pickle, nvidia_network_class


@pytest.fixture(scope="module")
def stub_network() -> Iterator[type]:
    with nvidia_network_class() as cls:
        yield cls


def test_parse_seeds() -> None:
    assert parse_seeds("6600-6605") == tuple(range(6600, 6606))
    assert parse_seeds("1,5-6,9") == (1, 5, 6, 9)
    for bad in ("", "a-b", "9-3"):
        with pytest.raises(Exception, match="seed"):
            parse_seeds(bad)


def test_import_generate_and_match_our_own_generator(stub_network: type, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    gs, pkl = make_pickle(stub_network, tmp_path / "cat.pkl")
    res = cli("import-pkl", pkl, "--out", tmp_path / "snap")
    assert res.exit_code == 0, res.stderr
    snap = Snapshot.load(tmp_path / "snap")
    assert snap.config == preset("small")
    np.testing.assert_array_equal(snap.Gs["G_synthesis/4x4/Const/const"],
                                  gs["G_synthesis/4x4/Const/const"])
    for net, name in ((pkl, "a"), (tmp_path / "snap", "b"), (pkl, "c")):
        res = cli("generate", "--network", net, "--seeds", "6600-6602", "--out",
                  tmp_path / name, "--truncation-psi", "0.5")
        assert res.exit_code == 0, res.stderr
    for seed in (6600, 6601, 6602):
        a = (tmp_path / "a" / f"seed{seed}.png").read_bytes()
        assert a == (tmp_path / "b" / f"seed{seed}.png").read_bytes()
        assert a == (tmp_path / "c" / f"seed{seed}.png").read_bytes()  # deterministic
    assert (tmp_path / "a/seed6600.png").read_bytes() != (tmp_path / "a/seed6601.png").read_bytes()
    assert not (tmp_path / "PWNED").exists()  # the embedded source never ran


def test_psi_zero_makes_every_seed_the_average(stub_network: type, tmp_path: Path) -> None:
    _, pkl = make_pickle(stub_network, tmp_path / "cat.pkl")
    res = cli("generate", "--network", pkl, "--seeds", "1,2,3", "--truncation-psi", "0",
              "--noise-mode", "none", "--out", tmp_path / "g")
    assert res.exit_code == 0, res.stderr
    pngs = {(tmp_path / "g" / f"seed{s:04d}.png").read_bytes() for s in (1, 2, 3)}
    assert len(pngs) == 1


def test_style_mix_grid(stub_network: type, tmp_path: Path) -> None:
    _, pkl = make_pickle(stub_network, tmp_path / "cat.pkl")
    res = cli("style-mix", "--network", pkl, "--row-seeds", "1,2", "--col-seeds", "3,4,5",
              "--col-styles", "0-3", "--out", tmp_path / "mix")
    assert res.exit_code == 0, res.stderr
    from PIL import Image

    assert Image.open(tmp_path / "mix/grid.png").size == (4 * 32, 3 * 32)


class Smuggler:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch SMUGGLED",))


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval"])
def test_pickles_with_other_globals_are_refused_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: str) -> None:
    monkeypatch.chdir(tmp_path)
    if payload == "os.system":
        data = pickle.dumps((Smuggler(),), protocol=2)
    else:
        data = pickle.dumps((eval,), protocol=2)  # a reference to builtins.eval
    (tmp_path / "evil.pkl").write_bytes(data)
    res = cli("import-pkl", tmp_path / "evil.pkl", "--out", tmp_path / "snap")
    assert res.exit_code == 2
    assert "refusing to load global" in res.stderr
    assert not (tmp_path / "SMUGGLED").exists() and not (tmp_path / "snap").exists()


@pytest.mark.parametrize(("version", "extra", "message"), [
    pytest.param(3, {}, "version 3, too old", id="old-version"),
    pytest.param(4, {"label_size": 10}, "label_size=10", id="conditional"),
    pytest.param(4, {"spectral_norm": True}, "unknown static_kwargs in the pickle: "
                 "spectral_norm", id="unknown-kwarg"),
])
def test_unsupported_pickles_exit_2_naming_why(stub_network: type, tmp_path: Path,
                                               version: int, extra: dict[str, Any],
                                               message: str) -> None:
    _, pkl = make_pickle(stub_network, tmp_path / "cat.pkl", version, extra)
    res = cli("import-pkl", pkl, "--out", tmp_path / "snap")
    assert res.exit_code == 2 and message in res.stderr
