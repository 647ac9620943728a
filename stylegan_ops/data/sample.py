"""The embedded sample: an LSUN-format LMDB of generated cartoon cats.

Values are WebP like LSUN's, keys are 40-hex-digit ids like LSUN's, sizes and aspect ratios
vary around 256–512 px, and a few records are corrupt or empty, as in the real database.
The pictures have structure (a face, ears, eyes, stripes, gradients) so training on them
visibly learns something. Everything is a pure function of the config: image *i* of a seed
is the same picture in every sample that contains it, so samples over disjoint index ranges
(``offset``) share no image, and the ``alt`` palette recolours the same stream with fur and
eye colours that the default palette never produces (for transfer-learning experiments).
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import atomic_dir

MAX_COUNT = 10_000_000  # a sample, not a dataset: LSUN cat itself has 1.66 M images
FUR_JITTER = 20  # each channel of a cat's fur is its palette colour +- this
Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Palette:
    """The colours a cat is drawn in; the background gradient is random in every palette."""

    fur: tuple[Colour, ...]  # base colours, jittered by FUR_JITTER per channel
    eyes: tuple[Colour, ...]


PALETTES = {
    # the original sample's colours: ginger, grey, white, black, cream, brown
    "default": Palette(fur=((230, 150, 60), (90, 90, 90), (240, 240, 235), (40, 35, 30),
                            (200, 170, 130), (160, 110, 70)),
                       eyes=((120, 200, 80), (230, 190, 40), (80, 150, 230))),
    # blue, green, purple, teal, magenta, sky: every jittered fur colour lies more than
    # 2 * FUR_JITTER away from every default one in some channel, so none is shared
    "alt": Palette(fur=((60, 100, 210), (70, 180, 80), (150, 60, 180), (40, 160, 170),
                        (210, 70, 150), (150, 210, 230)),
                   eyes=((220, 80, 40), (170, 90, 220), (60, 210, 200))),
}


@dataclass(frozen=True)
class SampleConfig:
    """Where to write the sample and how big it is."""

    out: Path
    count: int = 1000  # decodable images
    bad: int | None = None  # corrupt or empty records on top; None = 2% (at least 2)
    seed: int = 0
    workers: int = 1  # processes used to draw and encode; output does not depend on it
    palette: str = "default"  # a key of PALETTES
    offset: int = 0  # index of the first image: [offset, offset + count) of the seed's stream

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_COUNT:
            raise StageError(f"count must be in 1..{MAX_COUNT}, got {self.count}")
        if self.bad is not None and not 0 <= self.bad <= MAX_COUNT:
            raise StageError(f"bad must be in 0..{MAX_COUNT}, got {self.bad}")
        if self.seed < 0:  # numpy's seed sequences take non-negative integers only
            raise StageError(f"seed must be >= 0, got {self.seed}")
        if not 1 <= self.workers <= 256:
            raise StageError(f"workers must be in 1..256, got {self.workers}")
        if self.palette not in PALETTES:
            raise StageError(f"palette must be one of {', '.join(PALETTES)}, "
                             f"got {self.palette!r}")
        # image indices stay below bad_record's 10**9 + j, so no good image is ever the
        # source of a truncated record
        if not 0 <= self.offset <= MAX_COUNT - self.count:
            raise StageError(f"offset must be in 0..{MAX_COUNT - self.count} for count "
                             f"{self.count}, got {self.offset}")

    @property
    def bad_records(self) -> int:
        return self.bad if self.bad is not None else max(2, self.count // 50)


@dataclass(frozen=True)
class SampleResult:
    out: str
    images: int
    bad_records: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lsun_key(seed: int, index: int) -> bytes:
    """A 40-hex-digit key like LSUN's; random-looking, so bad records land anywhere."""
    return hashlib.sha1(f"{seed}:{index}".encode(), usedforsecurity=False).hexdigest().encode()


def fur_colour(rng: np.random.Generator, palette: Palette) -> Colour:
    """A palette fur colour, jittered per channel by up to FUR_JITTER."""
    base = np.array(palette.fur[int(rng.integers(len(palette.fur)))])
    fur = base + rng.integers(-FUR_JITTER, FUR_JITTER + 1, size=3)
    r, g, b = (int(c) for c in fur.clip(0, 255))
    return r, g, b


def draw_cat(rng: np.random.Generator, palette: Palette = PALETTES["default"]) -> Image.Image:
    """One cartoon cat on a gradient background with a striped texture.

    The palette changes colours only: the same ``rng`` state gives the same cat's shape,
    pose and background in every palette (the draws happen in the same order)."""
    w, h = (int(v) for v in rng.integers(256, 513, size=2))
    bg0, bg1 = rng.integers(0, 256, size=(2, 3))
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    tilt = np.linspace(0.0, 0.3, w, dtype=np.float32)[None, :, None]
    background = (bg0 * (1 - t) + bg1 * t) * (1 - tilt) + 128 * tilt
    img = Image.fromarray(background.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)

    fur_rgb = fur_colour(rng, palette)
    dark = tuple(int(c * 0.5) for c in fur_rgb)
    s = min(w, h) * float(rng.uniform(0.32, 0.45))  # head radius
    cx = w / 2 + float(rng.uniform(-0.12, 0.12)) * w
    cy = h / 2 + float(rng.uniform(-0.05, 0.15)) * h
    # body below the head
    draw.ellipse((cx - 1.3 * s, cy + 0.6 * s, cx + 1.3 * s, cy + 2.6 * s), fill=fur_rgb)
    # ears
    for side in (-1, 1):
        ear = [(cx + side * 0.95 * s, cy - 0.25 * s), (cx + side * 0.75 * s, cy - 1.35 * s),
               (cx + side * 0.2 * s, cy - 0.8 * s)]
        draw.polygon(ear, fill=fur_rgb)
        inner = [(cx + side * 0.8 * s, cy - 0.4 * s), (cx + side * 0.72 * s, cy - 1.1 * s),
                 (cx + side * 0.35 * s, cy - 0.75 * s)]
        draw.polygon(inner, fill=(230, 160, 170))
    draw.ellipse((cx - s, cy - s, cx + s, cy + s), fill=fur_rgb)
    # tabby stripes on the forehead
    for k in range(int(rng.integers(0, 4))):
        x = cx + (k - 1) * 0.22 * s
        draw.line((x, cy - 0.95 * s, x, cy - 0.55 * s), fill=dark, width=max(2, int(s / 14)))
    # eyes with slit pupils, looking the same way
    eye = tuple(int(c) for c in rng.choice([list(c) for c in palette.eyes]))
    look = float(rng.uniform(-0.06, 0.06)) * s
    for side in (-1, 1):
        ex, ey = cx + side * 0.4 * s, cy - 0.1 * s
        draw.ellipse((ex - 0.2 * s, ey - 0.14 * s, ex + 0.2 * s, ey + 0.14 * s), fill=eye)
        draw.ellipse((ex + look - 0.05 * s, ey - 0.13 * s, ex + look + 0.05 * s,
                      ey + 0.13 * s), fill=(10, 10, 10))
    # nose, mouth and whiskers
    draw.polygon([(cx - 0.1 * s, cy + 0.2 * s), (cx + 0.1 * s, cy + 0.2 * s),
                  (cx, cy + 0.32 * s)], fill=(200, 100, 110))
    draw.line((cx, cy + 0.32 * s, cx, cy + 0.45 * s), fill=dark, width=2)
    for side in (-1, 1):
        for dy in (-0.05, 0.05, 0.15):
            draw.line((cx + side * 0.25 * s, cy + (0.35 + dy) * s, cx + side * 1.05 * s,
                       cy + (0.3 + 2 * dy) * s), fill=(250, 250, 250), width=1)
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 1.2))))
    grain = rng.normal(0.0, 6.0, size=(h, w, 1)).astype(np.float32)
    return Image.fromarray((np.asarray(img, np.float32) + grain).clip(0, 255).astype(np.uint8))


def encode_image(seed: int, index: int, palette: str = "default") -> bytes:
    """The WebP bytes of sample image ``index``."""
    rng = np.random.default_rng([seed, index])
    buf = io.BytesIO()
    draw_cat(rng, PALETTES[palette]).save(buf, format="WEBP", quality=88, method=2)
    return buf.getvalue()


def bad_record(seed: int, index: int) -> bytes:
    """Empty, truncated WebP, or garbage: the three kinds of damage LSUN has."""
    kind = index % 3
    if kind == 0:
        return b""
    if kind == 1:
        return encode_image(seed, 10**9 + index)[:200]
    return np.random.default_rng([seed, index, 7]).bytes(512)


def _encode_job(args: tuple[int, int, str]) -> bytes:
    return encode_image(*args)


def run(cfg: SampleConfig) -> SampleResult:
    """Write the sample LMDB atomically to ``cfg.out``."""
    if cfg.out.exists() or cfg.out.is_symlink():
        raise StageError(f"output already exists: {cfg.out}")
    first = cfg.offset  # images keep their index (and key) from the seed's full stream
    jobs = [(cfg.seed, first + i, cfg.palette) for i in range(cfg.count)]
    ctx = multiprocessing.get_context("fork")
    with atomic_dir(cfg.out) as tmp:
        # Sized for the worst case; LMDB files are sparse, so this costs no disk.
        env = lmdb.open(str(tmp), map_size=(cfg.count + cfg.bad_records) * 2**21 + 2**26)
        try:
            with ctx.Pool(cfg.workers) as pool, env.begin(write=True) as txn:
                for i, value in enumerate(pool.imap(_encode_job, jobs, chunksize=16)):
                    txn.put(lsun_key(cfg.seed, first + i), value)
                for j in range(cfg.bad_records):
                    txn.put(lsun_key(cfg.seed, first + cfg.count + j), bad_record(cfg.seed, j))
        finally:
            env.close()
        # LMDB's lock file holds reader slots and pids, different bytes on every run; the
        # readers open with lock=False, so leaving it out makes equal samples equal files
        (tmp / "lock.mdb").unlink(missing_ok=True)
    return SampleResult(str(cfg.out), cfg.count, cfg.bad_records)
