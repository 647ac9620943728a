"""``stylegan-ops evaluate``: the metrics of NVIDIA's tools by name, each appended as a JSON
line to ``<out>/metric-<name>.jsonl``.

A record holds only what follows from the inputs (the network and dataset by content, the
options, the detector, the scores): no paths, no clocks, no cache state. Two evaluations of
the same network on the same data with the same options write byte-identical files, so the
store dedupes them into one version; timings and whether real statistics came from the
cache go to the stage result instead.

Every record names the detector that produced it (file and sha256). A score computed with a
non-standard detector (a test's stand-in, a file no pin or record vouches for) is written as
``<name>@stand-in``, never under the standard name alone. Real-image statistics are cached
in ``$STYLEGAN_CACHE/stats`` per dataset content, detector and options.

The reals come from ``reference_data`` when given (the full dataset, for a network trained
on a subset: what ADA recommends for limited data); ``dataset_sha256`` then names the
reference and ``trained_on_sha256`` the training data. ``TrainingMetrics`` scores the
snapshots of a training run in its own process through the same records.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import check_output
from stylegan_ops.metrics.stats import FeatureStats

STANDIN_SUFFIX = "@stand-in"


@dataclass(frozen=True)
class MetricSpec:
    """A metric: its detector (a weights name, or None) and the function computing it."""

    name: str
    detector: str | None
    compute: Callable[[Evaluation], dict[str, float]]
    about: str
    headline: str = ""  # the result key that ranks snapshots ("": the metric's name)
    lower_is_better: bool = True


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
    num_images: int | None = None  # cap every count (quick checks); None: the metric's own
    truncation_psi: float = 1.0  # ψ of the fakes (the standard metrics use 1.0)
    seed: int = 0  # latents and noise of the fakes
    batch: int = 32  # images per generator / detector call
    reference_data: Path | None = None  # the reals of every metric; None: ``data``'s
    xla: bool = False  # XLA-compile the generator and detector calls (scores to rounding)

    def __post_init__(self) -> None:
        _check_options(self.metrics, self.num_images, self.truncation_psi, self.seed,
                       self.batch, self.data, self.reference_data)
        if not self.network.exists():
            raise StageError(f"no such network: {self.network}")
        check_output(self.out, "dir")


def _check_options(metrics: tuple[str, ...], num_images: int | None, truncation_psi: float,
                   seed: int, batch: int, data: Path, reference_data: Path | None) -> None:
    """What EvaluateConfig and TrainingMetrics both refuse, before any work."""
    parse_metrics(",".join(metrics))
    if num_images is not None and num_images < 2:
        raise StageError(f"num-images must be >= 2, got {num_images}")
    if batch < 1:
        raise StageError(f"batch must be >= 1, got {batch}")
    if (isinstance(truncation_psi, bool) or not isinstance(truncation_psi, int | float)
            or not math.isfinite(truncation_psi)):
        raise StageError(f"truncation-psi must be a finite number, got {truncation_psi!r}")
    if not 0 <= seed < 2**32:
        raise StageError(f"seed must be in 0..{2**32 - 1}, got {seed}")
    if not data.is_dir():
        raise StageError(f"no such dataset directory: {data}")
    if reference_data is not None and not reference_data.is_dir():
        raise StageError(f"no such reference dataset directory: {reference_data}")


@dataclass(frozen=True)
class EvaluateResult:
    out: str
    results: dict[str, dict[str, float | None]]  # None: not a number (see ``invalid``)
    # per recorded metric: wall seconds, and "computed" / "cached" / None (no real
    # statistics) for the reals; here, not in the records, as they vary run to run
    seconds: dict[str, float] = field(default_factory=dict)
    real_stats: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr,
                mininterval=0.5 if tty else 30.0, disable=not desc)


@dataclass
class Evaluation:
    """One evaluate run: the network, the dataset and the detectors, loaded once."""

    cfg: EvaluateConfig
    network: Any
    detectors: dict[str, Any] = field(default_factory=dict)  # injected or loaded lazily
    dataset_sha256: str = ""  # of the reals' level file (the reference's when given)
    dataset_size: int = 0  # of the reals' dataset
    trained_on_sha256: str | None = None  # ``data``'s level file, when the reals are not it
    stats_cache: str = ""  # how the last real statistics were obtained
    # real statistics and images by their options, kept for the next evaluation of the
    # same run (TrainingMetrics shares one across snapshots)
    memo: dict[str, Any] = field(default_factory=dict)
    # never reseed TensorFlow: inside a training process tf.random.set_seed would restart
    # every random stream of the compiled steps (latents, noise, augmentation), so the
    # fakes' noise is drawn from the seed's numpy generator instead
    isolated: bool = False

    sampler: Any = None  # the XLA-compiled map + synthesis (--xla), built at first use

    def detector(self, name: str) -> Any:
        if name not in self.detectors:
            from stylegan_ops.metrics.detectors import load

            self.detectors[name] = load(name, xla=self.cfg.xla)
        return self.detectors[name]

    def count(self, default: int) -> int:
        return min(default, self.cfg.num_images) if self.cfg.num_images else default

    @property
    def reals_data(self) -> Path:
        return self.cfg.reference_data or self.cfg.data

    # --- images --------------------------------------------------------------------------

    def reals(self, n: int, desc: str) -> Iterator[np.ndarray]:
        """``n`` reals in dataset order, cycling through a smaller dataset; NHWC batches."""
        from stylegan_ops.data import tfrecord
        from stylegan_ops.training.dataset import level_file

        path = level_file(self.reals_data, self.network.cfg.resolution)
        done, batch = 0, []
        with _progress(n, desc) as bar:
            while done < n:
                before = done
                for payload in tfrecord.iter_records(path):
                    batch.append(tfrecord.decode_example(payload).transpose(1, 2, 0))
                    done += 1
                    if len(batch) == self.cfg.batch or done == n:
                        bar.update(len(batch))
                        yield np.stack(batch)
                        batch = []
                    if done == n:
                        return
                if done == before:
                    raise StageError(f"dataset {self.reals_data} holds no images")

    def fakes(self, n: int, desc: str) -> Iterator[np.ndarray]:
        """``n`` generated images as uint8, the same for the same seed."""
        import tensorflow as tf

        from stylegan_ops.generate import to_uint8

        rng = np.random.RandomState(self.cfg.seed)
        if not self.isolated:
            tf.random.set_seed(self.cfg.seed)  # the noise inputs: same arguments, same score
        synthesis = self.network.synthesis
        if self.cfg.xla and self.sampler is None:
            from stylegan_ops.generate import compiled_sampler

            self.sampler = compiled_sampler(self.network, self.cfg.truncation_psi)
        with _progress(n, desc) as bar:
            for start in range(0, n, self.cfg.batch):
                b = min(self.cfg.batch, n - start)
                z = rng.randn(b, self.network.cfg.z_dim).astype(np.float32)
                if self.cfg.xla:
                    images = self.sampler(tf.constant(z), self._noise(rng, b))
                else:
                    ws = self.network.map(tf.constant(z), psi=self.cfg.truncation_psi)
                    images = (synthesis(ws, noise=self._noise(rng, b)) if self.isolated
                              else synthesis(ws, noise_mode="random"))
                yield to_uint8(images.numpy())
                bar.update(b)

    def _noise(self, rng: np.random.RandomState, b: int) -> list[Any]:
        """The noise inputs of ``b`` fakes as explicit tensors: from ``rng`` when isolated,
        else the numbers ``noise_mode="random"`` draws (XLA's own random ops would ignore
        the seed)."""
        import tensorflow as tf

        from stylegan_ops.generate import random_noise

        if self.isolated:
            return [tf.constant(rng.randn(b, 1, *v.shape[2:]).astype(np.float32))
                    for v in self.network.synthesis.noise_vars]
        return random_noise(self.network, b)

    def real_images(self, n: int) -> np.ndarray:
        """``n`` reals as one NHWC array, read once per run."""
        key = f"images/{self.reals_data}/{self.network.cfg.resolution}/{n}"
        if key not in self.memo:
            self.memo[key] = np.concatenate(list(self.reals(n, "reals")))
        images: np.ndarray = self.memo[key]
        return images

    # --- statistics ----------------------------------------------------------------------

    def real_stats(self, detector: Any, n: int, keep: int, probe: str = "features"
                   ) -> FeatureStats:
        """Detector statistics of ``n`` reals, from the cache when this dataset, detector
        and these options were seen before."""
        from stylegan_ops.fsutil import write_atomic
        from stylegan_ops.metrics.weights import cache_dir

        options = {"dataset_sha256": self.dataset_sha256, "detector": detector.label,
                   "num": n, "keep": keep, "probe": probe}
        key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:32]
        # in memory the dataset is also named by path: a dataset without dataset.json has
        # no digest, and still needs its statistics only once per run
        memo_key = f"stats/{self.reals_data}/{self.network.cfg.resolution}/{key}"
        if memo_key in self.memo:
            self.stats_cache = "cached"
            stats: FeatureStats = self.memo[memo_key]
            return stats
        path = cache_dir() / "stats" / f"{key}.npz"
        if self.dataset_sha256 and path.is_file():
            with np.load(path) as data:
                self.stats_cache = "cached"
                stats = self.memo[memo_key] = FeatureStats.from_npz(dict(data))
                return stats
        stats = _stats(detector, self.reals(n, "reals"), keep, probe)
        if self.dataset_sha256:
            import io

            path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.savez(buf, **stats.to_npz())  # type: ignore[arg-type]
            write_atomic(path, buf.getvalue())
        self.stats_cache = "computed"
        self.memo[memo_key] = stats
        return stats

    def fake_stats(self, detector: Any, n: int, keep: int, probe: str = "features"
                   ) -> FeatureStats:
        return _stats(detector, self.fakes(n, "fakes"), keep, probe)


def _stats(detector: Any, batches: Iterator[np.ndarray], keep: int, probe: str
           ) -> FeatureStats:
    stats: FeatureStats | None = None
    for images in batches:
        feats = getattr(detector, probe)(images)
        if stats is None:
            stats = FeatureStats(feats.shape[1], keep)
        stats.add(feats)
    assert stats is not None
    return stats


# --- the metrics -------------------------------------------------------------------------

def _fid(ev: Evaluation, full: bool) -> dict[str, float]:
    from stylegan_ops.metrics.stats import fid

    det = ev.detector("inception")
    n = ev.count(50_000)
    # fid50k draws 50k reals with repetition (a small set repeats); _full uses each once
    reals = ev.real_stats(det, ev.count(ev.dataset_size) if full else n, keep=0)
    fakes = ev.fake_stats(det, n, keep=0)
    return {"fid50k_full" if full else "fid50k": fid(reals.mean, reals.cov, fakes.mean,
                                                     fakes.cov)}


KID_MAX_REALS = 100_000  # 100 subsets of 1000 never use more


def _kid(ev: Evaluation) -> dict[str, float]:
    from stylegan_ops.metrics.stats import kid

    det = ev.detector("inception")
    n = ev.count(50_000)
    reals = ev.real_stats(det, ev.count(ev.dataset_size), keep=KID_MAX_REALS)
    fakes = ev.fake_stats(det, n, keep=n)
    size = min(1000, n, len(reals.features()))
    return {"kid50k_full": kid(reals.features(), fakes.features(), 100, size,
                               seed=ev.cfg.seed)}


PR_MAX_REALS = 50_000  # NVIDIA's PyTorch tools use up to 200k; k-NN on CPU caps us lower


def _pr(ev: Evaluation) -> dict[str, float]:
    from stylegan_ops.metrics.stats import precision_recall

    det = ev.detector("vgg16")
    n = ev.count(50_000)
    m = min(ev.count(ev.dataset_size), PR_MAX_REALS)
    reals = ev.real_stats(det, m, keep=m)
    fakes = ev.fake_stats(det, n, keep=n)
    precision, recall = precision_recall(reals.features(), fakes.features(), k=3)
    return {"pr50k3_full_precision": precision, "pr50k3_full_recall": recall}


def _is(ev: Evaluation) -> dict[str, float]:
    from stylegan_ops.metrics.stats import inception_score

    n = ev.count(50_000)
    probs = ev.fake_stats(ev.detector("inception"), n, keep=n, probe="probabilities")
    mean, std = inception_score(probs.features(), splits=10)
    return {"is50k": mean, "is50k_std": std}


def _ppl(ev: Evaluation) -> dict[str, float]:
    from stylegan_ops.metrics.ppl import path_lengths

    n = ev.count(50_000)
    dist = path_lengths(ev.network, ev.detector("lpips"), n, ev.cfg.batch, ev.cfg.seed,
                        lambda: _progress(n, "ppl"), xla=ev.cfg.xla)
    lo, hi = np.percentile(dist, 1, method="lower"), np.percentile(dist, 99, method="higher")
    return {"ppl2_wend": float(dist[(dist >= lo) & (dist <= hi)].mean())}


SWD_IMAGES = 8192  # Progressive GAN's count; both sets are held in memory


def _swd(ev: Evaluation) -> dict[str, float]:
    from stylegan_ops.metrics.stats import swd

    n = ev.count(SWD_IMAGES)
    fakes = np.concatenate(list(ev.fakes(n, "fakes")))
    return swd(ev.real_images(n), fakes)


METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("fid50k", "inception", lambda ev: _fid(ev, full=False),
               "FID, 50k fakes vs 50k reals drawn with repetition"),
    MetricSpec("fid50k_full", "inception", lambda ev: _fid(ev, full=True),
               "FID, 50k fakes vs every real once"),
    MetricSpec("kid50k_full", "inception", _kid, "KID ×1, 100 subsets of 1000"),
    # precision ranks: the share of fakes that look real; recall (coverage of the reals)
    # rewards a spread of noise as readily as variety
    MetricSpec("pr50k3_full", "vgg16", _pr, "precision/recall, k = 3, VGG16 fc7",
               headline="pr50k3_full_precision", lower_is_better=False),
    MetricSpec("is50k", "inception", _is, "Inception Score, 10 splits",
               lower_is_better=False),
    MetricSpec("ppl2_wend", "lpips", _ppl, "perceptual path length in W at endpoints"),
    # the average over the resolutions, as Progressive GAN reported it
    MetricSpec("swd", None, _swd, "multi-scale sliced Wasserstein distance ×1e3",
               headline="swd_avg"),
)}


def _dataset(data: Path, res: int) -> tuple[str, int]:
    """The sha256 of the level file the metrics read (from dataset.json; '' when absent)
    and the image count."""
    from stylegan_ops.data.tfrecord import record_size
    from stylegan_ops.training.dataset import level_file

    path = level_file(data, res)
    meta = data / "dataset.json"
    info = json.loads(meta.read_text()) if meta.is_file() else {}
    sha = info.get("files", {}).get(path.name, {}).get("sha256", "")
    count = info.get("count") or path.stat().st_size // record_size((3, res, res))
    return sha, int(count)


def _datasets(data: Path, reference: Path | None, res: int) -> tuple[str, int, str | None]:
    """The reals' level sha256 and image count, and the training data's sha256 when the
    reals come from a reference (None otherwise). Both must serve ``res`` px."""
    trained = _dataset(data, res)
    if reference is None:
        return *trained, None
    return *_dataset(reference, res), trained[0]


def _load_detectors(metrics: tuple[str, ...], given: dict[str, Any] | None,
                    xla: bool = False) -> dict[str, Any]:
    """Every detector the metrics need: a missing file is an error before any work."""
    from stylegan_ops.metrics.detectors import load

    found = dict(given or {})
    for name in metrics:
        det = METRICS[name].detector
        if det and det not in found:
            found[det] = load(det, xla=xla)
    return found


def run(cfg: EvaluateConfig, detectors: dict[str, Any] | None = None) -> EvaluateResult:
    """Compute each metric and append its record to ``metric-<name>.jsonl``.

    ``detectors`` replaces the cache's networks by name (tests inject stand-ins)."""
    from stylegan_ops.generate import load_generator, network_digest

    ev = Evaluation(cfg, None, _load_detectors(cfg.metrics, detectors, cfg.xla))
    ev.network = load_generator(cfg.network)
    network_sha256 = network_digest(cfg.network)  # the network by content, never its path
    ev.dataset_sha256, ev.dataset_size, ev.trained_on_sha256 = _datasets(
        cfg.data, cfg.reference_data, ev.network.cfg.resolution)
    cfg.out.mkdir(parents=True, exist_ok=True)
    return _score(ev, network_sha256, {})


def _score(ev: Evaluation, network_sha256: str, extra: dict[str, Any]) -> EvaluateResult:
    """Compute each metric of ``ev`` and append its record, with ``extra``'s fields, to
    ``<out>/metric-<recorded name>.jsonl``."""
    cfg = ev.cfg
    results, seconds, real_stats = {}, {}, {}
    for name in cfg.metrics:
        spec = METRICS[name]
        started = time.monotonic()
        ev.stats_cache = ""
        values = spec.compute(ev)
        label = ev.detectors[spec.detector].label if spec.detector else None
        standard = label is None or bool(label.get("standard"))
        recorded = name if standard else name + STANDIN_SUFFIX
        values = {(k if standard else k + STANDIN_SUFFIX): float(v) for k, v in values.items()}
        # JSON has no NaN: a degenerate score (NaN features, a singular covariance) is
        # recorded as null with the reason, never as a number nor as invalid JSON
        invalid = {k: repr(v) for k, v in values.items() if not math.isfinite(v)}
        for key, why in invalid.items():
            print(f"stylegan-ops: warning: {key} is {why}, recorded as null", file=sys.stderr)
        finite = {k: (None if k in invalid else v) for k, v in values.items()}
        record = {"metric": recorded, "standard_metric": name, "results": finite,
                  "invalid": {k: f"not a finite number ({why}): the images or features "
                                 f"are degenerate" for k, why in invalid.items()},
                  "num_images": cfg.num_images, "network_sha256": network_sha256,
                  "dataset_sha256": ev.dataset_sha256, "resolution": ev.network.cfg.resolution,
                  "detector": label or "none", "truncation_psi": cfg.truncation_psi,
                  "seed": cfg.seed, "batch": cfg.batch, **extra}
        if ev.trained_on_sha256 is not None:  # absent without a reference: records as before
            record["trained_on_sha256"] = ev.trained_on_sha256
        if cfg.xla:  # compiled scores agree to rounding, not to the byte: said so
            record["xla"] = True
        with (cfg.out / f"metric-{recorded}.jsonl").open("a") as f:
            f.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")
        results[recorded] = finite
        seconds[recorded] = round(time.monotonic() - started, 2)
        real_stats[recorded] = ev.stats_cache or None
    return EvaluateResult(str(cfg.out), results, seconds, real_stats)


class TrainingMetrics:
    """The metrics of a training run, at each snapshot, in the training process.

    Detectors are loaded and the datasets checked here, before training starts; real
    statistics and images are computed once and kept for every later snapshot; the fakes
    are regenerated each time from the same seed, without touching TensorFlow's seed."""

    def __init__(self, data: Path, metrics: tuple[str, ...], out: Path, *,
                 num_images: int | None = None, batch: int = 32, seed: int = 0,
                 reference_data: Path | None = None, detectors: dict[str, Any] | None = None,
                 resolution: int | None = None) -> None:
        """``num_images`` caps every count (None: each metric's own); ``reference_data``
        holds the reals (None: ``data``); ``detectors`` replaces the cache's by name;
        ``resolution`` (the network's), when given, checks the datasets' levels now
        rather than at the first snapshot."""
        _check_options(tuple(metrics), num_images, 1.0, seed, batch, data, reference_data)
        check_output(out, "dir")
        self.data, self.metrics, self.out = data, tuple(metrics), out
        self.num_images, self.batch, self.seed = num_images, batch, seed
        self.reference_data = reference_data
        self.detectors = _load_detectors(self.metrics, detectors)
        self._memo: dict[str, Any] = {}
        self._datasets: dict[int, tuple[str, int, str | None]] = {}
        if resolution is not None:
            self._datasets_at(resolution)

    def _config(self, snapshot: Path) -> EvaluateConfig:
        # ψ = 1, as the standard metrics and evaluate's default
        return EvaluateConfig(snapshot, self.data, self.out, self.metrics, self.num_images,
                              1.0, self.seed, self.batch, self.reference_data)

    def _datasets_at(self, res: int) -> tuple[str, int, str | None]:
        if res not in self._datasets:
            self._datasets[res] = _datasets(self.data, self.reference_data, res)
        return self._datasets[res]

    def evaluate(self, generator: Any, snapshot: Path, kimg: float
                 ) -> dict[str, dict[str, float | None]]:
        """Score ``generator`` (in memory; ``snapshot`` is its saved copy, named in the
        records) and append one record per metric, with ``kimg`` and ``snapshot``."""
        from stylegan_ops.generate import network_digest

        ev = Evaluation(self._config(snapshot), generator, self.detectors, memo=self._memo,
                        isolated=True)
        ev.dataset_sha256, ev.dataset_size, ev.trained_on_sha256 = self._datasets_at(
            generator.cfg.resolution)
        self.out.mkdir(parents=True, exist_ok=True)
        extra = {"kimg": round(float(kimg), 3), "snapshot": snapshot.name}
        return _score(ev, network_digest(snapshot), extra).results

    @staticmethod
    def headline(metric: str) -> tuple[str, bool]:
        """The result key that ranks snapshots by ``metric`` and whether lower is better:
        fid/kid/ppl their score, swd ``swd_avg`` (lower); is50k its mean and pr50k3_full
        its precision (higher). A stand-in's name gives its suffixed key."""
        standard = metric.removesuffix(STANDIN_SUFFIX)
        if standard not in METRICS:
            raise StageError(f"unknown metric {metric!r}; available: {','.join(METRICS)}")
        spec = METRICS[standard]
        return (spec.headline or spec.name) + metric[len(standard):], spec.lower_is_better
