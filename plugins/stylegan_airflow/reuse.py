"""Stage results reused by lineage: what a stage task checks before it runs.

A ``StageOperator`` given a ``Reuse`` computes its cache key (``stylegan_ops.store.reuse``)
from its rendered command, its input versions and the code its runner would run. When a
version of ``Reuse.name`` carries that key, the task checks that version out where its
output would have gone and returns the stage result recorded with it: no stage process
starts. The commit task after it then records the reuse and returns that version. Every
decision is one log line: the key and the version reused, or why the stage runs.

Per run, the param ``cache`` (default true) turns reuse off, and ``recompute`` (a list of
stage kinds) turns it off for some kinds only; the key is still recorded then.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stylegan_airflow.paths import run_dir
from stylegan_airflow.runners import store_path
from stylegan_ops.training import snapshot_name

KINDS = ("download", "sample", "unzip", "extract", "import", "train", "evaluate", "generate",
         "project")
OUT_FLAG = "--out"
REUSE_XCOM = "reuse"  # set when the task reused a version: {key, version, made_by, out}
CACHE_XCOM = "cache"  # set when it ran: the key record the commit puts in the lineage
CONTINUED_XCOM = "continued_from"


@dataclass(frozen=True)
class Reuse:
    """How a stage task finds an earlier result. String fields may be templates.

    :param name: the version name the task's output is committed as.
    :param kind: the stage kind, one of ``KINDS`` (the ``recompute`` param names kinds).
    :param inputs: task ids whose XCom is a version the stage reads: their ids are keyed.
    :param unkeyed: flags whose values stay out of the key besides ``--out``: paths of
        inputs that ``inputs`` or ``files`` identify by content, or that do not shape the
        output (``--shard``: shards merge to the same set).
    :param files: paths of input files keyed by their content's sha256, not their path.
    :param out: where the committed directory lies (default: the ``--out`` value).
    :param code: whether the code's identity is keyed (not for a checksummed download).
    :param needs: flags one of which must be given for a result to be reusable (a download
        without a checksum cannot tell that the URL still serves the same bytes).
    :param continues: a training flag whose value may grow: a run with a larger value
        continues from the longest earlier run with everything else equal.
    :param follows: the task heading this task's chain (it holds the key); when it reused,
        this task has nothing to do.
    """

    name: str
    kind: str
    inputs: tuple[str, ...] = ()
    unkeyed: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    out: str | None = None
    code: bool = True
    needs: tuple[str, ...] = ()
    continues: str | None = None
    follows: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"reuse kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for what in ("inputs", "unkeyed", "files", "needs"):
            if not isinstance(getattr(self, what), tuple):
                raise ValueError(f"reuse {what} must be a tuple, got {getattr(self, what)!r}")


def _flag_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) \
        else None


def first(value: Any) -> Any:
    """An XCom value, or the first set one of a mapped task's values."""
    if isinstance(value, dict | str) or value is None:  # a string is one value, not many
        return value
    try:
        return next((v for v in value if v), None)
    except TypeError:
        return value


def input_versions(ti: Any, task_ids: tuple[str, ...]) -> list[str]:
    """``name@id`` of the versions the given tasks returned (skipped ones: none)."""
    out = []
    for task_id in task_ids:
        value = first(ti.xcom_pull(task_ids=task_id))
        if isinstance(value, dict) and "id" in value:
            out.append(f"{value.get('name', task_id)}@{value['id']}")
    return out


class Decision:
    """What a stage task found before running: a reuse, or the key it will run under."""

    def __init__(self, spec: Reuse, stage: str, argv: list[str], context: Any, runner: Any,
                 log: logging.Logger, render: Any) -> None:
        self.spec, self.stage, self.argv, self.context, self.log = (spec, stage, argv,
                                                                    context, log)
        self.ti = context["ti"]
        self.root = run_dir(self.ti.dag_id, self.ti.run_id)
        self.name = str(render(spec.name))
        self.out = str(render(spec.out)) if spec.out else _flag_value(argv, OUT_FLAG)
        self.files = [str(f) for f in (render(list(spec.files)) or []) if f]
        self.runner = runner
        self.key: Any = None

    # --- the key --------------------------------------------------------------------

    def _key_args(self) -> tuple[str, ...]:
        from stylegan_ops.fsutil import sha256_file

        digests = {}
        for path in self.files:
            p = Path(path)
            if not p.is_file():
                raise LookupError(f"input file {path} is missing")
            digests[path] = f"sha256:{sha256_file(p)}"
        drop = {OUT_FLAG, *self.spec.unkeyed}
        out: list[str] = []
        i = 0
        args = self.argv[1 + len(self.stage.split()):]  # after the entry point and stage
        while i < len(args):
            arg = args[i]
            if arg in drop:
                i += 2
                continue
            if arg in digests:
                out.append(digests[arg])
            elif arg == self.root or arg.startswith(self.root + "/"):
                out.append("<run>" + arg[len(self.root):])
            else:
                out.append(arg)
            i += 1
        return tuple(out)

    def compute_key(self) -> Any:
        from stylegan_ops.store.reuse import CacheKey

        code = self.runner.code_identity(self.context, self.log) if self.spec.code else None
        self.key = CacheKey(self.stage, self._key_args(), tuple(input_versions(
            self.ti, self.spec.inputs)), code)
        return self.key

    # --- the decision ---------------------------------------------------------------

    def forced(self) -> str | None:
        """Why this run recomputes whatever the store holds, or None."""
        params = dict(self.context.get("params") or {})
        if params.get("cache", True) is False:
            return "reuse is off for this run (param cache: false)"
        if self.spec.kind in (params.get("recompute") or []):
            return f"this run recomputes {self.spec.kind} stages (param recompute)"
        return None

    def reuse(self, store: Any) -> dict[str, Any] | None:
        """Reuse an earlier version if one carries the key: check it out and return the
        stage result recorded with it; None when the stage has to run (said why)."""
        from stylegan_ops.errors import StageError
        from stylegan_ops.store.reuse import closest, find, relocate

        spec = self.spec
        if spec.needs and not any(flag in self.argv for flag in spec.needs):
            self.log.info("not reusable: no %s given to prove the source still serves the "
                          "same bytes; running %s", " or ".join(spec.needs), spec.kind)
            return None
        try:
            key = self.compute_key()
        except LookupError as exc:
            self.log.info("not reusable: %s; running %s", exc, spec.kind)
            return None
        self.ti.xcom_push(key=CACHE_XCOM, value={
            **key.record(spec.continues), "out": self.out})
        why = self.forced()
        if why:
            self.log.info("recomputing %s: %s (cache key %s)", spec.kind, why, key.key[:16])
            return None
        found = find(store, self.name, key.key)
        if found is None:
            near = closest(store, self.name, key)
            if near is None:
                self.log.info("computing %s: no earlier %s from this stage (cache key %s)",
                              spec.kind, self.name, key.key[:16])
            else:
                self.log.info("computing %s: no version with cache key %s; the closest, "
                              "%s made by run %s, differs in %s", spec.kind, key.key[:16],
                              near[0].ref, near[0].lineage.run_id, "; ".join(near[1]))
            return None
        version, _ = found
        stage_meta = version.meta.get("stage") or {}
        if not isinstance(stage_meta, dict) or "result" not in stage_meta or not self.out:
            self.log.info("computing %s: %s has cache key %s but no recorded stage result",
                          spec.kind, version.ref, key.key[:16])
            return None
        try:
            store.checkout(f"{version.name}@{version.id}", Path(self.out), replace=True)
        except StageError as exc:
            self.log.warning("computing %s: %s has cache key %s but cannot be checked out "
                             "(%s)", spec.kind, version.ref, key.key[:16], exc)
            return None
        made_by = {"dag_id": version.lineage.dag_id, "run_id": version.lineage.run_id}
        self.log.info("reused %s (%s) made by run %s: same cache key %s (stage %s, inputs %s,"
                      " code %s); no stage process started", version.ref, version.id[:12],
                      made_by["run_id"], key.key[:16], key.stage,
                      ", ".join(key.inputs) or "none", key.code or "not keyed")
        self.ti.xcom_push(key=REUSE_XCOM, value={
            "key": key.key, "out": self.out, "made_by": made_by,
            "version": {"name": version.name, "id": version.id, "ref": version.ref,
                        "number": version.number}})
        result: dict[str, Any] = relocate(stage_meta["result"],
                                          str(stage_meta.get("out") or self.out), self.out)
        return result

    # --- training continued -----------------------------------------------------------

    def continue_training(self, store: Any) -> None:
        """Before a training run with no snapshot of its own: put the furthest snapshot an
        earlier run with the same continuation key left (a failed run's newest snapshot,
        or a shorter run's finished network) where ``--resume auto`` finds it."""
        from stylegan_ops.errors import StageError
        from stylegan_ops.store.reuse import (
            finished_networks,
            is_own_snapshot_dir,
            left_snapshots,
            register_training,
        )

        flag = self.spec.continues
        if not flag or self.key is None or not self.out:
            return
        out = Path(self.out)
        ckey = self.key.without(flag).key
        if is_own_snapshot_dir(out):  # a retry: --resume auto continues this run's own
            register_training(store, ckey, self.ti.dag_id, self.ti.run_id, out)
            return
        try:
            limit = float(_flag_value(self.argv, flag) or "nan")
        except ValueError:
            return  # the stage refuses the value itself, naming it
        if self.forced():
            register_training(store, ckey, self.ti.dag_id, self.ti.run_id, out)
            self.log.info("training from scratch: %s", self.forced())
            return
        candidates: list[tuple[float, int, str, Path | None, Any]] = [
            (s.kimg, 0, s.what, s.path, None)
                      for s in left_snapshots(store, ckey, out, limit)]
        candidates += [(kimg, 1, f"{v.name}@{v.id} ({v.ref}, {kimg:g} kimg)", None, v)
                       for v, kimg in finished_networks(store, self.name, ckey, limit)]
        register_training(store, ckey, self.ti.dag_id, self.ti.run_id, out)
        if not candidates:
            self.log.info("training from scratch: no earlier run with continuation key %s",
                          ckey[:16])
            return
        kimg, _, what, path, version = max(candidates, key=lambda c: (c[0], c[1]))
        target = out / snapshot_name(round(kimg * 1000))
        # copied beside under a name --resume auto ignores, then renamed: a task killed
        # mid-copy leaves no half snapshot for its retry to resume from
        copying = out / f".{target.name}.copying"
        staging = out.parent / f".{out.name}.continue-from"
        try:
            out.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(copying, ignore_errors=True)
            if version is not None:
                store.checkout(f"{version.name}@{version.id}", staging, replace=True)
                path = staging / "network-final"
            assert path is not None
            shutil.copytree(path, copying, copy_function=shutil.copyfile)
            copying.rename(target)
        except (StageError, OSError) as exc:  # damaged, or gone since it was listed
            self.log.warning("training from scratch: cannot continue from %s (%s)", what, exc)
            return
        finally:
            shutil.rmtree(copying, ignore_errors=True)
            shutil.rmtree(staging, ignore_errors=True)
        self.log.info("continuing training from %s (continuation key %s)", what, ckey[:16])
        self.ti.xcom_push(key=CONTINUED_XCOM, value=what)


def store() -> Any:
    from stylegan_ops.store.local import Store

    return Store(Path(store_path()), create=True)
