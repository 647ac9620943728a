"""Files in the formats of NVIDIA's and Google's networks, built here with random weights:
network pickles (the dnnlib layout) and the Inception GraphDef (same tensor names)."""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_ops.metrics.detectors import VGG_BLOCKS
from stylegan_ops.networks.discriminator import Discriminator
from stylegan_ops.networks.generator import Generator
from stylegan_ops.networks.presets import preset

SMALL_KWARGS = {"resolution": 32, "num_channels": 3, "fmap_base": 512, "fmap_max": 64,
                "latent_size": 64, "dlatent_size": 64, "mapping_layers": 2,
                "mapping_lrmul": 0.01, "architecture": "skip", "label_size": 0,
                "resample_kernel": [1, 3, 3, 1], "fused_modconv": True,
                "truncation_psi": 0.5, "mbstd_group_size": 4}


@contextmanager
def nvidia_network_class() -> Iterator[type]:
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
    try:
        yield Network
    finally:
        for name in ("dnnlib.tflib.network", "dnnlib.tflib", "dnnlib"):
            sys.modules.pop(name, None)


def _net(cls: type, name: str, variables: list[tuple[str, np.ndarray]],
         components: dict[str, Any], kwargs: dict[str, Any], version: int = 4) -> Any:
    return cls({"version": version, "name": name, "static_kwargs": kwargs,
                "components": components, "build_func_name": name,
                "build_module_src": "import os\nos.system('touch PWNED')\n",
                "variables": variables})


def make_pickle(network_cls: type, path: Path, version: int = 4,
                extra_kwargs: dict[str, Any] | None = None, seed: int = 11
                ) -> tuple[Generator, Path]:
    """A (G, D, Gs) pickle of the ``small`` preset in NVIDIA's layout."""
    cfg = preset("small")
    g, d = Generator(cfg, seed=seed), Discriminator(cfg, seed=seed + 1)
    g.w_avg.assign(np.random.default_rng(5).standard_normal(cfg.w_dim).astype(np.float32))
    arrays = {k: v.numpy() for k, v in g.params.items()}

    def component(prefix: str) -> list[tuple[str, np.ndarray]]:
        return [(k[len(prefix) + 1:], v) for k, v in arrays.items() if k.startswith(prefix)]

    def g_net() -> Any:
        return _net(network_cls, "G", [("dlatent_avg", arrays["dlatent_avg"])],
                    {"mapping": _net(network_cls, "G_mapping", component("G_mapping"), {}, {},
                                     version),
                     "synthesis": _net(network_cls, "G_synthesis", component("G_synthesis"),
                                       {}, {}, version)},
                    {**SMALL_KWARGS, **(extra_kwargs or {})}, version)

    d_net = _net(network_cls, "D", [(k, v.numpy()) for k, v in d.params.items()], {},
                 {"resolution": 32}, version)
    path.write_bytes(pickle.dumps((g_net(), d_net, g_net()), protocol=2))
    return g, path


TINY_WIDTHS = (4, 8, 8, 16, 16)  # VGG16's topology, narrow enough for CPU tests


def _vgg_convs(rng: np.random.Generator, widths: tuple[int, ...]
               ) -> list[tuple[str, np.ndarray]]:
    out, cin = [], 3
    for block, (count, width) in enumerate(zip(VGG_BLOCKS, widths, strict=True), 1):
        for layer in range(1, count + 1):
            scale = np.sqrt(2 / (9 * cin))
            out += [(f"conv{block}_{layer}/weight",
                     (rng.standard_normal((3, 3, cin, width)) * scale).astype(np.float32)),
                    (f"conv{block}_{layer}/bias", np.zeros(width, np.float32))]
            cin = width
    return out


def vgg_pickle(path: Path, kind: str, widths: tuple[int, ...] = TINY_WIDTHS, fc: int = 32,
               seed: int = 0, variables: list[tuple[str, np.ndarray]] | None = None) -> Path:
    """``vgg16.pkl`` (kind vgg16: convs + fc6/fc7/fc8) or ``vgg16_zhang_perceptual.pkl``
    (kind lpips: convs + five lin weights) with random weights."""
    rng = np.random.default_rng(seed)
    if variables is None:
        variables = _vgg_convs(rng, widths)
        if kind == "vgg16":
            dims = [7 * 7 * widths[-1], fc, fc, 10]
            for i, name in enumerate(("fc6", "fc7", "fc8")):
                variables += [(f"{name}/weight", (rng.standard_normal(dims[i:i + 2]) /
                                                  np.sqrt(dims[i])).astype(np.float32)),
                              (f"{name}/bias", np.zeros(dims[i + 1], np.float32))]
        else:
            variables += [(f"lin{i}/weight", rng.uniform(0, 1, (1, 1, w, 1)).astype(np.float32))
                          for i, w in enumerate(widths)]
    with nvidia_network_class() as cls:
        path.write_bytes(pickle.dumps(_net(cls, kind, variables, {}, {}), protocol=2))
    return path


def inception_graph(path: Path, dim: int = 64, classes: int = 10, seed: int = 0) -> Path:
    """A GraphDef with the 2015-12-05 graph's tensor names around a tiny network: JPEG
    input, ExpandDims, ResizeBilinear to 299, pool_3, a [1, dim] reshape, softmax."""
    import tensorflow as tf

    rng = np.random.RandomState(seed)
    graph = tf.Graph()
    with graph.as_default():
        contents = tf.raw_ops.Placeholder(dtype=tf.string, shape=[], name="DecodeJpeg/contents")
        x = tf.cast(tf.io.decode_jpeg(contents, name="DecodeJpeg"), tf.float32, name="Cast")
        x = tf.expand_dims(x, 0, name="ExpandDims")
        x = tf.raw_ops.ResizeBilinear(images=x, size=tf.constant([299, 299]),
                                      name="ResizeBilinear")
        x = tf.nn.avg_pool2d((x - 128.0) / 128.0, 13, 13, "VALID")  # 23×23
        w = tf.constant(rng.randn(3, 3, 3, dim).astype(np.float32) / 3, name="conv/weights")
        x = tf.nn.relu(tf.nn.conv2d(x, w, 1, "VALID"))
        pool = tf.nn.avg_pool2d(x, 21, 1, "VALID", name="pool_3")
        flat = tf.reshape(pool, [1, dim], name="pool_3/_reshape")
        sw = tf.constant(rng.randn(dim, classes).astype(np.float32), name="softmax/weights")
        logits = tf.matmul(flat, sw, name="softmax/logits/MatMul")
        logits = tf.nn.bias_add(logits, tf.zeros([classes]), name="softmax/logits")
        tf.nn.softmax(logits, name="softmax")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path
