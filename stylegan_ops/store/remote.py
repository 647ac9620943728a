"""Read-only remote stores over HTTP(S): publish with ``store serve``, fetch with ``pull``.

A remote is just a store directory served as static files; ``names/<name>/index.json``
stands in for directory listings. Everything fetched is verified by hash before it is
stored, and local paths are derived from verified hashes, never from remote names.
"""

from __future__ import annotations

import functools
import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.store.local import Store, select
from stylegan_ops.store.model import Manifest, Ref, Version

TIMEOUT = 60.0


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:  # noqa: S310
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        raise StageError(f"HTTP {exc.code} for {url}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise StageError(f"cannot reach {url}: {exc}") from exc


def _json(url: str) -> Any:
    try:
        return json.loads(_get(url))
    except ValueError as exc:
        raise StageError(f"not JSON: {url}") from exc


def pull(store: Store, base_url: str, text: str) -> tuple[Version, bool]:
    """Copy one version (manifest and missing objects) from a remote store."""
    if urllib.parse.urlparse(base_url).scheme not in ("http", "https"):
        raise StageError(f"remote store must be an http(s) URL, got {base_url!r}")
    base = base_url.rstrip("/")
    ref = Ref.parse(text)
    index = _json(f"{base}/names/{ref.name}/index.json")
    stubs = [Version(ref.name, int(v["number"]), str(v["id"]), "") for v in index["versions"]]
    if not stubs:
        raise StageError(f"remote has no versions of {ref.name}")
    stub = select(ref, text, stubs, {str(k): int(n) for k, n in index["tags"].items()})
    record = Version.from_dict(_json(f"{base}/names/{ref.name}/versions/{stub.number:06d}.json"))
    if record.id != stub.id or record.name != ref.name:
        raise StageError(f"remote version record for {text!r} does not match its index")
    manifest = Manifest.from_bytes(_get(f"{base}/manifests/{record.id}.json"), record.id)
    for entry in manifest.entries:
        target = store.object_path(entry.sha256)
        if target.exists():
            continue
        tmp = store._tmp(".pull")
        h = hashlib.sha256()
        url = f"{base}/objects/sha256/{entry.sha256[:2]}/{entry.sha256[2:]}"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as resp, open(tmp, "wb") as f:  # noqa: S310
                while chunk := resp.read(1 << 22):
                    h.update(chunk)
                    f.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise StageError(f"cannot fetch {url}: {exc}") from exc
        if h.hexdigest() != entry.sha256:
            tmp.unlink(missing_ok=True)
            raise StageError(f"remote object for {entry.path} does not match its hash")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.chmod(0o444)
        tmp.replace(target)
    return store.adopt(record, manifest, {"pulled_from": base, "remote_ref": record.ref})


class _ReadOnlyHandler(SimpleHTTPRequestHandler):
    def list_directory(self, path: Any) -> None:
        self.send_error(403, "listing disabled")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(store: Store, host: str, port: int) -> ThreadingHTTPServer:
    """A static, read-only HTTP server over the store (GET and HEAD only)."""
    handler = functools.partial(_ReadOnlyHandler, directory=str(Path(store.root).resolve()))
    return ThreadingHTTPServer((host, port), handler)
