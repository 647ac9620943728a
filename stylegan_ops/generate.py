"""Image generation from a snapshot or an NVIDIA .pkl: seeds → PNGs, and style mixing.

For seed s, z and then every noise input (in creation order) are drawn from
``numpy.random.RandomState(s)``, as NVIDIA's generator script did: an imported network
gives the same images as the original tool, and the same arguments give the same bytes.
With ``--xla`` the same inputs go through one XLA-compiled map + synthesis instead of the
eager ops: the images agree to float rounding (a pixel may differ by one level), not to the
byte, so the eager path stays the default.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import atomic_dir, check_output, dump_json, sha256_file, write_atomic

NOISE_MODES = ("const", "random", "none")
MAX_SEED = 2**32 - 1  # numpy.random.RandomState takes 0 .. 2**32 - 1
MAX_SEEDS = 100_000  # one PNG each; a typo like 0-999999999 is refused, not started


def parse_seeds(text: str) -> tuple[int, ...]:
    """``a-b`` (inclusive) or ``a,b,c`` (or a mix: ``1,5-7``); each 0 .. 2**32 - 1."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if m := re.fullmatch(r"([0-9]+)-([0-9]+)", part):
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise StageError(f"bad seed range {part!r}")
            if hi - lo + 1 + len(seeds) > MAX_SEEDS:
                raise StageError(f"seed range {part!r} holds more than {MAX_SEEDS} seeds")
            seeds.extend(range(lo, hi + 1))
        elif re.fullmatch(r"[0-9]+", part):  # str.isdigit would take '²' and other digits
            seeds.append(int(part))
        else:
            raise StageError(f"bad seeds {text!r}: use a-b or a,b,c")
    if not seeds:
        raise StageError(f"no seeds in {text!r}")
    too_big = [s for s in seeds if s > MAX_SEED]
    if too_big:
        raise StageError(f"seed {too_big[0]} in {text!r} is above {MAX_SEED}")
    if len(seeds) > MAX_SEEDS:
        raise StageError(f"{text!r} holds more than {MAX_SEEDS} seeds")
    return tuple(seeds)


def check_psi(psi: float) -> float:
    """ψ must be a finite number: NaN or ±inf would make every image NaN."""
    if isinstance(psi, bool) or not isinstance(psi, int | float) or not math.isfinite(psi):
        raise StageError(f"truncation-psi must be a finite number, got {psi!r}")
    return float(psi)


def load_generator(path: Path) -> Any:
    """The sampling generator (Gs) of a snapshot directory or an NVIDIA .pkl."""
    if path.suffix == ".pkl" or path.is_file():
        from stylegan_ops.legacy import load_pickle

        imported = load_pickle(path)  # checked in full before TensorFlow is even imported
        from stylegan_ops.networks.generator import Generator
        from stylegan_ops.networks.snapshot import assign

        G = Generator(imported.config)  # noqa: N806
        assign(G.params, imported.Gs, f"{path} (Gs)")
        return G
    from stylegan_ops.networks.generator import Generator
    from stylegan_ops.networks.snapshot import Snapshot, assign

    snap = Snapshot.load(path)
    G = Generator(snap.config)  # noqa: N806
    assign(G.params, snap.Gs, f"{path} (Gs)")
    return G


def network_digest(path: Path) -> str:
    """sha256 of the sampling weights: Gs.npz of a snapshot, or the .pkl file itself."""
    return sha256_file(path if path.is_file() else path / "Gs.npz")


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats → uint8 exactly as NVIDIA's tools: x·127.5 + 128, clipped."""
    return np.clip(images * 127.5 + 128, 0, 255).astype(np.uint8)


def random_noise(G: Any, n: int) -> list[Any]:  # noqa: N803
    """The noise inputs ``G.synthesis(noise_mode="random")`` would draw for ``n`` images,
    drawn eagerly in the same order and shapes (the same numbers after the same
    ``tf.random.set_seed``), as explicit [N, 1, H, W] inputs a compiled function takes:
    random ops inside XLA ignore TensorFlow's seeds."""
    import tensorflow as tf

    return [tf.transpose(tf.random.normal([n, v.shape[2], v.shape[3], 1]), [0, 3, 1, 2])
            for v in G.synthesis.noise_vars]


Sampler = Callable[[Any, list[Any] | None], Any]  # (z, explicit noise or None) → images


def compiled_sampler(G: Any, psi: float, *, xla: bool = True) -> Sampler:  # noqa: N803
    """z → ws → [-1, 1] images as one tf.function of z and explicit noise inputs (None: no
    noise), XLA-compiled unless ``xla`` is False; traced once per batch size."""
    import tensorflow as tf

    def sample(z: Any, noise: list[Any] | None) -> Any:
        ws = G.map(z, psi=psi)
        if noise is None:
            return G.synthesis(ws, noise_mode="none")
        return G.synthesis(ws, noise=noise)

    if xla:
        from stylegan_ops.networks.ops import xla_function

        return xla_function(sample)  # type: ignore[no-any-return]
    return tf.function(sample)  # type: ignore[no-any-return]


def synthesize(G: Any, seed: int, psi: float, noise_mode: str,  # noqa: N803
               compiled: Sampler | None = None) -> np.ndarray:
    """The uint8 image of one seed: eager ops (NVIDIA's bytes), or ``compiled`` (from
    ``compiled_sampler`` at the same ψ) fed the same z and noise."""
    import tensorflow as tf

    rnd = np.random.RandomState(seed)
    z = rnd.randn(1, G.cfg.z_dim).astype(np.float32)
    if compiled is not None:
        noise: list[Any] | None = None
        if noise_mode == "const":
            noise = [tf.constant(rnd.randn(*v.shape).astype(np.float32))
                     for v in G.synthesis.noise_vars]
        elif noise_mode == "random":
            tf.random.set_seed(seed)
            noise = random_noise(G, 1)
        return to_uint8(compiled(tf.constant(z), noise).numpy()[0])
    ws = G.map(tf.constant(z), psi=psi)
    if noise_mode == "const":
        noise = [tf.constant(rnd.randn(*v.shape).astype(np.float32))
                 for v in G.synthesis.noise_vars]
        img = G.synthesis(ws, noise=noise)
    elif noise_mode == "random":
        tf.random.set_seed(seed)
        img = G.synthesis(ws, noise_mode="random")
    else:
        img = G.synthesis(ws, noise_mode="none")
    return to_uint8(img.numpy()[0])


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.squeeze() if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class GenerateConfig:
    network: Path
    seeds: tuple[int, ...]
    out: Path
    truncation_psi: float = 0.5
    noise_mode: str = "const"
    xla: bool = False  # one XLA-compiled map + synthesis; off: eager, NVIDIA's exact bytes

    def __post_init__(self) -> None:
        if self.noise_mode not in NOISE_MODES:
            raise StageError(f"noise-mode must be one of {', '.join(NOISE_MODES)}, "
                             f"got {self.noise_mode!r}")
        check_psi(self.truncation_psi)
        if not self.seeds or any(not 0 <= s <= MAX_SEED for s in self.seeds):
            raise StageError(f"seeds must be 1 to {MAX_SEEDS} numbers in 0..{MAX_SEED}")
        if not self.network.exists():
            raise StageError(f"no such network: {self.network}")
        check_output(self.out, "dir")


@dataclass(frozen=True)
class GenerateResult:
    out: str
    files: list[str]
    truncation_psi: float
    network: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(cfg: GenerateConfig) -> GenerateResult:
    """Write ``seed<NNNN>.png`` per seed (and generate.json) into a new directory."""
    G = load_generator(cfg.network)  # noqa: N806
    compiled = compiled_sampler(G, cfg.truncation_psi) if cfg.xla else None
    files = []
    with atomic_dir(cfg.out) as tmp:
        for seed in cfg.seeds:
            name = f"seed{seed:04d}.png"
            (tmp / name).write_bytes(_png(synthesize(G, seed, cfg.truncation_psi,
                                                     cfg.noise_mode, compiled)))
            files.append(name)
        # the network by content, not by path: same weights and seeds, same version
        (tmp / "generate.json").write_bytes(dump_json({
            "network_sha256": network_digest(cfg.network), "seeds": list(cfg.seeds),
            "truncation_psi": cfg.truncation_psi, "noise_mode": cfg.noise_mode}))
    return GenerateResult(str(cfg.out), files, cfg.truncation_psi, str(cfg.network))


def style_mix(network: Path, row_seeds: tuple[int, ...], col_seeds: tuple[int, ...],
              col_styles: tuple[int, ...], psi: float, out: Path) -> GenerateResult:
    """A grid: column images on top, row images on the left, and in each cell the row's
    w with the ``col_styles`` layers taken from the column's w."""
    check_psi(psi)
    check_output(out, "dir")
    import tensorflow as tf

    G = load_generator(network)  # noqa: N806
    bad = [s for s in col_styles if not 0 <= s < G.cfg.num_ws]
    if bad:
        raise StageError(f"col-styles {bad} outside 0..{G.cfg.num_ws - 1}")
    seeds = sorted(set(row_seeds + col_seeds))
    zs = np.stack([np.random.RandomState(s).randn(G.cfg.z_dim) for s in seeds]).astype(
        np.float32)
    ws = dict(zip(seeds, G.map(tf.constant(zs), psi=psi).numpy(), strict=True))

    def render(w: np.ndarray) -> np.ndarray:
        return to_uint8(G.synthesis(tf.constant(w[None]), noise_mode="none").numpy()[0])

    res = G.cfg.resolution
    canvas = np.zeros(((len(row_seeds) + 1) * res, (len(col_seeds) + 1) * res, 3), np.uint8)
    for j, c in enumerate(col_seeds):
        canvas[:res, (j + 1) * res:(j + 2) * res] = render(ws[c])
    for i, r in enumerate(row_seeds):
        canvas[(i + 1) * res:(i + 2) * res, :res] = render(ws[r])
        for j, c in enumerate(col_seeds):
            w = ws[r].copy()
            w[list(col_styles)] = ws[c][list(col_styles)]
            canvas[(i + 1) * res:(i + 2) * res, (j + 1) * res:(j + 2) * res] = render(w)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "grid.png", _png(canvas))
    return GenerateResult(str(out), ["grid.png"], psi, str(network))


def import_pickle(pkl: Path, out: Path) -> dict[str, Any]:
    """Convert an NVIDIA .pkl into our snapshot directory (npz by NVIDIA names)."""
    from stylegan_ops.legacy import load_pickle

    check_output(out, "dir")
    imported = load_pickle(pkl)  # checked in full before TensorFlow is even imported
    snap = _build_snapshot(imported)
    snap.save(out, meta={"imported_from": str(pkl), "import": imported.record})
    return {"out": str(out), "resolution": snap.config.resolution,
            "config": snap.config.to_dict(), "import": imported.record}


def _build_snapshot(imported: Any) -> Any:
    from stylegan_ops.networks.discriminator import Discriminator
    from stylegan_ops.networks.generator import Generator
    from stylegan_ops.networks.snapshot import Snapshot, assign

    pkl = imported.source
    # our own networks must take every array as it is before anything is written
    assign(Generator(imported.config).params, imported.G, f"{pkl} (G)")
    assign(Generator(imported.config).params, imported.Gs, f"{pkl} (Gs)")
    assign(Discriminator(imported.config).params, imported.D, f"{pkl} (D)")
    return Snapshot(imported.config, imported.G, imported.D, imported.Gs,
                    {"kimg": 0.0, "imported_from": pkl}, {})
