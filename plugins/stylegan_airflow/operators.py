"""Thin operators: a stage command handed to a profile's runner, and a store commit."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias, BaseOperator

from stylegan_airflow.commands import build_command, check_stage
from stylegan_airflow.profiles import VARIABLE, get_profile
from stylegan_airflow.reuse import (
    CACHE_XCOM,
    CONTINUED_XCOM,
    REUSE_XCOM,
    Decision,
    Reuse,
    first,
    input_versions,
)
from stylegan_airflow.reuse import store as reuse_store
from stylegan_airflow.runners import RUNNERS, Runner, store_path


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _string_list(what: str, value: Any) -> None:
    """A list (or a template or an XComArg rendering to one), never a bare string: that
    would be read as its characters, one argument or tag each."""
    if isinstance(value, str | bytes) and not _templated(value):
        raise ValueError(f"{what} must be a list (or a template), got {value!r}")


def _profile_file() -> str | None:
    """The profiles file: the Airflow Variable when set (read at run time only), else env."""
    from airflow.sdk import Variable

    try:
        return Variable.get(VARIABLE, default=None)
    except Exception:  # noqa: BLE001 - no API server (e.g. plain unit tests): use env/default
        return None


class StageOperator(BaseOperator):
    """Run one ``stylegan-ops`` stage; its last JSON stdout line becomes the XCom value.

    :param stage: the sub-command, e.g. ``"download"`` or ``"prepare lsun"``.
    :param arguments: its arguments (templated; expandable for dynamic task mapping).
    :param profile: resource profile name (templated); decides runner, image and limits.
    :param reuse: how to find an earlier result with the same cache key (see
        ``stylegan_airflow.reuse``); None: the stage always runs.
    """

    template_fields: Sequence[str] = ("arguments", "profile")
    ui_color = "#d9ecff"

    def __init__(self, *, stage: str, arguments: Sequence[Any] = (), profile: str = "cpu",
                 reuse: Reuse | None = None, **kwargs: Any) -> None:
        check_stage(stage)
        _string_list("arguments", arguments)
        if not isinstance(profile, str) or not profile.strip():
            raise ValueError(f"profile must be a profile name, got {profile!r}")
        if reuse is not None and not isinstance(reuse, Reuse):
            raise ValueError(f"reuse must be a Reuse, got {reuse!r}")
        if not _templated(profile):
            resolved = get_profile(profile)  # unknown profile: a DAG import error naming it
            kwargs.setdefault("queue", resolved.queue)
            kwargs.setdefault("pool", resolved.pool)
        super().__init__(**kwargs)
        self.stage = stage
        self.arguments = arguments
        self.profile = profile
        self.reuse = reuse
        self._runner: Runner | None = None

    def command(self) -> list[str]:
        """The argv this task runs (after templating)."""
        return build_command(self.stage, list(self.arguments))

    def execute(self, context: Any) -> Any:
        profile = get_profile(self.profile, _profile_file())
        self._runner = RUNNERS[profile.runner](profile)
        argv = self.command()
        if self.reuse is not None:
            if self.reuse.follows:
                done = first(context["ti"].xcom_pull(task_ids=self.reuse.follows,
                                                     key=REUSE_XCOM))
                if done:
                    self.log.info("nothing to do: %s reused %s", self.reuse.follows,
                                  done["version"]["ref"])
                    context["ti"].xcom_push(key=REUSE_XCOM, value=done)
                    return {"reused": done["version"], "out": done["out"]}
            else:
                decision = Decision(self.reuse, self.stage, argv, context, self._runner, self.log,
                                    lambda value: self.render_template(value, context))
                store = reuse_store()
                reused = decision.reuse(store)
                if reused is not None:
                    return reused
                decision.continue_training(store)
        started = time.monotonic()
        result = self._runner.run(argv, context, self.log)
        # the stage's own wall time, so orchestration overhead can be told apart from it
        context["ti"].xcom_push(key="stage_seconds", value=round(time.monotonic() - started, 3))
        return result

    def on_kill(self) -> None:
        if self._runner is not None:
            self._runner.kill()


def version_asset(name: str) -> Asset:
    """The Airflow Asset whose events announce new versions of ``name``."""
    return Asset(name=f"stylegan-version-{name}", uri=f"x-stylegan://versions/{name}")


# Versions whose name is only known at run time are announced through this alias.
VERSIONS_ALIAS = AssetAlias("stylegan-versions")


class DatasetVersionOperator(BaseOperator):
    """Commit a directory into the version store with lineage from the Airflow context.

    Emits an Asset event (``extra`` holds the version id and ref) and returns the version.

    :param source: directory to commit (templated).
    :param name: version name, e.g. ``lsun-cat-256`` (templated).
    :param tags: tags to set (templated).
    :param inputs: task ids whose XCom is a version (or has ``id``/``name``): lineage inputs.
    :param meta: free metadata, e.g. metrics (templated).
    :param stage: the stage task whose output this commits (the head of its chain): its
        cache key goes into the lineage, its result and timing into ``meta["stage"]``, and
        when it reused a version, that version is returned instead of a commit.
    """

    template_fields: Sequence[str] = ("source", "name", "tags", "meta")
    ui_color = "#fde2b8"

    def __init__(self, *, source: str, name: str, tags: Sequence[str] = (),
                 inputs: Sequence[str] = (), meta: dict[str, Any] | None = None,
                 stage: str | None = None, **kwargs: Any) -> None:
        from stylegan_ops.errors import StageError
        from stylegan_ops.store.model import check_name, check_tag

        _string_list("tags", tags)
        _string_list("inputs", inputs)
        if _templated(inputs):
            raise ValueError(f"inputs are task ids, not a template: {inputs!r}")
        if isinstance(source, str) and not source.strip():
            raise ValueError(f"source must be a directory path, got {source!r}")
        try:
            for tag in () if _templated(tags) else tags:
                if not _templated(tag):
                    check_tag(tag)
            if not _templated(name):
                check_name(name)
        except StageError as exc:
            raise ValueError(str(exc)) from exc
        if not _templated(name):
            kwargs.setdefault("outlets", [version_asset(name)])
        else:
            kwargs.setdefault("outlets", [VERSIONS_ALIAS])
        super().__init__(**kwargs)
        self.source = source
        self.name = name
        self.tags = tags
        self.inputs = tuple(inputs)
        self.meta = meta or {}
        self.stage = stage

    def execute(self, context: Any) -> dict[str, Any]:
        from stylegan_ops.store.local import Store

        ti = context["ti"]
        store = Store(Path(store_path()))
        done = first(ti.xcom_pull(task_ids=self.stage, key=REUSE_XCOM)) if self.stage else None
        if done:
            version, created, reuse = self._reused(store, ti, done)
        else:
            version, created, reuse = self._commit(store, ti, context)
        extra = {"version_id": version.id, "ref": version.ref, "name": version.name}
        for outlet in self.outlets:
            if isinstance(outlet, AssetAlias):
                context["outlet_events"][outlet].add(version_asset(version.name), extra=extra)
            elif isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = extra
        return {**version.to_dict(), "ref": version.ref, "created": created, "reused": reuse}

    def _use(self, store: Any, ti: Any, version: Any, reason: str, key: str | None
             ) -> dict[str, Any]:
        """Record that this task used ``version`` instead of making one."""
        from stylegan_ops.store.base import now
        from stylegan_ops.store.model import Use

        use = Use(version.name, version.number, version.id, now(), reason, ti.dag_id,
                  ti.run_id, ti.task_id, ti.try_number, key, version.lineage.dag_id,
                  version.lineage.run_id)
        store.record_use(use)
        return {"reason": reason, "key": key, "made_by": {
            "dag_id": version.lineage.dag_id, "run_id": version.lineage.run_id}}

    def _reused(self, store: Any, ti: Any, done: dict[str, Any]) -> tuple[Any, bool, Any]:
        version = store.resolve(f"{self.name}@{done['version']['id']}")
        reuse = None  # a cleared task of the run that made it found its own version
        if (version.lineage.dag_id, version.lineage.run_id) != (ti.dag_id, ti.run_id):
            reuse = self._use(store, ti, version, "cache", done.get("key"))
        for tag in self.tags:
            store.tag(f"{version.name}@{version.id}", tag)
        self.log.info("reused %s (%s): made by run %s, reused by run %s (cache key %s)",
                      version.ref, version.id, version.lineage.run_id, ti.run_id,
                      str(done.get("key"))[:16])
        return version, False, reuse

    def _commit(self, store: Any, ti: Any, context: Any) -> tuple[Any, bool, Any]:
        from stylegan_ops.store.model import Lineage

        conf = getattr(context.get("dag_run"), "conf", None) or {}
        cache = first(ti.xcom_pull(task_ids=self.stage, key=CACHE_XCOM)) if self.stage else None
        meta = dict(self.meta)
        if self.stage:  # what a later task reusing this version returns; timings live here
            meta["stage"] = {
                "task_id": self.stage, "result": first(ti.xcom_pull(task_ids=self.stage)),
                "out": (cache or {}).get("out"),
                "seconds": first(ti.xcom_pull(task_ids=self.stage, key="stage_seconds"))}
        lineage = Lineage(
            dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
            try_number=ti.try_number, git_commit=conf.get("git_commit"),
            params={k: v for k, v in dict(context.get("params") or {}).items()},
            inputs=tuple(input_versions(ti, self.inputs)), image=os.environ.get("STYLEGAN_IMAGE"),
            cache={k: cache[k] for k in ("key", "parts", "continue_key")} if cache else None,
            continued_from=(first(ti.xcom_pull(task_ids=self.stage, key=CONTINUED_XCOM))
                            if self.stage else None))
        version, created = store.snapshot(Path(self.source), self.name, tuple(self.tags),
                                          lineage, meta)
        reuse = None
        if created:
            self.log.info("committed %s (%s)", version.ref, version.id)
        elif (version.lineage.dag_id, version.lineage.run_id) != (ti.dag_id, ti.run_id):
            reuse = self._use(store, ti, version, "same-content", (cache or {}).get("key"))
            self.log.info("unchanged: the content is %s (%s), made by run %s; recorded as "
                          "used by this run", version.ref, version.id, version.lineage.run_id)
        else:
            self.log.info("unchanged, reusing %s (%s)", version.ref, version.id)
        return version, created, reuse
