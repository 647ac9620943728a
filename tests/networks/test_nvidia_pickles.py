"""NVIDIA's pickles as dnnlib writes them (``lod`` and all) import and generate.

The files are built by ``tests.netfiles`` from the published description of NVIDIA's
networks and of tflib's pickling, not from this project's networks or reader."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stylegan_ops.legacy import nvidia_shapes
from stylegan_ops.networks.presets import NetworkConfig, preset
from stylegan_ops.networks.snapshot import Snapshot
from tests.conftest import cli
from tests.netfiles import PUBLISHED, make_pickle, nvidia_network_class, nvidia_networks


@pytest.fixture(scope="module")
def stub_network() -> Iterator[type]:
    with nvidia_network_class() as cls:
        yield cls


def _record(snap_dir: Path) -> dict[str, Any]:
    return json.loads((snap_dir / "config.json").read_text())["import"]


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_configs_import_and_generate(stub_network: type, tmp_path: Path,
                                               name: str) -> None:
    kwargs = PUBLISHED[name]
    gs, pkl = make_pickle(stub_network, tmp_path / "net.pkl", kwargs=kwargs)
    res = cli("import-pkl", pkl, "--out", tmp_path / "snap")
    assert res.exit_code == 0, res.stderr
    snap = Snapshot.load(tmp_path / "snap")
    assert snap.config == NetworkConfig(resolution=kwargs["resolution"],
                                        fmap_base=kwargs.get("fmap_base", 16384))
    assert set(snap.Gs) == set(gs) - {"lod"}
    for key in ("G_synthesis/4x4/Const/const", "G_mapping/Dense7/weight", "dlatent_avg",
                f"G_synthesis/{kwargs['resolution']}x{kwargs['resolution']}/ToRGB/weight"):
        np.testing.assert_array_equal(snap.Gs[key], gs[key])
    record = _record(tmp_path / "snap")
    assert record["ignored_variables"] == ["G/lod", "Gs/lod"]
    assert record["static_kwargs"]["Gs/mapping"]["dlatent_broadcast"] == snap.config.num_ws
    res = cli("generate", "--network", pkl, "--seeds", "6600", "--out", tmp_path / "img")
    assert res.exit_code == 0, res.stderr
    from PIL import Image

    assert Image.open(tmp_path / "img/seed6600.png").size == (kwargs["resolution"],) * 2


def test_lod_is_ignored_and_the_images_are_the_weights_own(stub_network: type,
                                                          tmp_path: Path) -> None:
    """The seeds a pickle generates equal those of a snapshot written straight from the
    same arrays, so ignoring ``lod`` changes nothing."""
    gs, pkl = make_pickle(stub_network, tmp_path / "cat.pkl")
    assert gs["lod"].shape == () and "G_synthesis/noise12" not in gs  # 32 px: 7 noise inputs
    arrays = {k: v for k, v in gs.items() if k != "lod"}
    Snapshot(preset("small"), {}, {}, arrays, {}, {}).save(tmp_path / "direct")
    for net, out in ((pkl, "from-pkl"), (tmp_path / "direct", "from-arrays")):
        res = cli("generate", "--network", net, "--seeds", "1-3", "--truncation-psi", "0.7",
                  "--noise-mode", "const", "--out", tmp_path / out)
        assert res.exit_code == 0, res.stderr
    for seed in (1, 2, 3):
        assert (tmp_path / f"from-pkl/seed{seed:04d}.png").read_bytes() == \
            (tmp_path / f"from-arrays/seed{seed:04d}.png").read_bytes()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_gives_the_same_weights(stub_network: type, tmp_path: Path,
                                                      protocol: int) -> None:
    gs, pkl = make_pickle(stub_network, tmp_path / "cat.pkl", protocol=protocol)
    res = cli("import-pkl", pkl, "--out", tmp_path / "snap")
    assert res.exit_code == 0, res.stderr
    snap = Snapshot.load(tmp_path / "snap")
    for key, value in snap.Gs.items():
        np.testing.assert_array_equal(value, gs[key])


def test_import_record_names_the_source(stub_network: type, tmp_path: Path) -> None:
    import hashlib

    _, pkl = make_pickle(stub_network, tmp_path / "stylegan2-cat-config-f.pkl")
    res = cli("import-pkl", pkl, "--out", tmp_path / "snap")
    assert res.exit_code == 0, res.stderr
    record = _record(tmp_path / "snap")
    assert record["source"] == "stylegan2-cat-config-f.pkl"
    assert record["sha256"] == hashlib.sha256(pkl.read_bytes()).hexdigest()
    assert record["static_kwargs"]["G"]["resolution"] == 32
    assert record["build_func_names"] == {"G": "G_main", "D": "D_stylegan2", "Gs": "G_main"}
    assert json.loads(res.stdout.splitlines()[-1])["import"] == record


def _with(stub: type, path: Path, edit: Any) -> Path:
    nets = nvidia_networks(stub, {"resolution": 32, "fmap_base": 512, "fmap_max": 64,
                                  "latent_size": 64, "dlatent_size": 64, "mapping_layers": 2,
                                  "mapping_fmaps": 64})
    edit(*(n.__getstate__() for n in nets))
    path.write_bytes(pickle.dumps(nets, protocol=3))
    return path


def _kwargs(g: dict[str, Any], **kwargs: Any) -> None:
    """Set static_kwargs as G_main would: on G and on both components alike."""
    for net in (g, *(c.__getstate__() for c in g["components"].values())):
        net["static_kwargs"].update(kwargs)


def _all(g: dict[str, Any], d: dict[str, Any], gs: dict[str, Any], **kwargs: Any) -> None:
    _kwargs(g, **kwargs)
    _kwargs(gs, **kwargs)
    d["static_kwargs"].update(kwargs)


def _add_var(net: dict[str, Any], name: str) -> None:
    net["variables"].append((name, np.float32(0)))


@pytest.mark.parametrize(("edit", "message"), [
    pytest.param(lambda g, d, gs: _add_var(gs, "lod_extra"), "unexpected: ['lod_extra']",
                 id="unknown-variable"),
    pytest.param(lambda g, d, gs: _all(g, d, gs, resolution=32768), "resolution=32768",
                 id="huge-resolution"),
    pytest.param(lambda g, d, gs: _all(g, d, gs, resolution="256"), "resolution='256'",
                 id="resolution-string"),
    pytest.param(lambda g, d, gs: _all(g, d, gs, fmap_max=1 << 20), "fmap_max=1048576",
                 id="huge-fmap-max"),
    pytest.param(lambda g, d, gs: _all(g, d, gs, fmap_max=32), "the network expects",
                 id="settings-against-shapes"),
    pytest.param(lambda g, d, gs: _kwargs(gs, label_size=10), "label_size=10",
                 id="conditional"),
    pytest.param(lambda g, d, gs: _add_var(gs["components"]["synthesis"].__getstate__(),
                                           "lod"), "unexpected: ['G_synthesis/lod']",
                 id="lod-in-the-wrong-place"),
    pytest.param(lambda g, d, gs: gs["variables"].pop(1), "missing: ['dlatent_avg']",
                 id="missing-variable"),
    pytest.param(lambda g, d, gs: d["static_kwargs"].update(fmap_base=1024),
                 "G has fmap_base=512 but D has 1024", id="d-differs"),
    pytest.param(lambda g, d, gs: gs["components"]["mapping"].__getstate__()[
        "static_kwargs"].update(dlatent_broadcast=9), "dlatent_broadcast=9", id="broadcast"),
    pytest.param(lambda g, d, gs: gs["components"]["synthesis"].__getstate__().update(
        build_func_name="G_synthesis_stylegan_revised"), "not StyleGAN2's",
        id="config-a-synthesis"),
    pytest.param(lambda g, d, gs: _kwargs(gs, architecture="resnet"),
                 "architecture='resnet'", id="resnet-generator"),
    pytest.param(lambda g, d, gs: _kwargs(gs, mapping_fmaps=32),
                 "mapping_fmaps=32", id="mapping-width"),
])
def test_layouts_we_cannot_run_are_refused_naming_why(stub_network: type, tmp_path: Path,
                                                     edit: Any, message: str) -> None:
    pkl = _with(stub_network, tmp_path / "x.pkl", edit)
    for args in (("import-pkl", pkl, "--out", tmp_path / "snap"),
                 ("generate", "--network", pkl, "--seeds", "1", "--out", tmp_path / "img")):
        res = cli(*args)
        assert res.exit_code == 2 and message in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "snap").exists() and not (tmp_path / "img").exists()


@pytest.mark.parametrize("cfg", [preset("small"), preset("config-e", resolution=64),
                                 preset("small", mbstd_group=0, num_channels=1)])
def test_the_shape_table_is_what_our_networks_build(cfg: NetworkConfig) -> None:
    from stylegan_ops.networks.discriminator import Discriminator
    from stylegan_ops.networks.generator import Generator

    want = nvidia_shapes(cfg)
    assert {k: tuple(v.shape) for k, v in Generator(cfg).params.items()} == want["G"]
    assert {k: tuple(v.shape) for k, v in Discriminator(cfg).params.items()} == want["D"]
