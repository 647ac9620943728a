"""``stylegan-ops evaluate``: metrics by name, each appended as a JSON line to
``<out>/metric-<name>.jsonl``.

Registered so far: ``swd`` (needs no pretrained network). The detector-based metrics of
NVIDIA's tools (fid50k, kid50k_full, pr50k3_full, is50k, ppl2_wend) are not registered yet:
asking for one is an error naming it, never a silent skip.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_ops.errors import StageError


@dataclass(frozen=True)
class MetricSpec:
    """A metric: how many images it compares and the function computing it."""

    name: str
    num_images: int  # reals and fakes compared (fewer when the dataset is smaller)
    compute: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    detector: str  # the network producing features, or "none"


def _swd(reals: np.ndarray, fakes: np.ndarray) -> dict[str, float]:
    from stylegan_ops.metrics.stats import swd

    return swd(reals, fakes)


METRICS: dict[str, MetricSpec] = {
    "swd": MetricSpec("swd", 8192, _swd, "none"),
}


def parse_metrics(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in METRICS]
    if not names or unknown:
        raise StageError(f"unknown metric(s) {', '.join(unknown) or repr(text)}; "
                         f"available: {', '.join(METRICS)}")
    return names


@dataclass(frozen=True)
class EvaluateConfig:
    network: Path
    data: Path
    out: Path
    metrics: tuple[str, ...] = ("swd",)
    num_images: int | None = None  # override each metric's count (tests, quick checks)
    truncation_psi: float = 1.0
    seed: int = 0
    batch: int = 32

    def __post_init__(self) -> None:
        parse_metrics(",".join(self.metrics))
        if self.num_images is not None and self.num_images < 2:
            raise StageError(f"num-images must be >= 2, got {self.num_images}")
        if not self.network.exists():
            raise StageError(f"no such network: {self.network}")


@dataclass(frozen=True)
class EvaluateResult:
    out: str
    results: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reals(data: Path, n: int) -> tuple[np.ndarray, str]:
    """The first ``n`` images of the dataset (repeating a smaller one), NHWC uint8."""
    from stylegan_ops.data import tfrecord
    from stylegan_ops.training.dataset import top_level

    path, _ = top_level(data)
    images = [chw.transpose(1, 2, 0) for chw in tfrecord.read_images(path, n)]
    if not images:
        raise StageError(f"dataset {data} holds no images")
    reps = -(-n // len(images))
    meta = data / "dataset.json"
    digest = json.loads(meta.read_text())["files"][path.name]["sha256"] if meta.is_file() \
        else ""
    return np.stack((images * reps)[:n]), digest


def _fakes(network: Any, n: int, psi: float, seed: int, batch: int) -> np.ndarray:
    import tensorflow as tf

    from stylegan_ops.generate import to_uint8

    z = np.random.RandomState(seed).randn(n, network.cfg.z_dim).astype(np.float32)
    tf.random.set_seed(seed)  # the noise inputs: same arguments, same score
    out = []
    for i in range(0, n, batch):
        img = network.synthesis(network.map(tf.constant(z[i:i + batch]), psi=psi),
                                noise_mode="random")
        out.append(to_uint8(img.numpy()))
    return np.concatenate(out)


def run(cfg: EvaluateConfig) -> EvaluateResult:
    """Compute each metric and append its record to ``metric-<name>.jsonl``."""
    from stylegan_ops.generate import load_generator

    network = load_generator(cfg.network)
    cfg.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in cfg.metrics:
        spec = METRICS[name]
        n = cfg.num_images or spec.num_images
        started = time.monotonic()
        reals, data_sha = _reals(cfg.data, n)
        if reals.shape[1] != network.cfg.resolution:
            raise StageError(f"dataset {cfg.data} is {reals.shape[1]} px but the network "
                             f"makes {network.cfg.resolution} px images")
        fakes = _fakes(network, n, cfg.truncation_psi, cfg.seed, cfg.batch)
        values = spec.compute(reals, fakes)
        record = {"metric": name, "results": values, "num_images": n,
                  "network": str(cfg.network), "dataset": str(cfg.data),
                  "dataset_sha256": data_sha, "detector": spec.detector,
                  "truncation_psi": cfg.truncation_psi, "seed": cfg.seed,
                  "seconds": round(time.monotonic() - started, 2),
                  "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        with (cfg.out / f"metric-{name}.jsonl").open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        results[name] = values
    return EvaluateResult(str(cfg.out), results)
