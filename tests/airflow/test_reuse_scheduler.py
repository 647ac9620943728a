"""Only what changed reruns, under a real scheduler with the local runner: a seeds-only commit
to the watched repo reuses the trained network and its evaluation and generates only the new
seeds; a commit raising ``total_kimg`` continues from the previous network; ``cache: false``
recomputes everything; a run after a training that failed for good continues from the
snapshot it left.

Everything is read back as a user would: task logs and XComs through the REST API, versions
and their lineage from the store, the training's own stats.jsonl from the workspace."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from stylegan_ops.store.local import Store
from stylegan_ops.training import name_kimg, snapshot_name
from tests.airflow.stack import AirflowStack, commit_cats32, running_stack, stage_pids
from tests.conftest import cli
from tests.fakegithub import git, make_origin

pytestmark = [pytest.mark.scheduler, pytest.mark.airflow]

DAG = "stylegan2_train"
NET, EVAL, GEN = ("stylegan2-trained-network", "stylegan2-evaluation-ours",
                  "stylegan2-generated-ours")
# stage task → (its stage, its commit task)
STAGES = {"train": ("train", "commit_trained_network"),
          "evaluate_ours": ("evaluate", "commit_ours_evaluation"),
          "generate_ours": ("generate", "commit_ours_generated")}
CPU = {"download": "cpu", "train": "cpu", "evaluate": "cpu", "generate": "cpu"}
# batch 8 adds exactly 0.008 kimg a step: 0.04 is 5 steps, 0.08 five more; a stats row
# per step shows where a training started
K1, K2 = 0.04, 0.08
CONF = {"pretrained": None, "config": "small", "total_kimg": K1, "batch": 8,
        "tick_kimg": 0.008, "snapshot_ticks": 1000, "metrics": "swd", "metric_images": 8,
        "seeds": "1-2", "profiles": CPU}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    with running_stack(tmp_path_factory.mktemp("stack"), (DAG, "stylegan2_watch_repo"),
                       {"STYLEGAN_TRAIN_RETRY_DELAY": "1"}) as stack:
        yield stack


@pytest.fixture(scope="module")
def store(stack: AirflowStack) -> Store:
    return Store(Path(stack.env["STYLEGAN_STORE"]), create=True)


@pytest.fixture(scope="module")
def dataset(stack: AirflowStack, sample_lmdb: Path,
            tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 32 px dataset version ``cats-32`` in the stack's store."""
    return commit_cats32(stack.env["STYLEGAN_STORE"], sample_lmdb, tmp_path_factory.mktemp("cats"))


# --- reading back what happened -----------------------------------------------------------

def _ti_path(run_id: str, task_id: str) -> str:
    return f"/api/v2/dags/{DAG}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"


def task_log(stack: AirflowStack, run_id: str, task_id: str, try_number: int | None = None
             ) -> str:
    """The task's log (its last try unless told), one event a line, with the message of
    the exception a failed try ended with."""
    if try_number is None:
        try_number = stack.api("GET", _ti_path(run_id, task_id))["try_number"]
    log = stack.api("GET", f"{_ti_path(run_id, task_id)}/logs/{try_number}")
    assert log is not None, f"no log for {task_id} try {try_number} of {run_id}"
    lines = []
    for e in log["content"]:
        if not isinstance(e, dict):
            lines.append(str(e))
            continue
        lines.append(" ".join([str(e.get("event", "")), *(
            str(d.get("exc_value")) for d in e.get("error_detail") or [] if isinstance(d, dict))]))
    return "\n".join(lines)


def xcom(stack: AirflowStack, run_id: str, task_id: str, key: str = "return_value") -> Any:
    entry = stack.api("GET", f"{_ti_path(run_id, task_id)}/xcomEntries/{key}")
    if entry is None:
        return None
    value = entry["value"]
    return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value


def stats_kimg(stack: AirflowStack, run_id: str) -> list[float]:
    """The kimg of each stats row the run's training wrote (one row a step here)."""
    stats = Path(stack.env["STYLEGAN_WORKSPACE"]) / DAG / run_id / "train" / "stats.jsonl"
    return [json.loads(line)["kimg"] for line in stats.read_text().splitlines()]


def count(store: Store, name: str) -> int:
    return len(store.versions(name))


def trigger(stack: AirflowStack, run_id: str, conf: dict[str, Any]) -> None:
    stack.airflow("dags", "trigger", DAG, "--run-id", run_id, "--conf", json.dumps(conf))


# --- the watched repository -----------------------------------------------------------------

class Repo:
    """The pipeline repository the watcher follows, on plain git: each ``commit`` writes the
    settings file, pushes, runs the watcher once and waits for the run it triggered."""

    def __init__(self, stack: AirflowStack, base: Path) -> None:
        self.stack = stack
        self.bare, self.work = make_origin(base)
        self.watches = 0

    def commit(self, conf: dict[str, Any], message: str) -> str:
        (self.work / "stylegan2.yaml").write_text(yaml.safe_dump({"dag": DAG, "conf": conf}))
        git(self.work, "add", "stylegan2.yaml")
        git(self.work, "commit", "-qm", message)
        git(self.work, "push", "-q", "origin", "HEAD:main")
        sha = git(self.work, "rev-parse", "HEAD").strip()
        self.watches += 1
        watch_id = f"watch_{self.watches}"
        self.stack.airflow("dags", "trigger", "stylegan2_watch_repo", "--run-id", watch_id,
                           "--conf", json.dumps({"repo": str(self.bare), "backend": "git"}))
        assert self.stack.wait_for_run("stylegan2_watch_repo", watch_id) == "success"
        run_id = f"commit__{sha}"
        assert self.stack.wait_for_run(DAG, run_id, timeout=400) == "success", \
            self.stack.logs()
        return run_id


@pytest.fixture(scope="module")
def repo(stack: AirflowStack, tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return Repo(stack, tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def first_run(repo: Repo, dataset: str) -> str:
    """The watcher's run of a first commit: trains, evaluates and generates seeds 1-2."""
    return repo.commit({**CONF, "dataset_ref": dataset}, "first settings")


# --- the scenarios ------------------------------------------------------------------------

def test_a_commit_changing_only_seeds_reuses_the_network_and_generates_only_those_seeds(
        stack: AirflowStack, store: Store, repo: Repo, dataset: str, first_run: str) -> None:
    first = {t: xcom(stack, first_run, c) for t, (_, c) in STAGES.items()}
    assert all(v is not None and v["reused"] is None and v["created"] for v in first.values())
    nets, evals, gens = count(store, NET), count(store, EVAL), count(store, GEN)

    run = repo.commit({**CONF, "dataset_ref": dataset, "seeds": "4-5"}, "seeds 4-5")

    # the same dataset version checked out: the network and evaluation keys can match
    assert xcom(stack, run, "resolve_dataset")["id"] == \
        xcom(stack, first_run, "resolve_dataset")["id"]
    for task_id in ("train", "evaluate_ours"):
        stage, commit = STAGES[task_id]
        log = task_log(stack, run, task_id)
        assert f"made by run {first_run}: same cache key" in log, log[-3000:]
        assert "no stage process started" in log
        assert f"running stylegan-ops {stage}" not in log, log[-3000:]
        assert xcom(stack, run, task_id, "stage_seconds") is None  # the runner never ran
        assert xcom(stack, run, task_id, "reuse")["made_by"]["run_id"] == first_run
        made = xcom(stack, run, commit)
        assert made["id"] == first[task_id]["id"] and not made["created"]
        assert made["reused"] == {"reason": "cache", "key": made["lineage"]["cache"]["key"],
                                  "made_by": {"dag_id": DAG, "run_id": first_run}}
        assert f"reused by run {run}" in task_log(stack, run, commit)
    assert (count(store, NET), count(store, EVAL)) == (nets, evals)
    uses = [u for u in store.uses(NET) if u.run_id == run]
    assert [(u.reason, u.made_by_run_id) for u in uses] == [("cache", first_run)]

    # generation ran, for the new seeds only, and says why it could not reuse
    log = task_log(stack, run, "generate_ours")
    assert "running stylegan-ops generate" in log
    assert "differs in arguments --seeds 1-2 → 4-5" in log, log[-3000:]
    generated = xcom(stack, run, "commit_ours_generated")
    assert generated["created"] and generated["reused"] is None
    assert count(store, GEN) == gens + 1
    version = store.resolve(f"{GEN}:latest")
    assert version.id == generated["id"]
    assert (version.lineage.run_id, version.lineage.git_commit) == (run, run[len("commit__"):])
    assert version.meta["seeds"] == [4, 5]
    shown = json.loads(cli("store", "--store", stack.env["STYLEGAN_STORE"], "show",
                           f"{GEN}@{version.id}").stdout)
    assert {f["path"] for f in shown["manifest"]["files"]} == {
        "seed0004.png", "seed0005.png", "generate.json"}

    # the summary tells the two apart
    versions = xcom(stack, run, "summary")["versions"]
    assert versions[NET]["reused"]["made_by"]["run_id"] == first_run
    assert versions[GEN]["reused"] is None
    assert f"reused, last computed by run {first_run}" in task_log(stack, run, "summary")


def test_a_commit_raising_total_kimg_continues_from_the_previous_network(
        stack: AirflowStack, store: Store, repo: Repo, dataset: str, first_run: str) -> None:
    previous = store.resolve(f"{NET}@{xcom(stack, first_run, 'commit_trained_network')['id']}")
    assert stats_kimg(stack, first_run)[0] == pytest.approx(0.008)  # it started from 0

    run = repo.commit({**CONF, "dataset_ref": dataset, "seeds": "4-5", "total_kimg": K2},
                      f"total_kimg {K2}")

    log = task_log(stack, run, "train")
    assert f"continuing training from {NET}@{previous.id} ({previous.ref}, {K1:g} kimg)" in log, \
        log[-3000:]
    assert "running stylegan-ops train" in log
    made = xcom(stack, run, "commit_trained_network")
    assert made["created"] and made["reused"] is None
    version = store.resolve(f"{NET}@{made['id']}")
    assert version.lineage.run_id == run
    assert version.lineage.continued_from is not None
    assert previous.id in version.lineage.continued_from
    assert version.meta["kimg"] == pytest.approx(K2) and version.meta["stage"]["result"][
        "kimg"] == pytest.approx(K2)
    # the five steps after K1, not ten from 0
    assert stats_kimg(stack, run) == pytest.approx([0.048, 0.056, 0.064, 0.072, 0.08])
    # a new network: what judges and samples it is new too
    for task_id in ("evaluate_ours", "generate_ours"):
        assert f"running stylegan-ops {STAGES[task_id][0]}" in task_log(stack, run, task_id)
        assert xcom(stack, run, STAGES[task_id][1])["reused"] is None


def test_cache_false_recomputes_every_stage(stack: AirflowStack, store: Store, dataset: str,
                                            first_run: str) -> None:
    """The first run's conf again, every key matching, but reuse turned off."""
    trigger(stack, "no_cache", {**CONF, "dataset_ref": dataset, "cache": False})
    assert stack.wait_for_run(DAG, "no_cache", timeout=400) == "success", stack.logs()

    for task_id, (stage, commit) in STAGES.items():
        log = task_log(stack, "no_cache", task_id)
        assert f"recomputing {stage}: reuse is off for this run (param cache: false)" in log, \
            log[-3000:]
        assert f"running stylegan-ops {stage}" in log
        assert "no stage process started" not in log
        assert xcom(stack, "no_cache", task_id, "reuse") is None
        assert xcom(stack, "no_cache", task_id, "stage_seconds") is not None
        made = xcom(stack, "no_cache", commit)
        # recomputed; a result equal byte for byte to an earlier one is said so, not hidden
        assert made["reused"] is None or made["reused"]["reason"] == "same-content", made
    assert "training from scratch: reuse is off" in task_log(stack, "no_cache", "train")
    assert stats_kimg(stack, "no_cache")[0] == pytest.approx(0.008)


def test_a_run_after_training_failed_for_good_continues_from_its_snapshot(
        stack: AirflowStack, store: Store, dataset: str) -> None:
    # its own continuation key (other tick and snapshot settings): nothing above is reused
    conf = {**CONF, "dataset_ref": dataset, "total_kimg": 0.16, "tick_kimg": 0.04,
            "snapshot_ticks": 1, "seeds": "3"}
    nets = count(store, NET)
    trigger(stack, "fails", conf)
    train_dir = Path(stack.env["STYLEGAN_WORKSPACE"]) / DAG / "fails" / "train"
    # SIGKILL each try's stage process as soon as it shows (the first once it has left a
    # snapshot, well before it could finish) until the run has ended
    killed: set[int] = set()
    deadline, state = time.monotonic() + 400, None
    while state not in ("failed", "success"):
        assert time.monotonic() < deadline, "timed out waiting for the run to end"
        if any(train_dir.glob("network-snapshot-*")):
            for pid in set(stage_pids(f"stylegan_ops.cli train .*{train_dir}")) - killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        state = stack.run_state(DAG, "fails") if killed else None
        time.sleep(0.2)
    assert state == "failed", "a try finished before it was killed"
    ti = stack.api("GET", _ti_path("fails", "train"))
    assert (ti["state"], ti["try_number"]) == ("failed", 3), ti  # retries=2, all used
    assert len(killed) == 3, killed
    for try_number in (1, 2, 3):
        assert "failed with exit code -9" in task_log(stack, "fails", "train", try_number)
    assert count(store, NET) == nets
    snapshot = max(train_dir.glob("network-snapshot-*"), key=lambda p: name_kimg(p.name) or -1)
    left = round(json.loads((snapshot / "state.json").read_text())["kimg"], 3)
    assert left > 0 and snapshot.name == snapshot_name(round(left * 1000))

    trigger(stack, "after_failure", conf)
    assert stack.wait_for_run(DAG, "after_failure", timeout=400) == "success", stack.logs()
    what = f"run fails's {snapshot.name} ({left:g} kimg)"
    log = task_log(stack, "after_failure", "train")
    assert f"continuing training from {what}" in log, log[-3000:]
    assert "training from scratch" not in log
    version = store.resolve(f"{NET}@{xcom(stack, 'after_failure', 'commit_trained_network')['id']}")
    assert version.lineage.continued_from == what
    assert version.meta["kimg"] == pytest.approx(0.16)
    kimgs = stats_kimg(stack, "after_failure")
    assert kimgs[0] == pytest.approx(left + 0.04) and kimgs[-1] == pytest.approx(0.16), kimgs
