"""The feature networks behind the metrics, loaded from their standard files.

- Inception (2015-12-05 GraphDef): ``pool_3`` features (2048-d for the real graph) and the
  class probabilities of its softmax layer without the output bias, as the original
  Inception Score code and the published numbers use. Images go in as uint8 RGB of any
  size; the graph's own ResizeBilinear brings them to 299.
- VGG16 (NVIDIA's ``vgg16.pkl``): the 4096-d fc7 activations, for precision/recall.
- LPIPS-VGG16 (NVIDIA's ``vgg16_zhang_perceptual.pkl``): Zhang et al.'s learned perceptual
  distance, for perceptual path length.

Each detector carries a ``label`` (name, file, sha256, standard) that every metric record
repeats. ``xla=True`` compiles a detector's forward pass with XLA (one compilation per
input shape); the label, and so the records, stay the same: the features agree to float
rounding. Tests build the same files with tiny networks; the loaders are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stylegan_ops.errors import StageError
from stylegan_ops.metrics.weights import Located, locate


class Detector(Protocol):
    label: dict[str, Any]  # {"name", "file", "sha256", "standard"}

    def features(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC RGB → float32 [N, dim]."""
        ...


# --- Inception ---------------------------------------------------------------------------

INPUT_NODE = "ExpandDims"  # float32 [1, H, W, 3] after JPEG decoding in the original graph
FEATURE_NODE = "pool_3"  # [N, 1, 1, 2048] average pool
LOGITS_NODE = "softmax/logits/MatMul"  # its second input holds the softmax weights


def _needed(nodes: dict[str, Any], outputs: list[str], stop: str) -> set[str]:
    """Names of the nodes the outputs depend on, not looking past ``stop``."""
    keep: set[str] = set()
    todo = list(outputs)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        if name not in nodes:
            raise StageError(f"the Inception graph has no node {name!r}")
        keep.add(name)
        if name != stop:
            todo.extend(i.lstrip("^").split(":")[0] for i in nodes[name].input)
    return keep


class InceptionGraph:
    """The 2015-12-05 Inception GraphDef, fed batches instead of one decoded JPEG."""

    def __init__(self, graph_bytes: bytes, label: dict[str, Any], *, xla: bool = False
                 ) -> None:
        import tensorflow as tf
        from google.protobuf.message import DecodeError
        from tensorflow.core.framework import graph_pb2

        graph = graph_pb2.GraphDef()
        try:
            graph.ParseFromString(graph_bytes)
        except DecodeError as exc:
            raise StageError(f"{label['file']}: not a TensorFlow GraphDef: {exc}") from exc
        nodes = {n.name: n for n in graph.node}
        if INPUT_NODE not in nodes or LOGITS_NODE not in nodes:
            raise StageError(f"{label['file']}: no {INPUT_NODE!r} or {LOGITS_NODE!r} node; "
                             "not the Inception 2015-12-05 graph")
        weights = nodes[LOGITS_NODE].input[1].split(":")[0]
        keep = _needed(nodes, [FEATURE_NODE, weights], INPUT_NODE)
        # Keep only what pool_3 and the softmax weights need, with the input replaced by a
        # stub that the batch is mapped onto: the JPEG decoder and the [1, 2048] reshape of
        # the original stay out, so any batch size goes through. The stub is a constant,
        # not a Placeholder: it stays in the graph unused, and XLA compiles no Placeholder.
        pruned = graph_pb2.GraphDef()
        pruned.versions.CopyFrom(graph.versions)
        for node in graph.node:
            if node.name == INPUT_NODE:
                stub = pruned.node.add(name=INPUT_NODE, op="Const")
                stub.attr["dtype"].type = tf.float32.as_datatype_enum
                stub.attr["value"].tensor.CopyFrom(
                    tf.make_tensor_proto(np.zeros([1, 1, 1, 3], np.float32)))
            elif node.name in keep:
                pruned.node.add().CopyFrom(node)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
                     jit_compile=_jit(xla))
        def run(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            pool, w = tf.graph_util.import_graph_def(
                pruned, input_map={f"{INPUT_NODE}:0": tf.cast(images, tf.float32)},
                return_elements=[f"{FEATURE_NODE}:0", f"{weights}:0"], name="inception")
            feats = tf.reshape(pool, [tf.shape(images)[0], -1])
            return feats, tf.nn.softmax(tf.matmul(feats, w))

        self.label = label
        self._run = run

    @classmethod
    def from_file(cls, path: Path, label: dict[str, Any] | None = None, *, xla: bool = False
                  ) -> InceptionGraph:
        return cls(path.read_bytes(), label or {"name": "inception", "file": path.name,
                                               "sha256": None, "standard": False}, xla=xla)

    def features(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._run(_check_images(images))[0])

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._run(_check_images(images))[1])


def _jit(xla: bool) -> bool | None:
    """tf.function's jit_compile: None (TensorFlow's default) unless XLA is asked for."""
    return True if xla else None


def _check_images(images: np.ndarray) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise StageError(f"detectors take uint8 NHWC RGB images, got {images.dtype} "
                         f"{images.shape}")
    return images


# --- VGG16 from NVIDIA's pickles ---------------------------------------------------------

VGG_BLOCKS = (2, 2, 3, 3, 3)  # conv layers per block, each block ending in a 2×2 max pool
VGG_WIDTHS = (64, 128, 256, 512, 512)  # the standard widths (stand-ins may be narrower)


def _take(variables: list[tuple[str, np.ndarray]], pos: int, what: str, source: str,
          shape: tuple[int | None, ...]) -> np.ndarray:
    """Variable #pos, which must have ``shape`` (None: any size on that axis)."""
    expect = "[" + ", ".join("*" if d is None else str(d) for d in shape) + "]"
    if pos >= len(variables):
        raise StageError(f"{source}: ends before {what} ({expect})")
    name, value = variables[pos]
    got = tuple(value.shape)
    if len(got) != len(shape) or any(
            d is not None and d != g for d, g in zip(shape, got, strict=True)):
        raise StageError(f"{source}: variable #{pos} {name} has shape {got}; "
                         f"{what} needs {expect}")
    return np.asarray(value, np.float32)


def _conv_stack(variables: list[tuple[str, np.ndarray]], source: str
                ) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """The 13 conv (kernel [3, 3, in, out], bias [out]) pairs, in order, chained by shape."""
    convs, pos, cin = [], 0, 3
    for block, count in enumerate(VGG_BLOCKS, 1):
        for layer in range(1, count + 1):
            what = f"conv{block}_{layer}"
            w = _take(variables, pos, f"{what} kernel", source, (3, 3, cin, None))
            cout = w.shape[3]
            b = _take(variables, pos + 1, f"{what} bias", source, (cout,))
            convs.append((w, b))
            pos, cin = pos + 2, cout
    return convs, pos


class _VGG:
    """VGG16's conv stack as TF ops on constants (NHWC)."""

    def __init__(self, convs: list[tuple[np.ndarray, np.ndarray]]) -> None:
        import tensorflow as tf

        self.convs = [(tf.constant(w), tf.constant(b)) for w, b in convs]

    def taps(self, x: Any) -> tuple[list[Any], Any]:
        """The last ReLU of each block (LPIPS's layers) and the final pooled map."""
        import tensorflow as tf

        taps, i = [], 0
        for count in VGG_BLOCKS:
            for _ in range(count):
                w, b = self.convs[i]
                x = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME") + b)
                i += 1
            taps.append(x)
            x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        return taps, x


def _network_variables(path: Path) -> list[tuple[str, np.ndarray]]:
    from stylegan_ops.legacy import read_network, variables_in_order

    return variables_in_order(read_network(path))


CAFFE_MEAN_RGB = np.array([123.68, 116.779, 103.939], np.float32)  # ImageNet means


class VGG16Features:
    """fc7 (4096-d for the real network) of VGG16 at 224 px, ImageNet mean subtracted."""

    def __init__(self, variables: list[tuple[str, np.ndarray]], label: dict[str, Any], *,
                 xla: bool = False) -> None:
        import tensorflow as tf

        source = label["file"]
        convs, pos = _conv_stack(variables, source)
        c5 = convs[-1][0].shape[3]
        fc6 = _take(variables, pos, "fc6 kernel", source, (7 * 7 * c5, None))
        fc6b = _take(variables, pos + 1, "fc6 bias", source, (fc6.shape[1],))
        fc7 = _take(variables, pos + 2, "fc7 kernel", source, (fc6.shape[1], None))
        fc7b = _take(variables, pos + 3, "fc7 bias", source, (fc7.shape[1],))
        rest = variables[pos + 4:]  # fc8 (the classifier) is not used for features
        if rest and not (len(rest) == 2 and rest[0][1].ndim == 2
                         and rest[0][1].shape[0] == fc7.shape[1]):
            raise StageError(f"{source}: unexpected variables after fc7: "
                             f"{', '.join(n for n, _ in rest)}")
        vgg = _VGG(convs)
        dense = [tf.constant(a) for a in (fc6, fc6b, fc7, fc7b)]

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
                     jit_compile=_jit(xla))
        def run(images: tf.Tensor) -> tf.Tensor:
            x = tf.image.resize(tf.cast(images, tf.float32), (224, 224), "bilinear")
            _, x = vgg.taps(x - CAFFE_MEAN_RGB)
            x = tf.reshape(x, [tf.shape(x)[0], -1])
            x = tf.nn.relu(x @ dense[0] + dense[1])
            return tf.nn.relu(x @ dense[2] + dense[3])

        self.label, self._run = label, run

    def features(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._run(_check_images(images)))


LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)  # Zhang et al.'s input scaling
LPIPS_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


class LPIPS:
    """Learned perceptual distance: unit-normalised VGG features, weighted squared
    differences averaged over space and summed over the five layers."""

    def __init__(self, variables: list[tuple[str, np.ndarray]], label: dict[str, Any], *,
                 xla: bool = False) -> None:
        import tensorflow as tf

        source = label["file"]
        convs, pos = _conv_stack(variables, source)
        taps = np.cumsum(VGG_BLOCKS) - 1
        lins = []
        for i, tap in enumerate(taps):
            c = convs[tap][1].shape[0]
            lin = _take(variables, pos + i, f"lin{i} weights", source, (1, 1, c, 1))
            lins.append(tf.constant(lin.reshape(c)))
        if len(variables) != pos + len(taps):
            raise StageError(f"{source}: {len(variables) - pos - len(taps)} unexpected "
                             "variables after the lin layers")
        vgg = _VGG(convs)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)] * 2,
                     jit_compile=_jit(xla))
        def run(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
            def feats(x: tf.Tensor) -> list[tf.Tensor]:
                x = (x / 127.5 - 1.0 - LPIPS_SHIFT) / LPIPS_SCALE  # [0, 255] → LPIPS input
                taps, _ = vgg.taps(x)
                return [t / (tf.norm(t, axis=-1, keepdims=True) + 1e-10) for t in taps]

            dist = tf.zeros([tf.shape(a)[0]])
            for fa, fb, lin in zip(feats(a), feats(b), lins, strict=True):
                dist += tf.reduce_mean(tf.reduce_sum((fa - fb) ** 2 * lin, -1), [1, 2])
            return dist

        self.label, self._run = label, run

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per-pair distance of two float NHWC batches in [0, 255]."""
        return np.asarray(self._run(np.asarray(a, np.float32), np.asarray(b, np.float32)))

    def tensor_distance(self, a: Any, b: Any) -> Any:
        """The same distance on float32 NHWC tensors, differentiable (projection)."""
        return self._run(a, b)


# --- from the cache ----------------------------------------------------------------------

Loader = Callable[[Path, dict[str, Any], bool], Any]  # (file, label, xla) → detector

LOADERS: dict[str, Loader] = {
    "inception": lambda p, label, xla: InceptionGraph(p.read_bytes(), label, xla=xla),
    "vgg16": lambda p, label, xla: VGG16Features(_network_variables(p), label, xla=xla),
    "lpips": lambda p, label, xla: LPIPS(_network_variables(p), label, xla=xla),
}


def load(name: str, path: Path | None = None, *, xla: bool = False) -> Any:
    """The detector ``name`` from the weight cache (or from ``path``, labelled a stand-in);
    ``xla`` compiles its forward pass with XLA."""
    if path is not None:
        from stylegan_ops.metrics.weights import sha256_of

        label = {"name": name, "file": path.name, "sha256": sha256_of(path),
                 "standard": False}
        return LOADERS[name](path, label, xla)
    located: Located = locate(name)
    return LOADERS[name](located.path, located.label(), xla)
