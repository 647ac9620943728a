"""Image grids (``reals.png`` and friends)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from stylegan_ops.fsutil import write_atomic


def grid(images: Sequence[np.ndarray], cols: int = 8, tile: int | None = None) -> Image.Image:
    """Lay out HWC uint8 images row by row; ``tile`` resizes each to that many pixels."""
    assert images, "grid needs at least one image"
    cols = max(1, min(cols, len(images)))
    rows = math.ceil(len(images) / cols)
    h, w = images[0].shape[:2]
    if tile is not None and tile != w:
        h, w = tile * h // w, tile
    canvas = Image.new("RGB", (cols * w, rows * h))
    for i, arr in enumerate(images):
        img = Image.fromarray(arr.squeeze() if arr.shape[-1] == 1 else arr)
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.LANCZOS)
        canvas.paste(img.convert("RGB"), ((i % cols) * w, (i // cols) * h))
    return canvas


def save_grid(images: Sequence[np.ndarray], path: Path, cols: int = 8,
              tile: int | None = None) -> None:
    """Write a PNG grid atomically."""
    buf = io.BytesIO()
    grid(images, cols, tile).save(buf, format="PNG", compress_level=1)
    write_atomic(path, buf.getvalue())
