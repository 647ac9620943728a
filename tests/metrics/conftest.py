"""The metrics tests' shared inputs: a small generated dataset, a random network in both
formats and stand-in detector files, built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stylegan_ops.data.prepare import PrepareConfig
from stylegan_ops.data.prepare import run as prepare
from stylegan_ops.networks.generator import Generator
from stylegan_ops.networks.presets import preset
from stylegan_ops.networks.snapshot import Snapshot
from tests.netfiles import inception_graph, make_pickle, nvidia_network_class, vgg_pickle


@pytest.fixture(scope="session")
def setup(sample_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    prepare(PrepareConfig("lsun", sample_lmdb, root / "cats32", 32, max_images=40))
    g = Generator(preset("small"))
    arrays = {k: v.numpy() for k, v in g.params.items()}
    Snapshot(preset("small"), arrays, {}, arrays, {"kimg": 0}, {}).save(root / "net")
    with nvidia_network_class() as cls:
        make_pickle(cls, root / "nvidia.pkl")
    files = {"inception": inception_graph(root / "classify_image_graph_def.pb"),
             "vgg16": vgg_pickle(root / "vgg16.pkl", "vgg16"),
             "lpips": vgg_pickle(root / "vgg16_zhang_perceptual.pkl", "lpips")}
    return {"data": root / "cats32", "snapshot": root / "net", "pkl": root / "nvidia.pkl",
            **files}


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("STYLEGAN_CACHE", str(tmp_path / "cache"))
    yield tmp_path / "cache"


@pytest.fixture(scope="session")
def subset(sample_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 10 of ``setup``'s 40 images: the subset a network is trained on while the
    40 are the full dataset."""
    out = tmp_path_factory.mktemp("subset") / "cats32-10"
    prepare(PrepareConfig("lsun", sample_lmdb, out, 32, max_images=10))
    return out
