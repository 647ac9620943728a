"""Serving store objects: streamed, ETag = sha256, cached forever when the URL is pinned.

Thumbnails are made with Pillow once per (object, size), on disk under
``$STYLEGAN_CACHE/ui-thumbnails`` (default ``~/.cache/stylegan_ops/ui-thumbnails``), and at
most two at a time so a burst of first views cannot starve the api-server. An image that
needs shrinking becomes a JPEG; one that already fits stays pixel for pixel (PNG), so a
page that enlarges a small fakes grid shows its pixels, not JPEG blocks.
"""

from __future__ import annotations

import io
import mimetypes
import os
import secrets
import threading
from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import FileResponse

from stylegan_airflow.ui.catalog import Catalog, UIError, VersionView, refused

THUMB_SIZES = (128, 256, 512)
THUMB_TYPES = {".png": "image/png", ".jpg": "image/jpeg"}  # by the cached file's suffix
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Served inline: types a browser cannot run as a page. Anything else (HTML, SVG, …) from a
# version is a download, so a file in the store can never script the Airflow origin.
INLINE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/gif", "application/json",
                "text/plain"}
TEXT_SUFFIXES = (".jsonl", ".txt", ".md", ".yaml", ".yml", ".csv", ".log")
FOREVER = "private, max-age=31536000, immutable"
_thumb_slots = threading.BoundedSemaphore(2)


def cache_dir() -> Path:
    """Where thumbnails are kept."""
    base = os.environ.get("STYLEGAN_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "stylegan_ops"
    return root / "ui-thumbnails"


def _etag(value: str) -> str:
    return f'"{value}"'


def _fresh(request: Request, etag: str) -> bool:
    """Whether the client's cached copy (If-None-Match) is this one."""
    header = request.headers.get("if-none-match", "")
    return etag in (t.strip() for t in header.split(",")) or header.strip() == "*"


def _cache_control(view: VersionView, ref: str) -> str:
    # a pinned ref (name@full-id) always names the same bytes; name:latest moves
    return FOREVER if ref == view.pinned else "private, no-cache"


def media_type(path: str) -> str:
    """The Content-Type a file is served with, by its name."""
    guessed = mimetypes.guess_type(path)[0]
    if path.endswith(TEXT_SUFFIXES):
        return "text/plain"
    return guessed or "application/octet-stream"


def serve_file(catalog: Catalog, request: Request, view: VersionView, ref: str,
               path: str, download: bool = False) -> Response:
    """One file of a version, streamed from its object (Range requests honoured)."""
    entry = catalog.entry(view, path)
    etag = _etag(entry.sha256)
    headers = {"ETag": etag, "Cache-Control": _cache_control(view, ref),
               "X-Content-Type-Options": "nosniff"}
    if _fresh(request, etag):
        return Response(status_code=304, headers=headers)
    kind = media_type(path)
    inline = kind in INLINE_TYPES and not download
    if kind == "text/plain":
        kind = "text/plain; charset=utf-8"
    return FileResponse(catalog.object_file(entry), media_type=kind, headers=headers,
                        filename=path.rsplit("/", 1)[-1],
                        content_disposition_type="inline" if inline else "attachment")


def serve_thumbnail(catalog: Catalog, request: Request, view: VersionView, ref: str,
                    path: str, size: int) -> Response:
    """A JPEG no larger than ``size`` px on either side, made once and kept on disk."""
    if size not in THUMB_SIZES:
        raise refused(f"thumbnail size {size} not offered; use one of {THUMB_SIZES}")
    entry = catalog.entry(view, path)
    if media_type(path) not in INLINE_TYPES - {"application/json", "text/plain"}:
        raise refused(f"{path!r} is not an image")
    etag = _etag(f"{entry.sha256}-{size}")
    headers = {"ETag": etag, "Cache-Control": _cache_control(view, ref),
               "X-Content-Type-Options": "nosniff"}
    if _fresh(request, etag):
        return Response(status_code=304, headers=headers)
    stem = cache_dir() / entry.sha256[:2] / f"{entry.sha256}-{size}"
    for suffix, kind in THUMB_TYPES.items():
        cached = stem.with_name(stem.name + suffix)
        if cached.is_file():
            return FileResponse(cached, media_type=kind, headers=headers,
                                content_disposition_type="inline")
    data = make_thumbnail(catalog.object_file(entry), size)
    suffix = ".png" if data.startswith(PNG_SIGNATURE) else ".jpg"
    cached = stem.with_name(stem.name + suffix)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{secrets.token_hex(4)}")
        tmp.write_bytes(data)
        tmp.replace(cached)  # atomic: a reader never sees half a thumbnail
    except OSError:  # a read-only home: serve it anyway, just uncached on disk
        pass
    return Response(data, media_type=THUMB_TYPES[suffix], headers=headers)


def make_thumbnail(source: Path, size: int) -> bytes:
    """An image fitted into ``size``×``size`` (never enlarged): JPEG bytes when it had to
    shrink, PNG bytes with the very pixels when it already fitted."""
    from PIL import Image, UnidentifiedImageError

    with _thumb_slots:
        try:
            with Image.open(source) as img:
                fits = img.width <= size and img.height <= size
                if not fits:
                    img.draft("RGB", (size, size))  # JPEG sources decode at a reduced scale
                    img.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
                rgb = img.convert("RGB")
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
            raise UIError(415, f"cannot make a thumbnail of this file: {exc}") from exc
        out = io.BytesIO()
        if fits:
            rgb.save(out, "PNG", optimize=True)
        else:
            rgb.save(out, "JPEG", quality=85, optimize=True)
        return out.getvalue()
