"""The fault suite's one rule set: every case is a ``stylegan-ops`` command run as a real
process in a prepared directory, and every case must end the same way.

- exit 0 with correct output (the case's ``check``), or exit 2 with exactly one
  ``stylegan-ops: error:`` line naming the problem (``message``);
- no traceback, no signal, no NaN/Infinity in the JSON line;
- nothing half-written left visible (no temp files outside the places allowed);
- every store version that existed before the command is still intact (rehashed).

A case is one line in a table: ``Case(id, argv, setup=…, expect="usage", message=…)``.
``{d}`` in an argument is the case's directory. ``STYLEGAN_STORE`` is ``{d}/store``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEMP_MARKERS = (".tmp", "tmp-", ".tmp-", ".partial", ".incoming")  # names a writer must clean


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    setup: Callable[[Path], None] | None = None  # prepares {d} (files, a store, a server…)
    expect: str = "usage"  # "ok": exit 0; "usage": exit 2 with one line
    message: str | None = None  # a substring of the error line (or of stdout when ok)
    check: Callable[[Path, subprocess.CompletedProcess[str]], None] | None = None
    env: dict[str, str] = field(default_factory=dict)  # e.g. a failpoint
    kill_ok: bool = False  # a failpoint SIGKILLs the process: -9 is then the expected end
    allow_temp: tuple[str, ...] = ()  # paths under {d} where leftovers are allowed
    timeout: float = 120.0
    fsize_limit: int | None = None  # RLIMIT_FSIZE of the command: writes past it get EFBIG,
    #                                 a full disk that needs no mount (Python ignores SIGXFSZ)
    planted: tuple[str, ...] = ()  # damage the setup planted on purpose, as a version ref or
    #   a store-relative record path: `store verify` afterwards may report these (and only
    #   these), and such refs are left out of the before/after comparison
    mem_limit: int | None = None  # RLIMIT_AS of the command in bytes: memory that must stay
    #                               bounded; an allocation past it is a MemoryError (a bug)


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 120.0, fsize_limit: int | None = None,
        mem_limit: int | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "STYLEGAN_STORE": str(cwd / "store"), "TF_CPP_MIN_LOG_LEVEL": "2",
            **(env or {})}

    def limit_file_size() -> None:
        import resource

        if fsize_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))
        if mem_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))

    return subprocess.run([sys.executable, "-m", "stylegan_ops.cli", *args], cwd=cwd,
                          env=full, capture_output=True, text=True, timeout=timeout,
                          check=False,
                          preexec_fn=limit_file_size if (fsize_limit, mem_limit) != (None, None)
                          else None)


def _reject_constant(name: str) -> float:
    raise AssertionError(f"output JSON contains {name}")


def _open_store(d: Path) -> Any:
    from stylegan_ops.store.local import Store

    return Store(d / "store", create=False)


def _store_state(d: Path) -> dict[str, str]:
    """Every version id in {d}/store by ref (read in this process: the command under test
    has ended, and a process per listing made the suite minutes slower)."""
    if not (d / "store").is_dir():
        return {}
    store = _open_store(d)
    return {v.ref: v.id for name in store.names() for v in store.versions(name)}


def _leftovers(d: Path, allowed: tuple[str, ...]) -> list[str]:
    found = []
    for path in d.rglob("*"):
        rel = path.relative_to(d).as_posix()
        if any(rel.startswith(a) for a in allowed):
            continue
        if any(m in path.name for m in TEMP_MARKERS):
            found.append(rel)
    return found


def check_case(case: Case, d: Path) -> subprocess.CompletedProcess[str]:
    """Run ``case`` in ``d`` and assert the suite's properties; returns the process."""
    if case.setup is not None:
        case.setup(d)
    before = _store_state(d)
    argv = [a.replace("{d}", str(d)) for a in case.argv]
    res = run(argv, d, case.env, case.timeout, case.fsize_limit, case.mem_limit)
    where = f"{case.id}: rc={res.returncode}\nstdout: {res.stdout[-1500:]}\n" \
            f"stderr: {res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr, where
    if case.kill_ok and res.returncode == -signal.SIGKILL:
        pass
    else:
        assert res.returncode >= 0, f"killed by a signal: {where}"
        want = 0 if case.expect == "ok" else 2
        assert res.returncode == want, where
        errors = [line for line in res.stderr.splitlines()
                  if line.startswith("stylegan-ops: error:")]
        if want == 2:
            assert len(errors) == 1, where
            if case.message:
                assert case.message in errors[0], where
        else:
            assert not errors, where
            if res.stdout.strip():
                json.loads(res.stdout.strip().splitlines()[-1], parse_constant=_reject_constant)
            if case.message:
                assert case.message in res.stdout, where
    if case.check is not None:
        case.check(d, res)
    assert not _leftovers(d, case.allow_temp), f"{case.id}: left {_leftovers(d, case.allow_temp)}"
    after = _store_state(d)
    for ref, vid in before.items():
        if ref not in case.planted:
            assert after.get(ref) == vid, f"{case.id}: version {ref} changed or vanished"
    if before:
        _, problems = _open_store(d).verify()
        stray = [p.to_dict() for p in problems
                 if p.path not in case.planted and p.version not in case.planted]
        assert not stray, f"{case.id}: store verify after: {stray}"
    return res
