"""Detector weight files: where they live, how they are fetched and how far they are trusted.

Nothing is fetched implicitly. ``stylegan-ops fetch-weights NAME`` downloads the official
file (or installs one obtained elsewhere with ``--from`` or ``--url``) into
``$STYLEGAN_CACHE/weights`` and records its sha256 in ``weights.json`` there; every use
rehashes the file against that record. A file is standard when

- ``release``: it matches this release's pin (checked instead of anything below);
- ``user``: it matches the ``--sha256`` the user read off a source they trust;
- ``official``: it came from the official URL (or its ``$STYLEGAN_WEIGHTS_MIRROR`` form):
  trusted on first use, as NVIDIA's tools and the common FID packages trust that URL. Its
  digest is recorded, and a later official download that differs is refused;
- ``recorded``: it came from elsewhere but matches a digest recorded earlier as standard.

Any other file is installed only with ``--accept-unpinned``, as a *stand-in*: metrics
computed with it are never written under the standard metric name.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tarfile
import tempfile
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import dump_json, read_json, sha256_file, write_atomic

MIRROR_ENV = "STYLEGAN_WEIGHTS_MIRROR"  # base URL replacing scheme and host of official URLs


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
# access to compute them from the official files, so the official URL is trusted on first
# use. Add pins here once verified; a pin then replaces trust on first use.
WEIGHTS: dict[str, WeightFile] = {
    "inception": WeightFile(
        "inception", "classify_image_graph_def.pb",
        "https://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz",
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

TRUSTED = ("release", "user", "official", "recorded")  # standard; anything else: stand-in


def cache_dir() -> Path:
    """``$STYLEGAN_CACHE`` or ``~/.cache/stylegan_ops``."""
    env = os.environ.get("STYLEGAN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "stylegan_ops"


def weight_file(name: str) -> WeightFile:
    if name not in WEIGHTS:
        raise StageError(f"unknown detector weights {name!r}; known: {', '.join(WEIGHTS)}")
    return WEIGHTS[name]


def official_url(wf: WeightFile) -> str:
    """``wf.url``, or the same path under ``$STYLEGAN_WEIGHTS_MIRROR`` when that is set."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return wf.url
    parsed = urllib.parse.urlparse(mirror)
    if (parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query
            or parsed.fragment):
        raise StageError(f"{MIRROR_ENV} must be an http(s) base URL such as "
                         f"https://mirror.example.org/prefix, got {mirror!r}")
    return mirror.rstrip("/") + urllib.parse.urlparse(wf.url).path


def sha256_of(path: Path) -> str:
    return sha256_file(path)


def records_path() -> Path:
    """``weights.json``: per name, the installed file's digest, trust and source, and the
    digest the official URL delivered first (``official``)."""
    return cache_dir() / "weights" / "weights.json"


def _records() -> dict[str, Any]:
    path = records_path()
    return dict(read_json(path)) if path.is_file() else {}


@dataclass(frozen=True)
class Located:
    """An installed weight file, verified."""

    name: str
    path: Path
    sha256: str
    trust: str  # one of TRUSTED, or stand-in (unpinned in older records)

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
        raise StageError(f"{path}: sha256 {digest} does not match the expected {expected} "
                         f"({'pinned' if wf.sha256 else 'recorded in ' + str(records_path())})"
                         f"; reinstall it with: stylegan-ops fetch-weights {name}")
    # A file nobody recorded (copied in by hand) is a stand-in until fetch-weights vets it.
    trust = "release" if wf.sha256 else str(record.get("trust", "stand-in"))
    return Located(name, path, digest, trust)


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: str
    sha256: str
    trust: str
    source: str
    first_use: bool  # the official URL's digest was recorded now, to be checked from now on

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


def _check_hex(wf: WeightFile, sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    sha256 = sha256.lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise StageError(f"sha256 must be 64 hex digits, got {sha256!r}")
    if wf.sha256 and sha256 != wf.sha256:
        raise StageError(f"--sha256 {sha256} contradicts the pinned {wf.sha256} of "
                         f"{wf.filename}")
    return sha256


def fetch(name: str, source: Path | None = None, sha256: str | None = None,
          accept_unpinned: bool = False, url: str | None = None) -> FetchResult:
    """Install ``name``'s file into the cache: download (or copy ``source``), judge, rename.

    A ``url`` counts as official only when it is the official URL or its mirror form; any
    other is trusted like a ``source`` file."""
    wf = weight_file(name)
    sha256 = _check_hex(wf, sha256)
    if source is not None and url is not None:
        raise StageError("give --from or --url, not both")
    if source is not None and not source.is_file():
        raise StageError(f"no such file: {source}")
    official = official_url(wf)
    where = str(source) if source is not None else (url or official)
    is_official = source is None and where in (wf.url, official)
    record = _records().get(name, {})
    dest_dir = cache_dir() / "weights"
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".fetch-") as tmp_name:
        staged = Path(tmp_name) / wf.filename
        _stage(wf, source, where, is_official, staged, dest_dir)
        digest = sha256_of(staged)
        trust = _judge(wf, record, digest, sha256, where, is_official, accept_unpinned)
        staged.replace(dest_dir / wf.filename)
    seen = record.get("official")
    first_use = trust == "official" and not seen
    if is_official and (not seen or seen.get("sha256") != digest):
        # first use, or a pin (release or --sha256) the official file now matches
        seen = {"sha256": digest, "url": where,
                "recorded": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    entry: dict[str, Any] = {"sha256": digest, "trust": trust, "source": where}
    if seen:
        entry["official"] = seen
    records = _records()
    records[name] = entry
    write_atomic(records_path(), dump_json(records))
    return FetchResult(name, str(dest_dir / wf.filename), digest, trust, where, first_use)


def _stage(wf: WeightFile, source: Path | None, url: str, is_official: bool, staged: Path,
           dest_dir: Path) -> None:
    """Put the candidate file at ``staged``: copied, downloaded, or taken out of a tarball."""
    src = source if source is not None else _download(url, dest_dir)
    try:
        if wf.member and tarfile.is_tarfile(src):
            _take_member(src, wf.member, staged)
        elif wf.member and is_official:
            raise StageError(f"{url} delivered no tar archive holding {wf.member}; "
                             "nothing installed")
        else:
            shutil.copyfile(src, staged)
    finally:
        if source is None:  # a download is kept only until judged, so a refusal refetches
            src.unlink(missing_ok=True)


def _judge(wf: WeightFile, record: dict[str, Any], digest: str, sha256: str | None,
           where: str, is_official: bool, accept_unpinned: bool) -> str:
    """How far the staged file is trusted; a StageError where it must not be installed."""
    expected = wf.sha256 or sha256
    if expected:  # a pin replaces every other rule
        if digest != expected:
            raise StageError(f"{where}: sha256 {digest} does not match the expected "
                             f"{expected}; nothing installed")
        return "release" if wf.sha256 else "user"
    first = record.get("official", {}).get("sha256")
    if is_official:
        if first and digest != first:
            raise StageError(f"{where} now delivers a {wf.filename} with sha256 {digest}, "
                             f"not the {first} recorded on first use in {records_path()}; "
                             "refused, the cached file and record are unchanged (to accept "
                             f"the new file, verify it and pass --sha256 {digest})")
        return "official"
    known = {first} | ({record.get("sha256")} if record.get("trust") in TRUSTED else set())
    if digest in known:
        return "recorded"
    if accept_unpinned:
        return "stand-in"
    raise StageError(f"{where}: sha256 {digest} of {wf.filename} matches no pinned or "
                     "recorded digest; pass --sha256 HEX from a source you trust, fetch it "
                     "from the official URL, or pass --accept-unpinned to install it as a "
                     "stand-in")


def _download(url: str, dest_dir: Path) -> Path:
    """Resumable download into the cache (a rerun continues a partial file)."""
    from stylegan_ops.data.download import DownloadConfig
    from stylegan_ops.data.download import run as download

    out = dest_dir / ".downloads" / url.rstrip("/").rsplit("/", 1)[-1]
    download(DownloadConfig(url, out))
    return out
