"""A stage task's reuse decision and the commit after it, task by task, without a scheduler:
real operators, a real store and real Airflow outlet events, with a small stand-in for the
task instance and a runner that writes what a stage would (so "the stage ran" is seen).

The DAG-level behaviour (reruns under a real scheduler) is tested in test_reuse_scheduler.py."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = pytest.mark.airflow

DAG_ID = "reuse_test"
NET = "reuse-net"
GEN = "reuse-generated"


@dataclass
class TI:
    """The parts of a task instance the operators use; XComs live in ``xcoms``, shared by
    the tasks of one run."""

    run_id: str
    task_id: str
    xcoms: dict[tuple[str, str], Any]
    try_number: int = 1
    dag_id: str = DAG_ID
    map_index: int = -1

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, key)] = json.loads(json.dumps(value))  # as XCom stores it

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_ids, key))


@dataclass
class Runner:
    """Runs a stage the way a stage would look from outside: writes files into ``--out``
    (their content is the arguments less the paths ``--out`` and ``--network``: what a real
    stage's output depends on) and returns its result line."""

    code: str = "stylegan-ops test src 1"
    runs: list[list[str]] = field(default_factory=list)
    identities: int = 0

    def code_identity(self, context: Any, log: logging.Logger) -> str:
        self.identities += 1
        return self.code

    def run(self, argv: list[str], context: Any, log: logging.Logger) -> Any:
        self.runs.append(list(argv))
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        paths = ("--out", "--network")
        shown = [a for i, a in enumerate(argv) if not set(paths) & set(argv[max(i - 1, 0):i + 1])]
        (out / "made.txt").write_text(" ".join(shown[1:]))
        (out / "sub").mkdir(exist_ok=True)
        (out / "sub" / "more.bin").write_bytes(b"\x00\x01")
        return {"out": str(out), "files": [str(out / "made.txt"), str(out / "sub/more.bin")],
                "count": 2}

    def kill(self) -> None:
        pass


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A store and workspace of this test's own, and the runner the local profile gets."""
    from stylegan_airflow import runners

    monkeypatch.setenv("STYLEGAN_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("STYLEGAN_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("STYLEGAN_PROFILES", raising=False)
    runner = Runner()
    monkeypatch.setitem(runners.RUNNERS, "local", lambda profile: runner)
    return SimpleNamespace(runner=runner, tmp=tmp_path)


def store() -> Any:
    from stylegan_airflow.reuse import store as reuse_store

    return reuse_store()


def network(content: bytes = b"weights") -> dict[str, Any]:
    """A committed network version, as the XCom of the commit task that made it."""
    from stylegan_ops.store.model import Lineage

    src = Path(store().root).parent / f"net-{hashlib.sha256(content).hexdigest()[:8]}"
    src.mkdir(exist_ok=True)
    (src / "G.npz").write_bytes(content)
    version, _ = store().snapshot(src, NET, (), Lineage(dag_id="t", run_id="net-run"))
    return {"name": version.name, "id": version.id, "ref": version.ref}


def out_dir(run_id: str, try_number: int = 1) -> str:
    from stylegan_airflow.paths import run_dir

    return f"{run_dir(DAG_ID, run_id)}/generated-{try_number}"


@dataclass
class Run:
    run_id: str
    xcoms: dict[tuple[str, str], Any]
    params: dict[str, Any]
    events: Any
    result: Any = None
    commit: Any = None

    def context(self, task_id: str, try_number: int = 1) -> dict[str, Any]:
        return {"ti": TI(self.run_id, task_id, self.xcoms, try_number), "params": self.params,
                "outlet_events": self.events, "dag_run": SimpleNamespace(conf={})}


def generate(run_id: str, net: dict[str, Any], seeds: str = "1-2",
             params: dict[str, Any] | None = None, try_number: int = 1,
             commit: bool = True, xcoms: dict[tuple[str, str], Any] | None = None,
             tags: tuple[str, ...] = ()) -> Run:
    """One run of generate → commit, as the train DAG's generate chain does it."""
    from airflow.sdk.execution_time.context import OutletEventAccessors
    from stylegan_airflow.operators import DatasetVersionOperator, StageOperator
    from stylegan_airflow.reuse import Reuse

    run = Run(run_id, xcoms if xcoms is not None else {}, {"cache": True, "recompute": [],
                                                           **(params or {})},
              OutletEventAccessors())
    run.xcoms[("commit_net", "return_value")] = net
    out = out_dir(run_id, try_number)
    stage = StageOperator(
        task_id="generate", stage="generate",
        arguments=["--network", f"/somewhere/{run_id}/net", "--seeds", seeds,
                   "--out", out],
        reuse=Reuse(name=GEN, kind="generate", inputs=("commit_net",), unkeyed=("--network",)))
    run.result = stage.execute(run.context("generate", try_number))
    run.xcoms[("generate", "return_value")] = run.result
    if commit:
        op = DatasetVersionOperator(task_id="commit_generated", name=GEN, source=out,
                                    inputs=["commit_net"], stage="generate", tags=list(tags))
        run.commit = op.execute(run.context("commit_generated", try_number))
    return run


def logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """What the tasks logged: Airflow's structlog writes to stdout or to logging, depending
    on how this process configured it."""
    out = capsys.readouterr()
    return caplog.text + out.out + out.err


# --- the key ------------------------------------------------------------------------------

def decision(argv: list[str], stage: str = "generate", **spec: Any) -> Any:
    from stylegan_airflow.reuse import Decision, Reuse

    ctx = {"ti": TI("manual__1", "t", {}), "params": {}}
    return Decision(Reuse(name=GEN, kind=spec.pop("kind", "generate"), **spec), stage,
                    ["stylegan-ops", *stage.split(), *argv], ctx, Runner(),
                    logging.getLogger("test"), lambda value: value)


@pytest.mark.parametrize(("stage", "argv", "spec", "args"), [
    pytest.param("generate", ["--seeds", "1", "--out", "/anywhere/x"], {}, ["--seeds", "1"],
                 id="out-dropped"),
    pytest.param("generate", ["--out", "/x", "--seeds", "1", "--trunc", "0.5"], {},
                 ["--seeds", "1", "--trunc", "0.5"], id="out-first"),
    pytest.param("generate", ["--network", "/n/1", "--seeds", "1", "--out", "/x"],
                 {"unkeyed": ("--network",)}, ["--seeds", "1"], id="unkeyed-dropped"),
    pytest.param("generate", ["--network", "/n/1", "--seeds", "1"], {},
                 ["--network", "/n/1", "--seeds", "1"], id="keyed-unless-said"),
    pytest.param("train", ["--data", "{run}/dataset", "--cfg", "{run}", "--x", "{run}x",
                           "--y", "{other}/dataset"], {"kind": "train"},
                 ["--data", "<run>/dataset", "--cfg", "<run>", "--x", "{run}x",
                  "--y", "{other}/dataset"], id="run-dir-written-run"),
    pytest.param("prepare lsun", ["/lmdb", "--resolution", "16", "--shard", "0/3"],
                 {"kind": "extract", "unkeyed": ("--shard",)}, ["/lmdb", "--resolution", "16"],
                 id="stage-words-removed"),
    pytest.param("import-pkl", ["{tmp}/a.pkl", "--out", "{run}/net"],
                 {"kind": "import", "files": ("{tmp}/a.pkl",)},
                 [f"sha256:{hashlib.sha256(b'pickle').hexdigest()}"], id="file-by-content"),
])
def test_key_arguments(env: SimpleNamespace, stage: str, argv: list[str], spec: dict[str, Any],
                       args: list[str]) -> None:
    from stylegan_airflow.paths import run_dir

    (env.tmp / "a.pkl").write_bytes(b"pickle")
    names = {"run": run_dir(DAG_ID, "manual__1"), "other": run_dir(DAG_ID, "manual__2"),
             "tmp": str(env.tmp)}

    def fill(value: Any) -> Any:
        return tuple(fill(v) for v in value) if isinstance(value, tuple) else \
            value.format(**names)

    spec = {k: fill(v) for k, v in spec.items()}
    key = decision([fill(a) for a in argv], stage, **spec).compute_key()
    assert list(key.args) == [fill(a) for a in args]
    assert key.stage == stage and key.code == "stylegan-ops test src 1"


def test_input_files_are_keyed_by_content_not_path(env: SimpleNamespace) -> None:
    a, b, c = env.tmp / "a.pkl", env.tmp / "elsewhere/b.pkl", env.tmp / "c.pkl"
    b.parent.mkdir()
    a.write_bytes(b"pickle")
    b.write_bytes(b"pickle")
    c.write_bytes(b"pickle, changed")

    def key(path: Path) -> str:
        return str(decision([str(path), "--out", "/o"], "import-pkl", kind="import",
                            files=(str(path),)).compute_key().key)

    assert key(a) == key(b) != key(c)
    with pytest.raises(LookupError, match=f"input file {env.tmp}/missing.pkl is missing"):
        key(env.tmp / "missing.pkl")


def test_a_missing_input_file_is_not_reusable_and_the_stage_runs(
        env: SimpleNamespace, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    from stylegan_airflow.operators import StageOperator
    from stylegan_airflow.reuse import CACHE_XCOM, Reuse

    xcoms: dict[tuple[str, str], Any] = {}
    missing = str(env.tmp / "gone.pkl")
    op = StageOperator(task_id="import_pretrained", stage="import-pkl",
                       arguments=[missing, "--out", out_dir("r1")],
                       reuse=Reuse(name=GEN, kind="import", files=(missing,)))
    op.execute({"ti": TI("r1", "import_pretrained", xcoms), "params": {}})
    assert len(env.runner.runs) == 1
    assert ("import_pretrained", CACHE_XCOM) not in xcoms
    assert f"not reusable: input file {missing} is missing; running import" in logged(
        caplog, capsys)


# --- reuse and what forces a run ----------------------------------------------------------

def test_a_rerun_reuses_the_version_and_its_commit_records_the_use(
        env: SimpleNamespace, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    from airflow.sdk import Asset
    from stylegan_airflow.reuse import CACHE_XCOM, REUSE_XCOM

    net = network()
    first = generate("r1", net, tags=("demo",))
    assert len(env.runner.runs) == 1 and first.commit["created"] is True
    assert first.commit["reused"] is None
    made = store().resolve(GEN)
    assert made.lineage.cache == {k: first.xcoms[("generate", CACHE_XCOM)][k]
                                  for k in ("key", "parts", "continue_key")}
    assert made.meta["stage"]["result"] == first.result
    assert made.meta["stage"]["out"] == out_dir("r1")
    capsys.readouterr()

    second = generate("r2", net, tags=("demo", "again"))
    assert len(env.runner.runs) == 1  # no stage process
    key = first.xcoms[("generate", CACHE_XCOM)]["key"]
    assert second.xcoms[("generate", CACHE_XCOM)]["key"] == key
    assert second.xcoms[("generate", REUSE_XCOM)]["version"]["id"] == made.id
    # the recorded result, moved to where this run's output is
    out = out_dir("r2")
    assert second.result == {"out": out, "files": [f"{out}/made.txt", f"{out}/sub/more.bin"],
                             "count": 2}
    assert (Path(out) / "made.txt").read_text() == (Path(out_dir("r1")) / "made.txt").read_text()
    text = logged(caplog, capsys)
    assert f"reused {made.ref} ({made.id[:12]}) made by run r1: same cache key {key[:16]}" in text
    assert "no stage process started" in text

    commit = second.commit
    assert (commit["id"], commit["number"], commit["created"]) == (made.id, made.number, False)
    assert commit["reused"] == {"reason": "cache", "key": key,
                                "made_by": {"dag_id": DAG_ID, "run_id": "r1"}}
    [use] = store().uses(GEN)
    assert (use.reason, use.run_id, use.task_id, use.key, use.made_by_run_id, use.number) == (
        "cache", "r2", "commit_generated", key, "r1", made.number)
    assert store().resolve(f"{GEN}:again").id == made.id
    assert [v.number for v in store().versions(GEN)] == [1]
    event = second.events[Asset(name=f"stylegan-version-{GEN}", uri=f"x-stylegan://versions/{GEN}")]
    assert event.extra == {"version_id": made.id, "ref": made.ref, "name": GEN}


def test_a_follower_does_nothing_when_its_head_reused(env: SimpleNamespace) -> None:
    from stylegan_airflow.operators import StageOperator
    from stylegan_airflow.reuse import REUSE_XCOM, Reuse

    net = network()
    generate("r1", net)
    second = generate("r2", net, commit=False)
    op = StageOperator(task_id="montage", stage="generate", arguments=["--out", "/x"],
                       reuse=Reuse(name=GEN, kind="generate", follows="generate"))
    result = op.execute(second.context("montage"))
    assert len(env.runner.runs) == 1
    assert result == {"reused": second.xcoms[("generate", REUSE_XCOM)]["version"],
                      "out": out_dir("r2")}


def test_an_alias_outlet_announces_the_reused_version(env: SimpleNamespace) -> None:
    from airflow.sdk.execution_time.context import OutletEventAccessors
    from stylegan_airflow.operators import VERSIONS_ALIAS, DatasetVersionOperator

    net = network()
    generate("r1", net)
    second = generate("r2", net, commit=False)
    op = DatasetVersionOperator(task_id="commit_generated", name="{{ params.name }}",
                                source="/not/read", stage="generate")
    events = OutletEventAccessors()
    op.render_template_fields({**second.context("commit_generated"),
                               "params": {"name": GEN}})
    op.execute({**second.context("commit_generated"), "outlet_events": events})
    [event] = events[VERSIONS_ALIAS].asset_alias_events
    assert event.dest_asset_key.name == f"stylegan-version-{GEN}"
    assert event.extra["version_id"] == store().resolve(GEN).id


@pytest.mark.parametrize(("params", "runs", "says"), [
    pytest.param({}, False, "reused", id="default-reuses"),
    pytest.param({"cache": True, "recompute": None}, False, "reused", id="form-null"),
    pytest.param({"cache": False}, True, "recomputing generate: reuse is off for this run "
                                         "(param cache: false)", id="cache-false"),
    pytest.param({"recompute": ["generate"]}, True,
                 "recomputing generate: this run recomputes generate stages (param recompute)",
                 id="recompute-this-kind"),
    pytest.param({"recompute": ["train", "evaluate"]}, False, "reused", id="recompute-others"),
])
def test_params_force_a_run_and_the_key_is_still_pushed(
        env: SimpleNamespace, params: dict[str, Any], runs: bool, says: str,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    from stylegan_airflow.reuse import CACHE_XCOM, REUSE_XCOM

    net = network()
    first = generate("r1", net)
    capsys.readouterr()
    second = generate("r2", net, params=params, commit=False)
    assert len(env.runner.runs) == 1 + runs
    assert second.xcoms[("generate", CACHE_XCOM)]["key"] == \
        first.xcoms[("generate", CACHE_XCOM)]["key"]
    assert (("generate", REUSE_XCOM) in second.xcoms) is not runs
    assert says in logged(caplog, capsys)


def test_a_miss_names_the_closest_earlier_version_and_what_differed(
        env: SimpleNamespace, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    net = network()
    generate("r1", net, seeds="1-2")
    generate("r2", net, seeds="1-2,5")
    capsys.readouterr()
    generate("r3", net, seeds="1-3")
    assert len(env.runner.runs) == 3
    assert "computing generate: no version with cache key " in (text := logged(caplog, capsys))
    assert f"the closest, {GEN}:v2 made by run r2, differs in arguments --seeds 1-2,5 → 1-3" \
        in text
    env.runner.code = "stylegan-ops test src 2"
    generate("r4", net, seeds="1-3")
    assert len(env.runner.runs) == 4
    assert f"the closest, {GEN}:v3 made by run r3, differs in code stylegan-ops test src 1 → " \
           "stylegan-ops test src 2" in logged(caplog, capsys)


def test_without_a_checksum_flag_nothing_is_looked_up(
        env: SimpleNamespace, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    from stylegan_airflow.operators import StageOperator
    from stylegan_airflow.reuse import CACHE_XCOM, Reuse

    def download(run_id: str, *extra: str) -> dict[tuple[str, str], Any]:
        xcoms: dict[tuple[str, str], Any] = {}
        op = StageOperator(task_id="download", stage="download",
                           arguments=["http://example.invalid/cat.zip", *extra,
                                      "--out", out_dir(run_id)],
                           reuse=Reuse(name="reuse-zip", kind="download", code=False,
                                       needs=("--md5", "--sha256")))
        op.execute({"ti": TI(run_id, "download", xcoms), "params": {}})
        return xcoms

    xcoms = download("r1")
    assert ("download", CACHE_XCOM) not in xcoms and env.runner.identities == 0
    assert "not reusable: no --md5 or --sha256 given to prove the source still serves the " \
           "same bytes; running download" in logged(caplog, capsys)
    xcoms = download("r2", "--sha256", "0" * 64)
    assert len(env.runner.runs) == 2
    assert xcoms[("download", CACHE_XCOM)]["parts"]["code"] is None
    assert env.runner.identities == 0  # a checksummed download is keyed without the code


# --- a hit that cannot be used ------------------------------------------------------------

def damage_an_object(s: Any, version_id: str) -> None:
    entry = s.manifest(version_id).entries[0]
    path = s.object_path(entry.sha256)
    path.chmod(0o644)
    path.write_bytes(b"X" * entry.size)  # same size, other bytes: only a rehash tells


def fill_target(run_id: str) -> None:
    target = Path(out_dir(run_id))
    target.mkdir(parents=True)
    (target / "someone-elses.txt").write_text("not a checkout")


@pytest.mark.parametrize(("spoil", "says"), [
    pytest.param(lambda s, v: damage_an_object(s, v.id),
                 "is damaged (1 files, first: made.txt", id="damaged-object"),
    pytest.param(lambda s, v: fill_target("r2"), "refusing to replace", id="target-not-checkout"),
])
def test_a_hit_that_cannot_be_checked_out_warns_and_runs(
        env: SimpleNamespace, spoil: Any, says: str, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    from stylegan_airflow.reuse import REUSE_XCOM

    net = network()
    generate("r1", net)
    made = store().resolve(GEN)
    spoil(store(), made)
    capsys.readouterr()
    second = generate("r2", net, commit=False)
    assert len(env.runner.runs) == 2 and ("generate", REUSE_XCOM) not in second.xcoms
    text = logged(caplog, capsys)
    assert "Traceback" not in text
    [line] = [ln for ln in text.splitlines() if "cannot be checked out" in ln]
    assert f"computing generate: {made.ref} has cache key" in line and says in line
    assert "warning" in line.lower()


@pytest.mark.parametrize("meta", [
    pytest.param({}, id="no-stage"),
    pytest.param({"stage": {"task_id": "generate"}}, id="no-result"),
    pytest.param({"stage": ["result"]}, id="stage-not-object"),
])
def test_a_version_with_the_key_but_no_recorded_result_runs(
        env: SimpleNamespace, meta: dict[str, Any], caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    from stylegan_ops.store.model import Lineage

    net = network()
    probe = generate("r0", net, params={"cache": False}, commit=False)  # learns the key
    cache = probe.xcoms[("generate", "cache")]
    src = env.tmp / "by-hand"
    src.mkdir()
    (src / "f").write_text("made elsewhere")
    version, _ = store().snapshot(src, GEN, (), Lineage(
        dag_id="other", run_id="by-hand", cache={k: cache[k] for k in ("key", "parts")}), meta)
    capsys.readouterr()
    generate("r2", net, commit=False)
    assert len(env.runner.runs) == 2
    assert f"computing generate: {version.ref} has cache key {cache['key'][:16]} but no " \
           "recorded stage result" in logged(caplog, capsys)


# --- what the commit records --------------------------------------------------------------

def test_same_content_as_another_runs_version_is_recorded_and_then_found(
        env: SimpleNamespace) -> None:
    from stylegan_airflow.reuse import CACHE_XCOM

    net = network()
    first = generate("r1", net)
    env.runner.code = "stylegan-ops test src 2"  # new code that makes the same bytes
    second = generate("r2", net)
    assert len(env.runner.runs) == 2
    made = store().resolve(GEN)
    key2 = second.xcoms[("generate", CACHE_XCOM)]["key"]
    assert key2 != first.xcoms[("generate", CACHE_XCOM)]["key"]
    assert (second.commit["id"], second.commit["created"]) == (made.id, False)
    assert second.commit["reused"] == {"reason": "same-content", "key": key2,
                                       "made_by": {"dag_id": DAG_ID, "run_id": "r1"}}
    [use] = store().uses(GEN)
    assert (use.reason, use.key, use.run_id, use.made_by_run_id) == (
        "same-content", key2, "r2", "r1")
    # the new key now leads to that version: a third run with it does no work
    third = generate("r3", net)
    assert len(env.runner.runs) == 2
    assert third.commit["reused"]["reason"] == "cache"
    assert third.commit["reused"]["made_by"] == {"dag_id": DAG_ID, "run_id": "r1"}


def test_a_retry_of_the_same_run_records_no_use(env: SimpleNamespace) -> None:
    from stylegan_airflow.operators import DatasetVersionOperator

    net = network()
    first = generate("r1", net)
    # the commit was lost after its snapshot (a worker died, say): its retry commits the
    # same content again, and that is no use by another run
    op = DatasetVersionOperator(task_id="commit_generated", name=GEN, source=out_dir("r1"),
                                inputs=["commit_net"], stage="generate")
    retry = op.execute(first.context("commit_generated", try_number=2))
    assert retry["created"] is False and retry["reused"] is None
    assert retry["id"] == first.commit["id"]
    assert store().uses(GEN) == [] and len(store().versions(GEN)) == 1


# --- training continued -------------------------------------------------------------------

TRAINED = "reuse-trained"


@dataclass
class Trainer(Runner):
    """Trains the way the stage looks from outside: snapshots (``state.json`` with kimg,
    G.npz, D.npz) in ``--out``, then ``network-final``; notes the snapshot it found there
    at the start (what ``--resume auto`` would continue from). ``fail_at``: write a
    snapshot that far, then die."""

    fail_at: float | None = None
    found: list[list[str]] = field(default_factory=list)

    def run(self, argv: list[str], context: Any, log: logging.Logger) -> Any:
        from airflow.sdk.exceptions import AirflowException

        self.runs.append(list(argv))
        out = Path(argv[argv.index("--out") + 1])
        total = float(argv[argv.index("--total-kimg") + 1])
        self.found.append(sorted(f"{p.name}:{json.loads((p / 'state.json').read_text())['kimg']}"
                                 for p in out.glob("network-snapshot-*")))
        for name, kimg in (("network-snapshot-000000", self.fail_at or total),
                           ("network-final", total)):
            snap = out / name
            snap.mkdir(parents=True, exist_ok=True)
            (snap / "state.json").write_text(json.dumps({"kimg": kimg}))
            for f in ("G.npz", "D.npz"):
                (snap / f).write_bytes(f"{f} after {kimg} kimg".encode())
            if self.fail_at is not None:
                raise AirflowException("worker lost")
        return {"out": str(out), "final": str(out / "network-final"), "kimg": total}


@pytest.fixture
def trainer(env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> Trainer:
    from stylegan_airflow import runners

    t = Trainer()
    monkeypatch.setitem(runners.RUNNERS, "local", lambda profile: t)
    return t


def train(run_id: str, total_kimg: str, commit: bool = True) -> Run:
    """One run of train → commit, as the train DAG's training chain does it."""
    from airflow.sdk.execution_time.context import OutletEventAccessors
    from stylegan_airflow.operators import DatasetVersionOperator, StageOperator
    from stylegan_airflow.paths import run_dir
    from stylegan_airflow.reuse import Reuse

    run = Run(run_id, {}, {"cache": True, "recompute": []}, OutletEventAccessors())
    root = run_dir(DAG_ID, run_id)
    run.xcoms[("resolve_dataset", "return_value")] = {"name": "ds", "id": "a" * 64}
    out = f"{root}/train"
    stage = StageOperator(
        task_id="train", stage="train",
        arguments=["--data", f"{root}/dataset", "--out", out, "--total-kimg", total_kimg,
                   "--resume", "auto"],
        reuse=Reuse(name=TRAINED, kind="train", inputs=("resolve_dataset",),
                    unkeyed=("--data",), continues="--total-kimg"))
    run.result = stage.execute(run.context("train"))
    run.xcoms[("train", "return_value")] = run.result
    if commit:
        op = DatasetVersionOperator(task_id="commit_trained_network", name=TRAINED, source=out,
                                    inputs=["resolve_dataset"], stage="train")
        run.commit = op.execute(run.context("commit_trained_network"))
    return run


def test_a_failed_run_is_continued_from_its_snapshot(trainer: Trainer) -> None:
    from airflow.sdk.exceptions import AirflowException
    from stylegan_airflow.reuse import CONTINUED_XCOM

    trainer.fail_at = 0.1
    with pytest.raises(AirflowException, match="worker lost"):
        train("r1", "0.4")
    trainer.fail_at = None
    second = train("r2", "0.4")
    assert trainer.found == [[], ["network-snapshot-000000.100:0.1"]]  # copied, named by kimg
    what = "run r1's network-snapshot-000000 (0.1 kimg)"
    assert second.xcoms[("train", CONTINUED_XCOM)] == what
    assert store().resolve(TRAINED).lineage.continued_from == what
    third = train("r3", "0.4")  # the same key as r2's committed network: reused outright
    assert len(trainer.runs) == 2 and third.commit["reused"]["reason"] == "cache"


def test_a_longer_run_continues_from_the_finished_network(trainer: Trainer) -> None:
    from stylegan_airflow.reuse import CONTINUED_XCOM

    train("r1", "0.2")
    short = store().resolve(TRAINED)
    longer = train("r2", "0.4")
    assert trainer.found == [[], ["network-snapshot-000000.200:0.2"]]
    what = f"{TRAINED}@{short.id} ({short.ref}, 0.2 kimg)"
    assert longer.xcoms[("train", CONTINUED_XCOM)] == what
    assert store().resolve(TRAINED).lineage.continued_from == what
    train("r3", "0.1")  # shorter than anything before: from scratch
    assert trainer.found[2] == []


def test_a_retry_continues_its_own_snapshots_only(trainer: Trainer) -> None:
    from airflow.sdk.exceptions import AirflowException
    from stylegan_airflow.reuse import CONTINUED_XCOM

    train("r0", "0.2")  # a finished network a fresh run would start from
    trainer.fail_at = 0.3
    with pytest.raises(AirflowException):
        train("r1", "0.4")
    trainer.fail_at = None
    retry = train("r1", "0.4")  # try 2 of r1: its own snapshot is where --resume auto looks
    # try 1 copied r0's network in (named by its kimg) and left its own 0.3 snapshot:
    # the retry finds exactly those, nothing copied again, and resumes the furthest
    assert trainer.found[2] == ["network-snapshot-000000.200:0.2", "network-snapshot-000000:0.3"]
    assert ("train", CONTINUED_XCOM) not in retry.xcoms


def test_a_damaged_network_to_continue_from_warns_and_trains_from_scratch(
        trainer: Trainer, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    from stylegan_airflow.reuse import CONTINUED_XCOM

    train("r1", "0.2")
    damage_an_object(store(), store().resolve(TRAINED).id)
    capsys.readouterr()
    longer = train("r2", "0.4")
    assert trainer.found == [[], []] and ("train", CONTINUED_XCOM) not in longer.xcoms
    text = logged(caplog, capsys)
    assert "Traceback" not in text
    [line] = [ln for ln in text.splitlines() if "cannot continue from" in ln]
    assert f"{TRAINED}:v1" in line and "is damaged" in line and "from scratch" in line
