"""HTTP(S) GETs that a hostile server cannot turn into a hang, a full disk or a file:// read.

Shared by ``download`` and ``store pull``: one URL check, one redirect policy (http(s) only,
at most MAX_REDIRECTS hops), one retry policy (a bounded number of failures in a row with
exponential backoff, and an optional total deadline) and reads that never go past a cap.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import Any, TypeVar

from stylegan_ops.errors import StageError

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # most bytes asked of one read; large reads keep Python out of the hot path
USER_AGENT = "stylegan-ops/1"
MAX_REDIRECTS = 5  # curl follows 50 with -L; a file mirror needs one or two
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # EFBIG: a file-size rlimit or quota
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # whitespace and control characters
T = TypeVar("T")


def check_url(name: str, url: str) -> str:
    """An absolute http(s) URL with a host and a numeric port, or StageError naming it."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise StageError(f"{name} is not a valid URL: {url!r} ({exc})") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or _UNSAFE.search(url):
        raise StageError(f"{name} must be an http(s) URL with a host, got {url!r}")
    return url


class Retry(Exception):  # noqa: N818 - internal signal, not an error for users
    """A recoverable failure: back off and try again."""

    def __init__(self, message: str, progressed: bool = False) -> None:
        super().__init__(message)
        self.progressed = progressed  # the attempt kept more than any before it


@dataclass
class Budget:
    """How long one operation may keep trying: failures in a row, per-read timeout, total
    deadline. Created when the operation starts; the deadline counts from then."""

    retries: int = 8  # failed attempts in a row (without progress) before giving up
    timeout: float = 30.0  # seconds a read may wait for data before the attempt fails
    backoff: float = 1.0  # first retry delay in seconds; doubles each time, capped at 60
    deadline: float | None = None  # seconds for the whole operation (None: no limit)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise StageError(f"retries must be >= 0, got {self.retries}")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise StageError(f"timeout must be a finite number > 0, got {self.timeout}")
        if not (math.isfinite(self.backoff) and self.backoff >= 0):
            raise StageError(f"backoff must be a finite number >= 0, got {self.backoff}")
        if self.deadline is not None and not (math.isfinite(self.deadline)
                                              and self.deadline > 0):
            raise StageError(f"deadline must be a finite number > 0, got {self.deadline}")

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - (time.monotonic() - self.started)

    def read_timeout(self) -> float:
        """The socket timeout for a new connection: a stalled read never outlives the
        deadline by more than this."""
        left = self.remaining()
        return self.timeout if left is None else max(0.001, min(self.timeout, left))

    def check(self, what: str) -> None:
        left = self.remaining()
        if left is not None and left <= 0:
            raise StageError(f"deadline of {self.deadline:g}s passed while fetching {what}")

    def sleep(self, seconds: float, what: str) -> None:
        left = self.remaining()
        time.sleep(seconds if left is None else max(0.0, min(seconds, left)))
        self.check(what)


def with_retries(budget: Budget, what: str, attempt: Callable[[], T]) -> T:
    """Call ``attempt()`` until it succeeds, backing off on Retry.

    Only an attempt that made progress (its Retry says so) starts the count over, so a
    server that keeps sending bytes the caller has to throw away still runs out of retries.
    """
    failures = 0
    while True:
        budget.check(what)
        try:
            return attempt()
        except Retry as exc:
            failures = 1 if exc.progressed else failures + 1
            if failures > budget.retries:
                raise StageError(f"giving up on {what} after {failures} failed attempts in "
                                 f"a row: {exc}") from exc
            delay = min(60.0, budget.backoff * 2 ** (failures - 1))
            log.warning("%s; retrying in %.1fs (%d/%d)", exc, delay, failures, budget.retries)
            budget.sleep(delay, what)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s), and at most MAX_REDIRECTS of them.

    urllib alone would follow one to ftp:// and report a loop as an HTTP error.
    """

    max_repeats = max_redirections = MAX_REDIRECTS + 1  # ours trigger first

    def http_error_302(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                       headers: Any) -> Any:
        location = headers.get("Location") or headers.get("URI")
        if location is not None:
            target = urllib.parse.urljoin(req.full_url, location)
            if urllib.parse.urlsplit(target).scheme not in ("http", "https"):
                fp.close()
                raise StageError(f"{req.full_url} redirects to {target!r}: only http(s) "
                                 "redirects are followed")
            if getattr(req, "hops", 0) >= MAX_REDIRECTS:
                fp.close()
                raise StageError(f"{req.full_url}: more than {MAX_REDIRECTS} redirects "
                                 f"(last to {target!r})")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.hops = getattr(req, "hops", 0) + 1  # type: ignore[attr-defined]
        return new


_OPENER = urllib.request.build_opener(_Redirects)


def open_url(url: str, timeout: float, headers: dict[str, str] | None = None) -> HTTPResponse:
    """GET ``url``; 5xx/408/429 and connection failures raise Retry, a 416 to a Range
    request raises HTTPError (the caller decides), any other error status is a StageError
    naming the URL."""
    req = urllib.request.Request(url, headers={  # noqa: S310 - scheme checked by check_url
        "User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})})
    try:
        resp = _OPENER.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500 or exc.code in (408, 429):
            raise Retry(f"HTTP {exc.code} from {url}") from exc
        if exc.code == 416 and headers and "Range" in headers:
            raise
        raise StageError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc or type(exc).__name__
        raise Retry(f"cannot connect to {url}: {reason}") from exc
    except ValueError as exc:  # http.client.InvalidURL and friends
        raise StageError(f"malformed URL {url!r}: {exc}") from exc
    assert isinstance(resp, HTTPResponse)
    return resp


def iter_body(resp: HTTPResponse, cap: int | None, budget: Budget, what: str) -> Iterator[bytes]:
    """The body in chunks as they arrive, never more than ``cap`` bytes in all.

    ``read1`` returns what one socket read brought, so a server trickling a byte at a time
    cannot keep us inside one call past the deadline. A lost connection raises Retry; the
    end of the body (or of a body cut short) simply ends the iteration.
    """
    got = 0
    while cap is None or got < cap:
        budget.check(what)
        want = CHUNK if cap is None else min(CHUNK, cap - got)
        try:
            chunk = resp.read1(want)
        except (TimeoutError, OSError, HTTPException) as exc:
            raise Retry(f"connection to {what} lost after {got} bytes of the response: "
                        f"{exc or type(exc).__name__}") from exc
        if not chunk:
            return
        got += len(chunk)
        yield chunk


def read_capped(budget: Budget, url: str, limit: int) -> bytes:
    """A small document (an md5 file, a JSON record), retried, refused past ``limit``."""
    def attempt() -> bytes:
        with open_url(url, budget.read_timeout()) as resp:
            if resp.length is not None and resp.length > limit:
                raise StageError(f"{url} is {resp.length} bytes, more than the {limit} "
                                 "expected")
            data = bytearray()
            for chunk in iter_body(resp, limit + 1, budget, url):
                data += chunk
            if len(data) > limit:
                raise StageError(f"{url} is larger than the {limit} bytes expected")
            if resp.length:  # http.client counts down what the header promised
                raise Retry(f"connection to {url} closed after {len(data)} bytes")
            return bytes(data)

    return with_retries(budget, url, attempt)


def check_room(directory: Path, needed: int, what: str) -> None:
    """Refuse before writing ``needed`` bytes that cannot fit in ``directory``."""
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise StageError(f"{what} needs {needed} more bytes but {directory} has only {free} "
                         "free")


def write_error(path: Path, exc: OSError) -> StageError:
    """A write that failed, as a one-line error naming the file."""
    if exc.errno in DISK_FULL:
        return StageError(f"disk full writing {path}: {exc.strerror}")
    return StageError(f"cannot write {path}: {exc.strerror or exc}")
