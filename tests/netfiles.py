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

# NVIDIA's published StyleGAN2 networks, as run_training.py configured them: G and D get
# num_channels, resolution and label_size from the dataset, and configs A-E shrink
# fmap_base to 8 << 10 (config-f keeps G_synthesis'/D_stylegan2's default 16 << 10)
PUBLISHED = {
    "config-f-256 (cat, church, horse)": {"resolution": 256},
    "config-f-512 (car)": {"resolution": 512},
    "config-f-1024 (ffhq)": {"resolution": 1024},
    "config-e-1024 (ffhq)": {"resolution": 1024, "fmap_base": 8 << 10},
}
# a network small enough for CPU tests, set through the same G_main/D_stylegan2 kwargs
SMALL_KWARGS = {"resolution": 32, "fmap_base": 512, "fmap_max": 64, "latent_size": 64,
                "dlatent_size": 64, "mapping_layers": 2, "mapping_fmaps": 64}
# G_main/G_mapping/G_synthesis_stylegan2/D_stylegan2 defaults, from their signatures
DEFAULTS = {"num_channels": 3, "resolution": 1024, "fmap_base": 16 << 10, "fmap_max": 512,
            "fmap_decay": 1.0, "fmap_min": 1, "latent_size": 512, "dlatent_size": 512,
            "mapping_layers": 8, "mapping_fmaps": 512, "mapping_lrmul": 0.01,
            "mbstd_num_features": 1}


@contextmanager
def nvidia_network_class() -> Iterator[type]:
    """A stand-in for dnnlib.tflib.network.Network: pickles as NVIDIA's does (the default
    object reduction: NEWOBJ of the class, then BUILD with ``__getstate__``'s dict)."""
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


def _net(cls: type, name: str, func: str, variables: list[tuple[str, Any]],
         components: dict[str, Any], kwargs: dict[str, Any], version: int = 4) -> Any:
    # network.py's __getstate__: these seven keys, variables as (name, value) in creation
    # order, values as session.run returns them (0-d variables become numpy scalars)
    return cls({"version": version, "name": name, "static_kwargs": dict(kwargs),
                "components": components, "build_module_src":
                "import os\nos.system('touch PWNED')\n", "build_func_name": func,
                "variables": variables})


class _Weights:
    """Random values with NVIDIA's initial distributions (weights N(0, 1), unscaled)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def normal(self, *shape: int, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape, np.float32) * scale).astype(np.float32)

    def scalar(self, scale: float) -> np.float32:
        return np.float32(self.rng.standard_normal() * scale)


def _mapping_vars(k: dict[str, Any], w: _Weights) -> list[tuple[str, Any]]:
    out, fin = [], k["latent_size"]
    for i in range(k["mapping_layers"]):
        fout = k["dlatent_size"] if i == k["mapping_layers"] - 1 else k["mapping_fmaps"]
        # stored as N(0, 1 / lrmul): the run-time weight scale includes lrmul
        out += [(f"Dense{i}/weight", w.normal(fin, fout, scale=1 / k["mapping_lrmul"])),
                (f"Dense{i}/bias", w.normal(fout, scale=0.1))]
        fin = fout
    return out


def _synthesis_vars(k: dict[str, Any], w: _Weights, log2: int, nf: Any
                    ) -> list[tuple[str, Any]]:
    # noise inputs come first: G_synthesis_stylegan2 creates one per layer but the first
    out: list[tuple[str, Any]] = [
        (f"noise{i}", w.normal(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)))
        for i in range(log2 * 2 - 3)]

    def layer(scope: str, fin: int, fout: int, kernel: int, noise: bool) -> None:
        out.extend([(f"{scope}/weight", w.normal(kernel, kernel, fin, fout)),
                    (f"{scope}/mod_weight", w.normal(k["dlatent_size"], fin)),
                    (f"{scope}/mod_bias", w.normal(fin, scale=0.1))])
        if noise:
            out.append((f"{scope}/noise_strength", w.scalar(0.1)))
        out.append((f"{scope}/bias", w.normal(fout, scale=0.1)))

    out.append(("4x4/Const/const", w.normal(1, nf(1), 4, 4)))
    layer("4x4/Conv", nf(1), nf(1), 3, True)
    layer("4x4/ToRGB", nf(1), k["num_channels"], 1, False)
    for res in range(3, log2 + 1):
        scope = f"{2 ** res}x{2 ** res}"
        layer(f"{scope}/Conv0_up", nf(res - 2), nf(res - 1), 3, True)
        layer(f"{scope}/Conv1", nf(res - 1), nf(res - 1), 3, True)
        layer(f"{scope}/ToRGB", nf(res - 1), k["num_channels"], 1, False)
    return out


def _d_vars(k: dict[str, Any], w: _Weights, log2: int, nf: Any) -> list[tuple[str, Any]]:
    top = f"{2 ** log2}x{2 ** log2}"
    out = [(f"{top}/FromRGB/weight", w.normal(1, 1, k["num_channels"], nf(log2 - 1))),
           (f"{top}/FromRGB/bias", w.normal(nf(log2 - 1), scale=0.1))]
    for res in range(log2, 2, -1):
        scope = f"{2 ** res}x{2 ** res}"
        out += [(f"{scope}/Conv0/weight", w.normal(3, 3, nf(res - 1), nf(res - 1))),
                (f"{scope}/Conv0/bias", w.normal(nf(res - 1), scale=0.1)),
                (f"{scope}/Conv1_down/weight", w.normal(3, 3, nf(res - 1), nf(res - 2))),
                (f"{scope}/Conv1_down/bias", w.normal(nf(res - 2), scale=0.1)),
                (f"{scope}/Skip/weight", w.normal(1, 1, nf(res - 1), nf(res - 2)))]
    return [
        *out, ("4x4/Conv/weight", w.normal(3, 3, nf(1) + k["mbstd_num_features"], nf(1))),
        ("4x4/Conv/bias", w.normal(nf(1), scale=0.1)),
        ("4x4/Dense0/weight", w.normal(nf(1) * 16, nf(0))),
        ("4x4/Dense0/bias", w.normal(nf(0), scale=0.1)),
        ("Output/weight", w.normal(nf(0), 1)), ("Output/bias", w.normal(1, scale=0.1))]


def nvidia_networks(network_cls: type, kwargs: dict[str, Any], version: int = 4,
                    seed: int = 11, d_kwargs: dict[str, Any] | None = None) -> tuple[Any, ...]:
    """(G, D, Gs) as NVIDIA's training loop pickles them, from the published description
    of networks_stylegan2.py and tflib/network.py (not from this project's networks)."""
    k = {**DEFAULTS, **kwargs}
    log2 = int(np.log2(k["resolution"]))

    def nf(stage: int) -> int:
        return int(np.clip(int(k["fmap_base"] / (2.0 ** (stage * k["fmap_decay"]))),
                           k["fmap_min"], k["fmap_max"]))

    w = _Weights(seed)
    mapping, synthesis = _mapping_vars(k, w), _synthesis_vars(k, w, log2, nf)
    g_kwargs = {"num_channels": k["num_channels"], "resolution": k["resolution"],
                "label_size": 0, **{n: v for n, v in kwargs.items() if n != "resolution"}}
    dlatent_avg = w.normal(k["dlatent_size"], scale=0.5)

    def g_net() -> Any:  # G and Gs are separate objects with the same values
        return _net(network_cls, "G", "G_main", [("lod", np.float32(0.0)),
                                                  ("dlatent_avg", dlatent_avg.copy())], {
            # G_main builds synthesis first (its input shape gives num_layers), then mapping
            "synthesis": _net(network_cls, "G_synthesis", "G_synthesis_stylegan2",
                              [(n, v.copy()) for n, v in synthesis], {}, g_kwargs, version),
            "mapping": _net(network_cls, "G_mapping", "G_mapping",
                            [(n, v.copy()) for n, v in mapping], {},
                            {**g_kwargs, "dlatent_broadcast": log2 * 2 - 2}, version),
        }, g_kwargs, version)

    d_static = {"num_channels": k["num_channels"], "resolution": k["resolution"],
                "label_size": 0, **{n: v for n, v in kwargs.items()
                                    if n in ("fmap_base", "fmap_max")}, **(d_kwargs or {})}
    d = _net(network_cls, "D", "D_stylegan2", _d_vars(k, w, log2, nf), {}, d_static, version)
    return g_net(), d, g_net()


def our_names(net: Any) -> dict[str, np.ndarray]:
    """A network's variables under the names this project uses (component/name)."""
    state = net.__getstate__()
    out = {n: np.asarray(v) for n, v in state["variables"]}
    for comp in state["components"].values():
        out.update({f"{comp.__getstate__()['name']}/{n}": v for n, v in our_names(comp).items()})
    return out


def make_pickle(network_cls: type, path: Path, version: int = 4,
                extra_kwargs: dict[str, Any] | None = None, seed: int = 11,
                protocol: int = 3, kwargs: dict[str, Any] | None = None
                ) -> tuple[dict[str, np.ndarray], Path]:
    """A (G, D, Gs) pickle in NVIDIA's layout (default: the small CPU network), written with
    pickle protocol 3 as Python 3.6's pickle.dump did; returns Gs's arrays by our names."""
    nets = nvidia_networks(network_cls, {**(kwargs or SMALL_KWARGS), **(extra_kwargs or {})},
                           version, seed)
    path.write_bytes(pickle.dumps(nets, protocol=protocol))
    return our_names(nets[2]), path


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
        path.write_bytes(pickle.dumps(_net(cls, kind, kind, variables, {}, {}), protocol=2))
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
