"""Turn raw records into training images: decode, check the pixel format, crop, resize,
and write every level of the pyramid.

Only images whose pixels map faithfully to 8-bit RGB are used; anything else (16-bit or
float samples, CMYK, transparency) is skipped with its reason, never converted into
something the source did not hold. Decoding is bounded: the pixel count is checked from the
header before a pixel is decoded.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image

from stylegan_ops.data import tfrecord
from stylegan_ops.data.layout import level_file
from stylegan_ops.data.sources import Source

log = logging.getLogger(__name__)

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # PIL names objects by address: not reproducible
# Decoded pixels per image at most (8192x8192): ~270 MB as RGBA while converting. Below
# PIL's own decompression-bomb warning (89 Mpx), so PIL never warns first.
MAX_PIXELS = 8192 * 8192
# The decoders tried: the formats LSUN and image folders hold (JPEG includes phones' MPO).
# No PostScript (Ghostscript) and no exotic plugins run on hostile bytes.
DECODERS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
Image.init()  # registers every plugin, so WEBP and TIFF are known to Image.open(formats=)
# Pixel formats with an exact 8-bit RGB meaning: bilevel, 8-bit grey, palette, RGB.
OPAQUE_MODES = frozenset({"1", "L", "P", "RGB"})
# Formats with alpha: used only when every pixel is fully opaque (then alpha says nothing).
ALPHA_MODES = frozenset({"LA", "PA", "RGBA"})
# What Pillow's decoders raise on malformed input besides OSError.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, struct.error, EOFError,
                 IndexError, KeyError, ZeroDivisionError, Image.DecompressionBombError)


class UnusableImageError(ValueError):
    """A decodable image whose pixels cannot become training data faithfully."""


def decode_square(data: bytes, resolution: int) -> np.ndarray:
    """Decode, check the pixel format, center-crop to the short side, Lanczos-resize; HWC uint8.

    Raises ValueError for empty, undecodable, too large or unfaithfully mappable images
    (the caller counts and skips those, with the message as the reason).
    """
    if not data:
        raise ValueError("empty record")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=DECODERS)
        with img:
            rgb = _to_rgb(img)
    except UnusableImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image too large: {exc}") from exc
    except DECODE_ERRORS as exc:
        raise ValueError(f"undecodable image: {exc}") from exc
    w, h = rgb.size
    crop = min(w, h)
    left, top = (w - crop) // 2, (h - crop) // 2
    square = rgb.crop((left, top, left + crop, top + crop))
    if crop != resolution:
        square = square.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    w, h = img.size
    if w < 1 or h < 1 or w * h > MAX_PIXELS:
        raise UnusableImageError(f"image is {w}x{h} px; at most {MAX_PIXELS} pixels are "
                                 f"decoded")
    if img.mode not in OPAQUE_MODES | ALPHA_MODES:
        raise UnusableImageError(f"pixel format {img.mode} cannot be mapped faithfully to "
                                 f"8-bit RGB")
    img.load()
    if img.mode in ALPHA_MODES or img.mode == "P" or "transparency" in img.info:
        # Palette and grey+alpha images go through RGBA so their colours survive; a
        # transparent pixel has no colour to train on, so such an image is refused.
        rgba = img.convert("RGBA")
        lowest, _ = cast(tuple[int, int], rgba.getchannel("A").getextrema())  # one band
        if lowest < 255:
            raise UnusableImageError(f"{img.mode} image has transparent pixels")
        return rgba.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def pyramid(image: np.ndarray) -> list[np.ndarray]:
    """The image and its 2×2 box means down to 4×4, top level first (CHW uint8).

    Each level is computed from the previous level's float32 values, not from its rounded
    bytes, and only then written as rint().clip(0, 255).
    """
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[0] in (1, 3)
    levels = [image]
    img = image.astype(np.float32)
    while img.shape[1] > 4:
        img = (img[:, 0::2, 0::2] + img[:, 0::2, 1::2] + img[:, 1::2, 0::2]
               + img[:, 1::2, 1::2]) * np.float32(0.25)
        levels.append(np.rint(img).clip(0, 255).astype(np.uint8))
    return levels


class LevelWriters:
    """One TFRecord writer per level, plus the label rows, in a directory."""

    def __init__(self, directory: Path, name: str, resolution: int, channels: int = 3,
                 append: bool = False) -> None:
        top = resolution.bit_length() - 1
        self.writers = {
            level: tfrecord.LevelWriter(directory / level_file(name, level),
                                        (channels, 2**level, 2**level), append)
            for level in range(top, 1, -1)
        }
        self.labels: list[np.ndarray] = []

    def write_image(self, chw: np.ndarray, label: np.ndarray | None) -> None:
        for writer, level_image in zip(self.writers.values(), pyramid(chw), strict=True):
            writer.write(level_image)
        if label is not None:
            self.labels.append(label)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


@dataclass
class Progress:
    """What an extraction pass did: good images, skipped records, the next position."""

    count: int = 0
    next_position: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)


def extract(source: Source, start: int, stop: int, limit: int | None, resolution: int,
            writers: LevelWriters, labels: np.ndarray | None,
            tick: Callable[[], object] = lambda: None) -> Progress:
    """Decode records in [start, stop) into ``writers`` until ``limit`` good images."""
    done = Progress(next_position=start)
    for record in source.read(start, stop):
        if limit is not None and done.count >= limit:
            break
        done.next_position = record.position + 1
        tick()
        try:
            if record.skip:
                raise ValueError(record.skip)
            hwc = decode_square(record.data, resolution)
        except ValueError as exc:
            log.warning("skipping record %d (%s): %s", record.position, record.key, exc)
            done.skipped.append({"position": record.position, "key": record.key,
                                 "reason": _ADDRESS.sub("", str(exc))[:200]})
            continue
        label = labels[record.position] if labels is not None else None
        writers.write_image(np.ascontiguousarray(hwc.transpose(2, 0, 1)), label)
        done.count += 1
    return done
