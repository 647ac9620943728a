"""Read-only remote stores over HTTP(S): publish with ``store serve``, fetch with ``pull``.

A remote is just a store directory served as static files; ``names/<name>/index.json``
stands in for directory listings. The remote is hostile until checked: every document is
read with a size cap and parsed defensively, the manifest must match its id, each object is
read no further than its manifest size and must match its hash before it is stored, and
local paths are derived from verified hashes, never from remote names.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.fetch import (
    Budget,
    Retry,
    check_room,
    check_url,
    iter_body,
    open_url,
    read_capped,
    with_retries,
    write_error,
)
from stylegan_ops.store.local import Store, select
from stylegan_ops.store.model import SHA_RE, Entry, Manifest, Ref, Version

RECORD_LIMIT = 16 << 20  # an index or version record; real ones are a few KiB
MANIFEST_LIMIT = 256 << 20  # ~2 million entries; parsed in memory, so bounded
PUBLISHED = ("objects/", "manifests/", "names/")  # what serve publishes; not tmp/, state/


def default_budget() -> Budget:
    return Budget(retries=8, timeout=60.0, backoff=1.0, deadline=None)


def _json(budget: Budget, url: str, limit: int) -> Any:
    try:
        return json.loads(read_capped(budget, url, limit))
    except (ValueError, RecursionError) as exc:
        raise StageError(f"not JSON: {url}") from exc


def _index(data: Any, name: str, url: str) -> tuple[list[Version], dict[str, int]]:
    """The version stubs and tags of a remote ``index.json``, checked for shape."""
    try:
        if not isinstance(data, dict) or not isinstance(data["versions"], list):
            raise TypeError("not an object with a versions list")
        stubs = [Version(name, int(v["number"]), str(v["id"]), "") for v in data["versions"]]
        tags = {str(k): int(n) for k, n in dict(data.get("tags") or {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StageError(f"malformed remote index {url}: {exc}") from exc
    for stub in stubs:
        if stub.number < 1 or not SHA_RE.match(stub.id):
            raise StageError(f"malformed remote index {url}: bad version {stub.number} "
                             f"{stub.id!r}")
    return stubs, tags


def pull(store: Store, base_url: str, text: str,
         budget: Budget | None = None) -> tuple[Version, bool]:
    """Copy one version (manifest and missing objects) from a remote store."""
    check_url("remote store", base_url)
    budget = budget or default_budget()
    base = base_url.rstrip("/")
    ref = Ref.parse(text)
    index_url = f"{base}/names/{ref.name}/index.json"
    stubs, tags = _index(_json(budget, index_url, RECORD_LIMIT), ref.name, index_url)
    if not stubs:
        raise StageError(f"remote has no versions of {ref.name}")
    stub = select(ref, text, stubs, tags)
    record_url = f"{base}/names/{ref.name}/versions/{stub.number:06d}.json"
    data = _json(budget, record_url, RECORD_LIMIT)
    if not isinstance(data, dict):
        raise StageError(f"corrupt version record: {record_url} is not a JSON object")
    record = Version.from_dict(data)
    if (record.id, record.name, record.number) != (stub.id, ref.name, stub.number):
        raise StageError(f"remote version record for {text!r} does not match its index")
    manifest_url = f"{base}/manifests/{record.id}.json"
    try:
        manifest = Manifest.from_bytes(read_capped(budget, manifest_url, MANIFEST_LIMIT),
                                       record.id)
    except RecursionError as exc:  # json's answer to "[[[[…" a million deep
        raise StageError(f"corrupt manifest: {manifest_url} nests too deeply") from exc
    if (record.file_count, record.total_size) != (len(manifest.entries), manifest.total_size):
        raise StageError(f"remote version record for {text!r} does not match its manifest "
                         f"({record.file_count} files, {record.total_size} bytes claimed)")
    missing = _missing(store, manifest)
    check_room(store.root, sum(e.size for e in missing), f"pulling {record.ref}")
    # The store's writer lock from the first object to the version: until adopt links it,
    # nothing references what we fetched, and gc (exclusive) would delete it.
    with store.writing():
        for entry in missing:
            _fetch_object(store, budget, base, entry)
        return store.adopt(record, manifest, {"pulled_from": base, "remote_ref": record.ref},
                           fresh=frozenset(e.sha256 for e in missing))


def _missing(store: Store, manifest: Manifest) -> list[Entry]:
    """One entry per object the store lacks; an object listed with two sizes is refused."""
    first: dict[str, Entry] = {}
    for e in manifest.entries:
        if first.setdefault(e.sha256, e).size != e.size:
            raise StageError(f"remote manifest lists object {e.sha256} with two sizes")
    return [e for e in first.values() if not store.object_path(e.sha256).exists()]


def _fetch_object(store: Store, budget: Budget, base: str, entry: Entry) -> None:
    """Fetch one object into a temp file, capped at its manifest size, check its hash,
    then rename it into place. A short read is retried; too long or wrong is refused."""
    sha = entry.sha256
    url = f"{base}/objects/sha256/{sha[:2]}/{sha[2:]}"
    target = store.object_path(sha)
    best = 0  # the most bytes any attempt got: only beating it counts as progress

    def attempt() -> None:
        nonlocal best
        tmp = store.new_tmp(".pull")
        try:
            got = _receive(budget, url, entry, tmp)
            if got < entry.size:
                progressed, best = got > best, max(best, got)
                raise Retry(f"connection closed after {got} of {entry.size} bytes of {url}",
                            progressed)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.chmod(0o444)
            tmp.replace(target)
        except OSError as exc:
            raise write_error(target, exc) from exc
        finally:
            tmp.unlink(missing_ok=True)

    with_retries(budget, url, attempt)


def _receive(budget: Budget, url: str, entry: Entry, tmp: Path) -> int:
    """Write the object's bytes to ``tmp``; the count received when the body ended early."""
    h = hashlib.sha256()
    size = 0
    with open_url(url, budget.read_timeout()) as resp:
        if resp.length is not None and resp.length != entry.size:
            raise StageError(f"remote object for {entry.path} does not match its hash: the "
                             f"server sends {resp.length} bytes, its manifest says "
                             f"{entry.size}")
        with open(tmp, "wb") as f:
            for chunk in iter_body(resp, entry.size + 1, budget, url):
                size += len(chunk)
                if size > entry.size:
                    raise StageError(f"remote object for {entry.path} is bigger than its "
                                     f"manifest size {entry.size}; stopped")
                f.write(chunk)  # OSError: the caller names the object it was for
                h.update(chunk)
            f.flush()
            os.fsync(f.fileno())
    if size == entry.size and h.hexdigest() != entry.sha256:
        raise StageError(f"remote object for {entry.path} does not match its hash")
    return size


class _ReadOnlyHandler(SimpleHTTPRequestHandler):
    """Static files of the published layout only: no listings, no tmp/, state/ or lock."""

    def send_head(self) -> Any:
        path = self.path.split("?", 1)[0].split("#", 1)[0].lstrip("/")
        if not path.startswith(PUBLISHED) or ".." in path.split("/"):
            self.send_error(404, "not published")
            return None
        return super().send_head()

    def list_directory(self, path: Any) -> None:
        self.send_error(403, "listing disabled")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(store: Store, host: str, port: int) -> ThreadingHTTPServer:
    """A static, read-only HTTP server over the store (GET and HEAD only)."""
    handler = functools.partial(_ReadOnlyHandler, directory=str(Path(store.root).resolve()))
    return ThreadingHTTPServer((host, port), handler)
