"""Projection: the W latent and noise maps whose image matches a real target image.

The method of StyleGAN2's projector (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN", appendix D), implemented from the paper:

- start from the mean w of 10,000 mapped samples; one w for every layer;
- Adam (β 0.9, 0.999) on w and on every noise map, the LPIPS-VGG16 distance between the
  target and the image as the loss, both box-downsampled to 256 px when larger;
- a learning rate ramped up linearly over the first 5% of the steps and down to zero with
  a cosine over the last 25%;
- Gaussian noise added to w, of strength σ_w · 0.05 · max(0, 1 − t/0.75)² (σ_w: the spread
  of the mapped samples around their mean), so early steps explore;
- the noise maps regularised (weight 10⁵) towards no spatial autocorrelation at every scale
  of a 2×2-mean pyramid down to 8×8 (each level ×2, keeping unit variance), and set back
  to zero mean and unit variance after every step, so they cannot carry the image.

Every random draw comes from ``numpy.random.RandomState(seed)``, made afresh per target:
the same target, network and seed give the same bytes alone or in a folder.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_ops.data.extract import decode_square
from stylegan_ops.data.sources import IMAGE_SUFFIXES, MAX_RECORD_BYTES, FolderSource
from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import (
    atomic_dir,
    check_output,
    dump_json,
    sha256_file,
    show_path,
    to_json,
)
from stylegan_ops.generate import _png, load_generator, network_digest, to_uint8
from stylegan_ops.networks.snapshot import save_npz

MAX_STEPS = 100_000
LPIPS_PX = 256  # the distance is taken at this size at most


@dataclass(frozen=True)
class ProjectConfig:
    network: Path  # snapshot directory or NVIDIA .pkl
    target: Path  # an image file, or a folder of them (searched recursively)
    out: Path
    steps: int = 1000
    seed: int = 0
    save_frames: int = 0  # intermediate images in frames.png (0: no strip)
    w_avg_samples: int = 10_000  # mapped samples for the mean w and σ_w
    initial_lr: float = 0.1
    lr_rampup: float = 0.05  # fraction of the steps with a linear ramp-up
    lr_rampdown: float = 0.25  # fraction with the cosine ramp-down
    initial_w_noise: float = 0.05  # × σ_w at the start
    w_noise_ramp: float = 0.75  # fraction of the steps over which it falls to zero
    noise_weight: float = 1e5  # noise-map regularisation weight
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise StageError(f"steps must be an integer in 1..{MAX_STEPS}, got {self.steps!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise StageError(f"seed must be an integer in 0..{2**32 - 1}, got {self.seed!r}")
        if not isinstance(self.save_frames, int) or not 0 <= self.save_frames <= self.steps:
            raise StageError(f"save-frames must be an integer in 0..{self.steps} (the steps), "
                             f"got {self.save_frames!r}")
        if not isinstance(self.w_avg_samples, int) or self.w_avg_samples < 2:
            raise StageError(f"w-avg-samples must be an integer >= 2, got "
                             f"{self.w_avg_samples!r}")
        for name in ("initial_lr", "lr_rampup", "lr_rampdown", "initial_w_noise",
                     "w_noise_ramp", "noise_weight"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise StageError(f"{name.replace('_', '-')} must be a finite number >= 0, "
                                 f"got {value!r}")
        if not self.network.exists():
            raise StageError(f"no such network: {show_path(self.network)}")
        if not self.target.exists():
            raise StageError(f"no such target image or folder: {show_path(self.target)}")
        check_output(self.out, "dir")

    def learning_rate(self, step: int) -> float:
        """The rate at ``step`` of ``steps``: linear ramp-up, cosine ramp-down."""
        t = step / self.steps
        up = min(1.0, t / self.lr_rampup) if self.lr_rampup > 0 else 1.0
        down = min(1.0, (1.0 - t) / self.lr_rampdown) if self.lr_rampdown > 0 else 1.0
        return self.initial_lr * up * (0.5 - 0.5 * math.cos(math.pi * down))

    def w_noise(self, step: int, w_std: float) -> float:
        """The strength of the noise added to w at ``step``."""
        t = step / self.steps
        ramp = max(0.0, 1.0 - t / self.w_noise_ramp) if self.w_noise_ramp > 0 else 0.0
        return w_std * self.initial_w_noise * ramp**2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("network", "target", "out"):
            d[key] = str(d[key])
        return d


@dataclass(frozen=True)
class Target:
    name: str  # the output folder's name (a folder run), from the path without its suffix
    path: Path
    image: np.ndarray  # HWC uint8 at the network's resolution
    sha256: str


@dataclass(frozen=True)
class ProjectResult:
    out: str
    targets: list[dict[str, Any]]  # name, file, distance
    lpips: dict[str, Any]
    network: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_targets(target: Path, resolution: int) -> list[Target]:
    """Every target decoded, centre-cropped and resized as the dataset tool does; an
    unusable one refuses the run, naming it, before any work."""
    if target.is_dir():
        source = FolderSource(target)
        files = [target / rel for rel in source.files]
    elif target.suffix.lower() in IMAGE_SUFFIXES:
        files = [target]
    else:
        raise StageError(f"target {show_path(target)} is not an image file "
                         f"({', '.join(sorted(IMAGE_SUFFIXES))}) or a folder")
    out: dict[str, Target] = {}
    for path in files:
        try:
            size = path.stat().st_size
            if size > MAX_RECORD_BYTES:
                raise ValueError(f"{size} bytes, over the {MAX_RECORD_BYTES}-byte limit")
            image = decode_square(path.read_bytes(), resolution)
        except OSError as exc:
            raise StageError(f"cannot read target {show_path(path)}: "
                             f"{exc.strerror or exc}") from exc
        except ValueError as exc:
            raise StageError(f"target {show_path(path)}: {exc}") from exc
        rel = path.relative_to(target) if target.is_dir() else Path(path.name)
        name = rel.with_suffix("").as_posix().replace("/", "-")
        if name in out:
            raise StageError(f"targets {show_path(out[name].path)} and {show_path(path)} "
                             f"would both be written as {name!r}: rename one")
        out[name] = Target(name, path, image, sha256_file(path))
    return list(out.values())


def downsample(images: Any, size: int = LPIPS_PX) -> Any:
    """NHWC images larger than ``size`` box-averaged down to it."""
    import tensorflow as tf

    res = images.shape[1]
    if res <= size:
        return images
    f = res // size
    return tf.reduce_mean(tf.reshape(images, [-1, size, f, size, f, images.shape[-1]]), [2, 4])


def noise_regularisation(maps: list[Any]) -> Any:
    """Σ over maps and pyramid levels of the squared lag-1 autocorrelations along x and y."""
    import tensorflow as tf

    total = tf.constant(0.0)
    for var in maps:
        n = var[0, 0]  # [H, W]
        while True:
            total += tf.square(tf.reduce_mean(n * tf.roll(n, 1, axis=1)))
            total += tf.square(tf.reduce_mean(n * tf.roll(n, 1, axis=0)))
            size = n.shape[0]
            if size <= 8:
                break
            n = tf.reduce_mean(tf.reshape(n, [size // 2, 2, size // 2, 2]), [1, 3]) * 2.0
    return total


class Projector:
    """The compiled projection step of one network and LPIPS; reused across targets."""

    def __init__(self, G: Any, lpips: Any, cfg: ProjectConfig) -> None:  # noqa: N803
        import tensorflow as tf

        self.G, self.lpips, self.cfg = G, lpips, cfg
        net = G.cfg
        self.w = tf.Variable(tf.zeros([1, net.w_dim]), name="projected_w")
        self.noise = [tf.Variable(tf.zeros(v.shape), name=f"projected_noise{i}")
                      for i, v in enumerate(G.synthesis.noise_vars)]
        self.params = [self.w, *self.noise]
        self.m = [tf.Variable(tf.zeros_like(v)) for v in self.params]
        self.v = [tf.Variable(tf.zeros_like(v)) for v in self.params]
        self.target = tf.Variable(tf.zeros([1, net.resolution, net.resolution, 3]))
        self.step = tf.function(self._step)

    def mean_w(self, rnd: np.random.RandomState) -> tuple[np.ndarray, float]:
        """The mean of ``w_avg_samples`` mapped z and their RMS distance from it (σ_w)."""
        import tensorflow as tf

        n, net = self.cfg.w_avg_samples, self.G.cfg
        z = rnd.randn(n, net.z_dim).astype(np.float32)
        ws = np.concatenate([self.G.mapping(tf.constant(z[i:i + 1000])).numpy()
                             for i in range(0, n, 1000)]).astype(np.float64)
        mean = ws.mean(axis=0)
        return mean.astype(np.float32), float(np.sqrt(((ws - mean) ** 2).sum(axis=1).mean()))

    def reset(self, target: np.ndarray, w: np.ndarray, rnd: np.random.RandomState) -> None:
        """Start a target: w at ``w``, fresh noise maps from ``rnd``, no Adam state."""
        import tensorflow as tf

        self.target.assign(target[None].astype(np.float32))
        self.w.assign(w[None])
        for var in self.noise:
            var.assign(rnd.randn(*var.shape).astype(np.float32))
        for slot in (*self.m, *self.v):
            slot.assign(tf.zeros_like(slot))

    def image(self, w: Any) -> Any:
        """Synthesis of one w (every layer) with the noise maps; NHWC in [0, 255]."""
        import tensorflow as tf

        ws = tf.tile(w[:, None, :], [1, self.G.cfg.num_ws, 1])
        return (self.G.synthesis(ws, noise=self.noise) + 1.0) * 127.5

    def _step(self, t: Any, lr: Any, w_noise: Any) -> tuple[Any, Any]:
        """One Adam step at (1-based) count ``t``; returns (distance, loss) before it."""
        import tensorflow as tf

        b1, b2 = self.cfg.betas
        with tf.GradientTape() as tape:
            img = self.image(self.w + w_noise)
            dist = self.lpips.tensor_distance(downsample(self.target), downsample(img))[0]
            loss = dist + self.cfg.noise_weight * noise_regularisation(self.noise)
        grads = tape.gradient(loss, self.params)
        for var, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m.assign(b1 * m + (1 - b1) * g)
            v.assign(b2 * v + (1 - b2) * tf.square(g))
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            var.assign_sub(lr * m_hat / (tf.sqrt(v_hat) + 1e-8))
        for var in self.noise:  # back to zero mean, unit variance
            centred = var - tf.reduce_mean(var)
            var.assign(centred * tf.math.rsqrt(tf.reduce_mean(tf.square(centred))))
        return dist, loss


def project_one(proj: Projector, target: Target, w_avg: np.ndarray, w_std: float,
                tmp: Path) -> float:
    """Project one target into ``tmp``; returns the final LPIPS distance."""
    import tensorflow as tf

    cfg, net = proj.cfg, proj.G.cfg
    rnd = np.random.RandomState(cfg.seed)
    proj.reset(target.image, w_avg, rnd)
    frames_at = {round(k * cfg.steps / cfg.save_frames) for k in range(1, cfg.save_frames + 1)
                 } if cfg.save_frames else set()
    frames, rows = [], []
    every = max(1, cfg.steps // 10)
    for step in range(cfg.steps):
        lr, strength = cfg.learning_rate(step), cfg.w_noise(step, w_std)
        w_noise = rnd.randn(1, net.w_dim).astype(np.float32) * strength
        dist, loss = proj.step(tf.constant(step + 1, tf.float32), tf.constant(lr, tf.float32),
                               tf.constant(w_noise))
        rows.append({"step": step, "distance": float(dist), "loss": float(loss), "lr": lr,
                     "w_noise": strength})
        if step + 1 in frames_at:
            frames.append(_image(proj, proj.w))
        if (step + 1) % every == 0 or step + 1 == cfg.steps:
            print(f"project {target.name}: step {step + 1}/{cfg.steps} distance "
                  f"{float(dist):.4f}", file=sys.stderr)
    final = _image(proj, proj.w)
    dist = float(proj.lpips.distance(
        downsample(tf.constant(target.image[None], tf.float32)).numpy(),
        downsample(tf.constant(final[None], tf.float32)).numpy())[0])
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "target.png").write_bytes(_png(target.image))
    (tmp / "proj.png").write_bytes(_png(final))
    if frames:
        (tmp / "frames.png").write_bytes(_png(np.concatenate(frames, axis=1)))
    (tmp / "progress.jsonl").write_text("".join(to_json(r) + "\n" for r in rows))
    arrays = {"w": np.tile(proj.w.numpy(), [net.num_ws, 1])}
    arrays.update({f"noise{i}": v.numpy() for i, v in enumerate(proj.noise)})
    save_npz(tmp / "projected_w.npz", arrays)  # fixed member times: same run, same bytes
    return dist


def _image(proj: Projector, w: Any) -> np.ndarray:
    return to_uint8(proj.image(w).numpy()[0] / 127.5 - 1.0)


def run(cfg: ProjectConfig) -> ProjectResult:
    """Project the target (or each image of the folder) into ``cfg.out``."""
    from stylegan_ops.metrics import detectors

    lpips = detectors.load("lpips")  # a missing file is refused before anything else
    G = load_generator(cfg.network)  # noqa: N806
    targets = read_targets(cfg.target, G.cfg.resolution)
    proj = Projector(G, lpips, cfg)
    w_avg, w_std = proj.mean_w(np.random.RandomState(cfg.seed))
    done = []
    with atomic_dir(cfg.out) as tmp:
        folder = cfg.target.is_dir()
        for target in targets:
            dist = project_one(proj, target, w_avg, w_std,
                               tmp / target.name if folder else tmp)
            done.append({"name": target.name, "file": str(target.path), "distance": dist})
        net = G.cfg
        (tmp / "projection.json").write_bytes(dump_json({
            "network_sha256": network_digest(cfg.network), "resolution": net.resolution,
            "lpips": lpips.label, "w_std": w_std,
            "config": {k: v for k, v in cfg.to_dict().items()
                       if k not in ("network", "target", "out")},
            "targets": [{"name": t.name, "file": t.path.name, "sha256": t.sha256,
                         "distance": d["distance"], "dir": t.name if folder else "."}
                        for t, d in zip(targets, done, strict=True)],
            "files": {"target.png": "the target, centre-cropped and resized to the network",
                      "proj.png": "synthesis of w (every layer) with the projected noise maps",
                      "projected_w.npz": f"w [{net.num_ws}, {net.w_dim}] (one per layer, all "
                                         f"equal) and noise0..noise{len(proj.noise) - 1} "
                                         "[1, 1, H, W], the synthesis noise inputs",
                      "progress.jsonl": "per step: distance, loss, lr, w_noise (before it)",
                      "frames.png": "--save-frames: the image at evenly spaced steps"}}))
    return ProjectResult(str(cfg.out), done, lpips.label, str(cfg.network))
