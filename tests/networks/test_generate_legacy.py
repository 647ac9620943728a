"""Generation and the safe import of NVIDIA-layout pickles (built here, random weights)."""

from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stylegan_ops.generate import parse_seeds
from stylegan_ops.networks.discriminator import Discriminator
from stylegan_ops.networks.generator import Generator
from stylegan_ops.networks.presets import preset
from stylegan_ops.networks.snapshot import Snapshot
from tests.conftest import cli

SMALL_KWARGS = {"resolution": 32, "num_channels": 3, "fmap_base": 512, "fmap_max": 64,
                "latent_size": 64, "dlatent_size": 64, "mapping_layers": 2,
                "mapping_lrmul": 0.01, "architecture": "skip", "label_size": 0,
                "resample_kernel": [1, 3, 3, 1], "fused_modconv": True,
                "truncation_psi": 0.5, "mbstd_group_size": 4}


@pytest.fixture(scope="module")
def stub_network() -> type:
    """A stand-in for dnnlib.tflib.network.Network: pickles as NVIDIA's does."""
    class Network:
        def __init__(self, state: dict[str, Any]) -> None:
            self.__dict__["_state"] = state

        def __getstate__(self) -> dict[str, Any]:
            return self._state

    Network.__module__ = "dnnlib.tflib.network"
    Network.__qualname__ = "Network"
    for name in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["dnnlib.tflib.network"].Network = Network  # type: ignore[attr-defined]
    yield Network
    for name in ("dnnlib.tflib.network", "dnnlib.tflib", "dnnlib"):
        sys.modules.pop(name, None)


def make_pickle(network_cls: type, path: Path, version: int = 4,
                extra_kwargs: dict[str, Any] | None = None) -> tuple[Generator, Path]:
    cfg = preset("small")
    g, d = Generator(cfg, seed=11), Discriminator(cfg, seed=12)
    g.w_avg.assign(np.random.default_rng(5).standard_normal(cfg.w_dim).astype(np.float32))
    arrays = {k: v.numpy() for k, v in g.params.items()}

    def net(name: str, variables: dict[str, np.ndarray], components: dict[str, Any],
            kwargs: dict[str, Any]) -> Any:
        return network_cls({"version": version, "name": name, "static_kwargs": kwargs,
                            "components": components, "build_func_name": name,
                            "build_module_src": "import os\nos.system('touch PWNED')\n",
                            "variables": list(variables.items())})

    def component(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix)}

    def g_net() -> Any:
        return net("G", {"dlatent_avg": arrays["dlatent_avg"]},
                   {"mapping": net("G_mapping", component("G_mapping"), {}, {}),
                    "synthesis": net("G_synthesis", component("G_synthesis"), {}, {})},
                   {**SMALL_KWARGS, **(extra_kwargs or {})})

    d_net = net("D", {k: v.numpy() for k, v in d.params.items()}, {}, {"resolution": 32})
    path.write_bytes(pickle.dumps((g_net(), d_net, g_net()), protocol=2))
    return g, path


def test_parse_seeds() -> None:
    assert parse_seeds("6600-6605") == tuple(range(6600, 6606))
    assert parse_seeds("1,5-6,9") == (1, 5, 6, 9)
    for bad in ("", "a-b", "9-3"):
        with pytest.raises(Exception, match="seed"):
            parse_seeds(bad)


def test_import_generate_and_match_our_own_generator(stub_network: type, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    g, pkl = make_pickle(stub_network, tmp_path / "cat.pkl")
    res = cli("import-pkl", pkl, "--out", tmp_path / "snap")
    assert res.exit_code == 0, res.stderr
    snap = Snapshot.load(tmp_path / "snap")
    assert snap.config == preset("small")
    np.testing.assert_array_equal(snap.Gs["G_synthesis/4x4/Const/const"],
                                  g.params["G_synthesis/4x4/Const/const"].numpy())
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
    pytest.param(3, {}, "version 3 is too old", id="old-version"),
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
