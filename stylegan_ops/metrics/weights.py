"""Detector weight files: where they live, how they are fetched and how far they are trusted.

Nothing is fetched implicitly. ``stylegan-ops fetch-weights NAME`` downloads the official
file (or installs one obtained elsewhere with ``--from``) into ``$STYLEGAN_CACHE/weights``
and checks its sha256 against a pin. A pin comes from this release's table or, where the
table has none, from the user (``--sha256``, read off a source they trust). A file
installed with ``--accept-unpinned`` is recorded as a *stand-in*: metrics computed with it
are never written under the standard metric name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import dump_json, read_json, write_atomic


@dataclass(frozen=True)
class WeightFile:
    """One detector file and its official source."""

    name: str  # registry key and fetch-weights argument
    filename: str  # the file kept in the cache
    url: str  # official download
    sha256: str | None  # pinned digest of ``filename``; None: this release knows no pin
    member: str | None = None  # the file to take out of a downloaded .tgz
    about: str = ""


# No pins ship yet: the upstream hosts publish no digests and this project had no network
# access to compute them from the official files. Add them here once verified.
WEIGHTS: dict[str, WeightFile] = {
    "inception": WeightFile(
        "inception", "classify_image_graph_def.pb",
        "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz",
        None, member="classify_image_graph_def.pb",
        about="Inception 2015-12-05 GraphDef (FID, KID, IS)"),
    "vgg16": WeightFile(
        "vgg16", "vgg16.pkl",
        "https://nvlabs-fi-cdn.nvidia.com/stylegan/networks/metrics/vgg16.pkl", None,
        about="NVIDIA's VGG16 features (precision/recall)"),
    "lpips": WeightFile(
        "lpips", "vgg16_zhang_perceptual.pkl",
        "https://nvlabs-fi-cdn.nvidia.com/stylegan/networks/metrics/vgg16_zhang_perceptual.pkl",
        None, about="NVIDIA's LPIPS-VGG16 (perceptual path length)"),
}

TRUSTED = ("release", "user")  # how a standard file was pinned; anything else is a stand-in


def cache_dir() -> Path:
    """``$STYLEGAN_CACHE`` or ``~/.cache/stylegan_ops``."""
    env = os.environ.get("STYLEGAN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "stylegan_ops"


def weight_file(name: str) -> WeightFile:
    if name not in WEIGHTS:
        raise StageError(f"unknown detector weights {name!r}; known: {', '.join(WEIGHTS)}")
    return WEIGHTS[name]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _records_path() -> Path:
    return cache_dir() / "weights" / "weights.json"


def _records() -> dict[str, Any]:
    path = _records_path()
    return dict(read_json(path)) if path.is_file() else {}


@dataclass(frozen=True)
class Located:
    """An installed weight file, verified."""

    name: str
    path: Path
    sha256: str
    trust: str  # release | user | unpinned

    @property
    def standard(self) -> bool:
        return self.trust in TRUSTED

    def label(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.path.name, "sha256": self.sha256,
                "standard": self.standard}


def locate(name: str) -> Located:
    """The installed file for ``name``, its digest checked; a clear error when absent."""
    wf = weight_file(name)
    path = cache_dir() / "weights" / wf.filename
    if not path.is_file():
        raise StageError(f"detector file {wf.filename} is missing from {path.parent}; "
                         f"get it with: stylegan-ops fetch-weights {name}")
    record = _records().get(name, {})
    digest = sha256_of(path)
    expected = wf.sha256 or record.get("sha256")
    if expected and digest != expected:
        raise StageError(f"{path}: sha256 {digest} does not match the expected {expected}; "
                         f"reinstall it with: stylegan-ops fetch-weights {name}")
    trust = "release" if wf.sha256 else str(record.get("trust", "unpinned"))
    return Located(name, path, digest, trust)


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: str
    sha256: str
    trust: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _take_member(archive: Path, member: str, dest: Path) -> None:
    """Stream one regular file out of a tarball (nothing else is extracted)."""
    try:
        with tarfile.open(archive) as tar:
            for info in tar:
                if info.isfile() and Path(info.name).name == member:
                    src = tar.extractfile(info)
                    assert src is not None
                    with dest.open("wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    return
    except tarfile.TarError as exc:
        raise StageError(f"{archive}: not a readable tar archive: {exc}") from exc
    raise StageError(f"{archive} holds no {member}")


def fetch(name: str, source: Path | None = None, sha256: str | None = None,
          accept_unpinned: bool = False, url: str | None = None) -> FetchResult:
    """Install ``name``'s file into the cache: download (or copy ``source``), check, rename."""
    wf = weight_file(name)
    if sha256 is not None:
        sha256 = sha256.lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise StageError(f"sha256 must be 64 hex digits, got {sha256!r}")
        if wf.sha256 and sha256 != wf.sha256:
            raise StageError(f"--sha256 {sha256} contradicts the pinned {wf.sha256} of "
                             f"{wf.filename}")
    pin = wf.sha256 or sha256
    if pin is None and not accept_unpinned:
        raise StageError(f"no pinned sha256 for {wf.filename} is known to this release; "
                         "pass --sha256 HEX from a source you trust, or --accept-unpinned "
                         "to install it as a stand-in")
    if source is not None and not source.is_file():
        raise StageError(f"no such file: {source}")
    dest_dir = cache_dir() / "weights"
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".fetch-") as tmp_name:
        tmp = Path(tmp_name)
        src = source if source is not None else _download(url or wf.url, dest_dir)
        staged = tmp / wf.filename
        if wf.member and tarfile.is_tarfile(src):
            _take_member(src, wf.member, staged)
        else:
            shutil.copyfile(src, staged)
        digest = sha256_of(staged)
        if pin and digest != pin:
            raise StageError(f"{src}: sha256 {digest} does not match the expected {pin}; "
                             "nothing installed")
        staged.replace(dest_dir / wf.filename)
    if source is None:
        src.unlink(missing_ok=True)  # the archive is kept only until its member is out
    trust = "release" if wf.sha256 else ("user" if sha256 else "unpinned")
    records = _records()
    records[name] = {"sha256": digest, "trust": trust,
                     "source": str(source) if source else (url or wf.url)}
    write_atomic(_records_path(), dump_json(records))
    return FetchResult(name, str(dest_dir / wf.filename), digest, trust,
                       records[name]["source"])


def _download(url: str, dest_dir: Path) -> Path:
    """Resumable download into the cache (a rerun continues a partial file)."""
    from stylegan_ops.data.download import DownloadConfig
    from stylegan_ops.data.download import run as download

    out = dest_dir / ".downloads" / url.rstrip("/").rsplit("/", 1)[-1]
    download(DownloadConfig(url, out))
    return out
