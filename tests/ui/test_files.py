"""Serving store objects: streamed with ETags and caching headers, thumbnails, traversal."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.ui.conftest import HTML
from tests.ui.storefill import pinned


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_pinned_files_are_immutable_and_revalidate_with_304(client: Any,
                                                            filled: tuple[Path, Any]) -> None:
    ref = pinned(filled[1]["data1"])
    res = client.get(f"/files/{ref}/reals.png")
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert res.headers["etag"] == f'"{sha(res.content)}"'
    assert res.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.headers["content-disposition"].startswith("inline")
    again = client.get(f"/files/{ref}/reals.png", headers={"If-None-Match": res.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    # a moving ref names other bytes tomorrow: the browser must revalidate
    moving = client.get("/files/lsun-cat-256:latest/reals.png")
    assert moving.headers["cache-control"] == "private, no-cache"


def test_large_files_stream_and_honour_ranges(client: Any) -> None:
    res = client.get("/files/lsun-cat-256:v1/lsun-cat-256-r02.tfrecords",
                     headers={"Range": "bytes=1-2"})
    assert res.status_code == 206 and res.content == b"02"
    whole = client.get("/files/lsun-cat-256:v1/lsun-cat-256-r02.tfrecords")
    assert whole.headers["content-disposition"].startswith("attachment")
    assert whole.headers["content-type"] == "application/octet-stream"


def test_text_and_json_files_are_shown_inline(client: Any) -> None:
    jsonl = client.get("/files/stylegan2-evaluation-ours:v2/metric-swd.jsonl")
    assert jsonl.headers["content-type"] == "text/plain; charset=utf-8"
    assert jsonl.headers["content-disposition"].startswith("inline")
    assert client.get("/files/lsun-cat-256:v1/dataset.json").json()["count"] == 16
    forced = client.get("/files/lsun-cat-256:v1/dataset.json?download=true")
    assert forced.headers["content-disposition"].startswith("attachment")


def test_thumbnails_are_small_cached_on_disk_and_etagged(client: Any, tmp_path: Path,
                                                         filled: tuple[Path, Any]) -> None:
    ref = pinned(filled[1]["data1"])
    res = client.get(f"/thumbs/128/{ref}/reals.png")
    # it fits: never upscaled, and pixel for pixel (a page may enlarge it without smoothing)
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(res.content)) as img:
        assert img.size == (64, 32) and img.getcolors() == [(64 * 32, (200, 120, 40))]
    cached = list((tmp_path / "cache" / "ui-thumbnails").rglob("*-128.png"))
    assert len(cached) == 1 and cached[0].read_bytes() == res.content
    from_disk = client.get(f"/thumbs/128/{ref}/reals.png")
    assert from_disk.content == res.content and from_disk.headers["content-type"] == "image/png"
    assert res.headers["cache-control"].endswith("immutable")
    again = client.get(f"/thumbs/128/{ref}/reals.png",
                       headers={"If-None-Match": res.headers["etag"]})
    assert again.status_code == 304


def test_thumbnails_shrink_big_images(client: Any, tmp_path: Path) -> None:
    from stylegan_airflow.ui.files import make_thumbnail

    big = tmp_path / "big.png"
    Image.new("RGB", (1024, 512), (1, 2, 3)).save(big)
    with Image.open(io.BytesIO(make_thumbnail(big, 256))) as img:
        assert img.size == (256, 128) and img.format == "JPEG"


@pytest.mark.parametrize(("url", "status"), [
    pytest.param("/thumbs/100/lsun-cat-256:v1/reals.png", 400, id="size-not-offered"),
    pytest.param("/thumbs/big/lsun-cat-256:v1/reals.png", 400, id="size-not-a-number"),
    pytest.param("/thumbs/256/lsun-cat-256:v1/dataset.json", 400, id="not-an-image"),
])
def test_bad_thumbnail_requests_are_refused(client: Any, url: str, status: int) -> None:
    res = client.get(url)
    assert res.status_code == status and res.json()["detail"]


TRAVERSALS = [
    pytest.param("/files/lsun-cat-256:v1/..%2F..%2F..%2Fetc%2Fpasswd", id="file-dotdot"),
    pytest.param("/files/lsun-cat-256:v1/%2Fetc%2Fpasswd", id="file-absolute"),
    pytest.param("/files/lsun-cat-256:v1/sub/..%2F..%2Freals.png", id="file-inner-dotdot"),
    pytest.param("/files/lsun-cat-256:v1/.%2Freals.png", id="file-dot"),
    pytest.param("/files/lsun-cat-256:v1/a%5C..%5C..%5Cetc%5Cpasswd", id="file-backslash"),
    pytest.param("/thumbs/256/lsun-cat-256:v1/..%2F..%2Fetc%2Fpasswd", id="thumb-dotdot"),
    pytest.param("/files/..%2F..%2Fetc/passwd", id="ref-dotdot"),
    pytest.param("/versions/%2E%2E", id="version-dotdot"),
    pytest.param("/versions/lsun-cat-256:%2E%2E", id="tag-dotdot"),
    pytest.param("/versions/lsun-cat-256@..", id="id-dotdot"),
    pytest.param("/names/%2E%2E", id="name-dotdot"),
    pytest.param("/api/versions/%2E%2E", id="api-version-dotdot"),
    pytest.param("/compare?a=../../etc/passwd&b=lsun-cat-256:v1", id="compare-dotdot"),
    pytest.param("/images?run=/etc/passwd", id="images-absolute"),
    pytest.param("/graph/%2E%2E", id="graph-dotdot"),
    pytest.param("/runs/%2E%2E/x", id="run-dag-dotdot"),
]
# Starlette routes on the decoded path: an id holding '/' matches no route at all.
UNROUTABLE = [
    pytest.param("/graph/..%2F..%2Fetc%2Fpasswd", id="graph-dotdot"),
    pytest.param("/runs/..%2F..%2Fetc/passwd", id="run-dotdot"),
    pytest.param("/versions/..%2F..%2Fetc%2Fpasswd", id="version-slashes"),
    pytest.param("/names/..%2F..%2Fetc", id="name-slashes"),
]


@pytest.mark.parametrize("url", TRAVERSALS)
def test_path_traversal_is_refused_everywhere(client: Any, url: str) -> None:
    for headers in (HTML, {}):
        res = client.get(url, headers=headers)
        assert res.status_code == 400, (url, res.status_code)
        assert "root:" not in res.text
    assert "refused" in res.json()["detail"] or "bad" in res.json()["detail"] or \
        "invalid" in res.json()["detail"]


@pytest.mark.parametrize("url", UNROUTABLE)
def test_ids_with_slashes_match_no_route(client: Any, url: str) -> None:
    res = client.get(url)
    assert res.status_code == 404 and "root:" not in res.text


def test_files_are_looked_up_in_the_manifest_never_joined(client: Any,
                                                          filled: tuple[Path, Any]) -> None:
    """A file that sits in the store's directories but in no manifest is never served."""
    root = filled[0]
    res = client.get("/files/lsun-cat-256:v1/names/lsun-cat-256/index.json")
    assert res.status_code == 404 and (root / "names/lsun-cat-256/index.json").is_file()
