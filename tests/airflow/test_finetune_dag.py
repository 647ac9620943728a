"""stylegan2_train fine-tuning and metrics during training: init_from a network version or
the pretrained branch's import (our branch then waits for it), the init network in the
trained version's lineage and key, FreezeD/ADA/metrics params reaching `train`, evaluations
against a reference dataset, and one-line refusals of what cannot work."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import cli
from tests.netfiles import make_pickle, nvidia_network_class

pytestmark = pytest.mark.airflow

CPU = {"download": "cpu", "train": "cpu", "evaluate": "cpu", "generate": "cpu"}


def conf(**overrides: Any) -> dict[str, Any]:
    """Every param named: dag.test() keeps the previous run's conf in the DAG's params."""
    return {"dataset_ref": "ft-cats-32:latest", "dataset_remote": None, "pretrained": None,
            "pretrained_sha256": None, "config": "small", "total_kimg": 0.1, "batch": 8,
            "ada": False, "aug": "none", "augpipe": "bgc", "aug_target": 0.6, "aug_p": None,
            "ada_kimg": 500,
            "init_from": None, "freeze_d": 0, "gamma": None, "train_metrics": "",
            "keep_best": None, "mixed_precision": False, "xla": False, "tick_kimg": 0.05,
            "snapshot_ticks": 1, "metrics": "swd",
            "metric_images": 16, "reference_dataset_ref": None, "seeds": "1",
            "truncation_psi": 0.5, "profiles": CPU, "tags": [], "git_commit": None,
            "cache": True, "recompute": [], **overrides}


def store_cli(*args: str | Path) -> dict[str, Any]:
    res = cli("store", "--store", os.environ["STYLEGAN_STORE"], *args)
    assert res.exit_code == 0, res.stderr
    return dict(json.loads(res.stdout.splitlines()[-1]))


def made_by(tis: dict[str, Any], commit: str) -> dict[str, Any]:
    """The version a commit task of this run made (not reused: the other modules of the
    session share the store)."""
    version = dict(tis[commit].xcom_pull(task_ids=commit))
    assert version["created"] is True, version
    return version


@pytest.fixture(scope="module")
def made(sample_lmdb: Path, tmp_path_factory: pytest.TempPathFactory,
         airflow_db: Path) -> dict[str, Any]:
    """A 40-image 32 px dataset, the 60-image set it was cut from, NVIDIA-format stand-in
    pickles of the small preset at 32 px and at 64 px, and both imported as versions."""
    root = tmp_path_factory.mktemp("finetune-dag")
    out: dict[str, Any] = {}
    for name, count in (("ft-cats-32", 40), ("ft-cats-32-all", 60)):
        res = cli("prepare", "lsun", sample_lmdb, "--out", root / name, "--resolution", 32,
                  "--max-images", count)
        assert res.exit_code == 0, res.stderr
        out[name] = store_cli("snapshot", root / name, "--name", name)
    with nvidia_network_class() as cls:
        # seeds of their own: test_train_dag's stand-in (seed 11) stays its own versions
        make_pickle(cls, root / "net-32.pkl", seed=16)
        make_pickle(cls, root / "net-64.pkl", seed=16, extra_kwargs={"resolution": 64})
    for res_px in (32, 64):
        res = cli("import-pkl", root / f"net-{res_px}.pkl", "--out", root / f"net-{res_px}")
        assert res.exit_code == 0, res.stderr
        out[f"ft-net-{res_px}"] = store_cli("snapshot", root / f"net-{res_px}", "--name",
                                            f"ft-net-{res_px}")
    out["pkl"] = root / "net-32.pkl"
    return out


def at(version: dict[str, Any]) -> str:
    return f"{version['name']}@{version['id']}"


def tasks(run: Any) -> dict[str, Any]:
    return {ti.task_id: ti for ti in run.get_task_instances()}


def rendered_arguments(ti: Any) -> list[str]:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields

    args = RenderedTaskInstanceFields.get_templated_fields(ti)["arguments"]
    # a plan value renders to a list within the list; the operator flattens it
    return [str(a) for arg in args for a in (arg if isinstance(arg, list) else [arg])]


def checked_out(ref: str, dest: Path) -> Path:
    store_cli("checkout", ref, dest)
    return dest


def logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr()
    return caplog.text + out.out + out.err


# --- the plan: what each param turns into, without running anything ----------------------

def plan_of(dagbag: Any, **overrides: Any) -> dict[str, Any]:
    """The plan task's own function on the params as the schema resolves them."""
    from airflow.sdk.definitions.param import ParamsDict

    dag = dagbag.dags["stylegan2_train"]
    params = ParamsDict(dag.params)
    params.update(conf(**overrides))
    resolved = params.validate()
    run = SimpleNamespace(run_id="manual__plan-test", run_type="manual")
    return dict(dag.get_task("plan").python_callable(params=resolved, dag_run=run,
                                                     triggering_asset_events=None))


BASE_TRAIN = ["--config", "small", "--total-kimg", "0.1", "--batch", "8", "--resume", "auto",
              "--aug", "none", "--tick-kimg", "0.05", "--snapshot-ticks", "1"]


@pytest.mark.parametrize(("overrides", "extra"), [
    pytest.param({}, [], id="defaults-add-nothing"),
    pytest.param({"init_from": "ft-net-32:v1", "reference_dataset_ref": "x"}, [],
                 id="init-and-reference-are-not-train-flags"),
    pytest.param({"aug": "ada"}, ["--augpipe", "bgc", "--target", "0.6"], id="ada"),
    pytest.param({"ada": True, "augpipe": "bgcfnc", "aug_target": 0.7, "aug_p": 0.1},
                 ["--augpipe", "bgcfnc", "--target", "0.7", "--p", "0.1"],
                 id="ada-switch-with-its-settings"),
    pytest.param({"aug": "ada", "ada_kimg": 10}, ["--augpipe", "bgc", "--target", "0.6",
                                                  "--ada-kimg", "10"], id="ada-speed"),
    pytest.param({"aug": "fixed", "aug_p": 0.2, "augpipe": "blit", "ada_kimg": 10},
                 ["--augpipe", "blit", "--p", "0.2"], id="fixed"),
    pytest.param({"aug_p": 0.3}, [], id="p-without-augmentation-adds-nothing"),
    pytest.param({"freeze_d": 2, "gamma": 0.5}, ["--gamma", "0.5", "--freeze-d", "2"],
                 id="freeze-d-gamma"),
    pytest.param({"train_metrics": "swd", "keep_best": "swd"},
                 ["--metrics", "swd", "--metrics-images", "16", "--keep-best", "swd"],
                 id="metrics-keep-best"),
    pytest.param({"train_metrics": ["swd", "kid50k_full"], "metric_images": None},
                 ["--metrics", "swd,kid50k_full"], id="metrics-from-the-form-uncapped"),
    pytest.param({"mixed_precision": True}, ["--mixed-precision"], id="mixed-precision"),
    pytest.param({"xla": True, "mixed_precision": True}, ["--mixed-precision", "--xla"],
                 id="xla-mixed-precision"),
])
def test_params_become_train_flags(dagbag: Any, overrides: dict[str, Any],
                                   extra: list[str]) -> None:
    plan = plan_of(dagbag, **overrides)
    aug = "ada" if overrides.get("ada") else overrides.get("aug", "none")
    want = [*BASE_TRAIN[:9], aug, *BASE_TRAIN[10:], *extra]
    assert plan["train"][4:] == want


@pytest.mark.parametrize("xla", [False, True])
def test_xla_reaches_train_evaluate_and_generate_and_off_adds_nothing(
        dagbag: Any, xla: bool) -> None:
    plan = plan_of(dagbag, xla=xla)
    flag = ["--xla"] if xla else []
    assert plan["train"][-1:] == (flag or ["1"])  # without: --snapshot-ticks 1 ends it
    assert plan["evaluate"] == ["--data", f"{plan['root']}/dataset", "--metrics", "swd",
                                "--num-images", "16", *flag]
    assert plan["generate"] == ["--seeds", "1", "--truncation-psi", "0.5", *flag]
    assert "--xla" not in plan["project"]


@pytest.mark.parametrize(("overrides", "mode", "evaluate_extra"), [
    pytest.param({}, "none", [], id="from-scratch"),
    pytest.param({"init_from": "pretrained", "pretrained": "/x.pkl"}, "pretrained", [],
                 id="pretrained"),
    pytest.param({"init_from": "my-net:v3"}, "ref", [], id="version"),
    pytest.param({"reference_dataset_ref": "ft-cats-32-all:latest"}, "none",
                 ["--reference-data", "<root>/reference"], id="reference"),
])
def test_the_plan_says_where_training_starts_and_what_evaluations_compare_to(
        dagbag: Any, overrides: dict[str, Any], mode: str, evaluate_extra: list[str]) -> None:
    plan = plan_of(dagbag, **overrides)
    assert plan["init_mode"] == mode
    assert plan["evaluate"] == ["--data", f"{plan['root']}/dataset", "--metrics", "swd",
                                "--num-images", "16",
                                *[a.replace("<root>", plan["root"]) for a in evaluate_extra]]


@pytest.mark.parametrize(("overrides", "message"), [
    pytest.param({"init_from": "pretrained", "pretrained": None},
                 "init_from 'pretrained' starts our network from the pretrained branch's, "
                 "but the param pretrained is empty", id="init-pretrained-without-one"),
    pytest.param({"keep_best": "swd"}, "keep_best 'swd' is not one of train_metrics (none "
                 "given)", id="keep-best-without-metrics"),
    pytest.param({"keep_best": "fid50k", "train_metrics": "swd"},
                 "keep_best 'fid50k' is not one of train_metrics (swd)", id="keep-best-other"),
    pytest.param({"aug": "fixed"}, "aug 'fixed' needs aug_p", id="fixed-without-p"),
    pytest.param({"ada": True, "aug": "fixed", "aug_p": 0.2}, "ada: true asks for adaptive",
                 id="ada-and-fixed"),
])
def test_combinations_that_cannot_work_fail_the_plan_in_one_line(
        dagbag: Any, overrides: dict[str, Any], message: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=re.escape(message)) as exc:
        plan_of(dagbag, **overrides)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(("overrides", "param"), [
    pytest.param({"init_from": "bad ref"}, "init_from", id="init-ref-space"),
    pytest.param({"init_from": "net:"}, "init_from", id="init-ref-colon"),
    pytest.param({"reference_dataset_ref": "../x"}, "reference_dataset_ref",
                 id="reference-dotdot"),
    pytest.param({"train_metrics": "swd,nope"}, "train_metrics", id="train-metric-unknown"),
    pytest.param({"train_metrics": ["nope"]}, "train_metrics", id="train-metric-list"),
    pytest.param({"keep_best": "swd_avg"}, "keep_best", id="keep-best-not-a-metric"),
    pytest.param({"aug": "always"}, "aug", id="aug-unknown"),
    pytest.param({"augpipe": "bgcx"}, "augpipe", id="augpipe-unknown"),
    pytest.param({"aug_p": 1.5}, "aug_p", id="p-above-one"),
    pytest.param({"aug_target": 0}, "aug_target", id="target-zero"),
    pytest.param({"ada_kimg": 0}, "ada_kimg", id="ada-kimg-zero"),
    pytest.param({"freeze_d": -1}, "freeze_d", id="freeze-d-negative"),
    pytest.param({"freeze_d": 1.5}, "freeze_d", id="freeze-d-fraction"),
    pytest.param({"gamma": -1}, "gamma", id="gamma-negative"),
    pytest.param({"xla": "yes"}, "xla", id="xla-not-a-boolean"),
    pytest.param({"mixed_precision": 1}, "mixed_precision", id="mixed-precision-number"),
])
def test_bad_values_are_refused_by_the_schema(dagbag: Any, overrides: dict[str, Any],
                                              param: str) -> None:
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(dagbag.dags["stylegan2_train"].params)
    with pytest.raises(ParamValidationError, match=param):
        params.update(conf(**overrides))
        params.validate()


def test_the_augpipes_are_the_train_commands() -> None:
    from stylegan_airflow.params import AUGPIPES

    from stylegan_ops.cli import train

    choice = next(p for p in train.params if p.name == "augpipe").type
    assert list(AUGPIPES) == list(choice.choices)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("files", "found"), [
    pytest.param({"network-final/config.json": "{}", "config.json": "{}"}, "network-final",
                 id="training-run"),
    pytest.param({"config.json": '{"format": "stylegan-ops-snapshot/1"}', "G.npz": ""}, ".",
                 id="one-snapshot"),
    pytest.param({"network.pkl": ""}, "network.pkl", id="one-pickle"),
    pytest.param({"a.pkl": "", "b.pkl": ""}, None, id="two-pickles"),
    pytest.param({"config.json": '{"train": {}}', "reals.png": ""}, None, id="no-network"),
    pytest.param({"config.json": "[1]"}, None, id="config-not-an-object"),
])
def test_the_network_a_version_holds(dagbag: Any, tmp_path: Path, files: dict[str, str],
                                     found: str | None) -> None:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    network_in = dagbag.dags["stylegan2_train"].get_task("plan").python_callable.__globals__[
        "network_in"]
    assert network_in(tmp_path) == (None if found is None else tmp_path / found)


# --- real runs under dag.test() ------------------------------------------------------------

def test_fine_tune_from_a_version_with_metrics_freeze_d_ada_and_a_reference_set(
        airflow_db: Path, dagbag: Any, made: dict[str, Any], tmp_path: Path) -> None:
    """init_from a network version: checked out, passed as --init, listed in the trained
    version's lineage and key; the other new params reach train and its key; the evaluation
    scores against the reference set and lists it."""
    run = dagbag.dags["stylegan2_train"].test(run_conf=conf(
        init_from="ft-net-32:latest", freeze_d=1, aug="ada", train_metrics="swd",
        keep_best="swd", reference_dataset_ref="ft-cats-32-all:latest", seeds="2"))
    tis = tasks(run)
    states = {t: str(ti.state) for t, ti in tis.items()}
    assert str(run.state) == "success", states
    assert states["init_ours_from_import"] == "skipped" and states["resolve_init_ours"] == "success"
    dataset, net, reference = (at(made[n]) for n in ("ft-cats-32", "ft-net-32",
                                                     "ft-cats-32-all"))

    args = rendered_arguments(tis["train"])
    init = tis["resolve_init_ours"].xcom_pull(task_ids="resolve_init_ours")["out"]
    assert args[args.index("--init") + 1] == init and init.endswith("/init")
    trained = made_by(tis, "commit_trained_network")
    assert trained["lineage"]["inputs"] == [dataset, net]
    parts = trained["lineage"]["cache"]["parts"]
    assert parts["inputs"] == [dataset, net]
    keyed = parts["args"]  # the new params, through train's arguments
    for flag, value in (("--freeze-d", "1"), ("--aug", "ada"), ("--augpipe", "bgc"),
                        ("--metrics", "swd"), ("--keep-best", "swd"),
                        ("--metrics-images", "16")):
        assert keyed[keyed.index(flag) + 1] == value, flag
    assert "--init" not in keyed and not any(a.startswith("<run>/init") for a in keyed)

    run_dir = checked_out(f"{trained['name']}@{trained['id']}", tmp_path / "trained")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["init"]["source"] == init and len(config["init"]["sha256"]) == 64
    assert (config["train"]["freeze_d"], config["train"]["aug"]) == (1, "ada")
    rows = [json.loads(line) for line in (run_dir / "metric-swd.jsonl").read_text().splitlines()]
    assert [r["snapshot"] for r in rows] == sorted(p.name for p in run_dir.glob(
        "network-snapshot-*"))
    assert all(isinstance(r["kimg"], float) and "swd_avg" in r["results"] for r in rows), rows
    best = json.loads((run_dir / "best.json").read_text())
    assert best["snapshot"] in [r["snapshot"] for r in rows]
    assert (run_dir / "network-best" / "Gs.npz").is_file()

    evaluation = made_by(tis, "commit_ours_evaluation")
    assert evaluation["lineage"]["inputs"] == [
        f"stylegan2-trained-network@{trained['id']}", dataset, reference]
    assert reference in evaluation["lineage"]["cache"]["parts"]["inputs"]
    eval_args = rendered_arguments(tis["evaluate_ours"])
    assert eval_args[eval_args.index("--reference-data") + 1].endswith("/reference")


def test_fine_tune_from_the_pretrained_branch_waits_for_its_import(
        airflow_db: Path, dagbag: Any, made: dict[str, Any], tmp_path: Path) -> None:
    run = dagbag.dags["stylegan2_train"].test(run_conf=conf(
        pretrained=str(made["pkl"]), init_from="pretrained", seeds="3"))
    tis = tasks(run)
    states = {t: str(ti.state) for t, ti in tis.items()}
    assert str(run.state) == "success", states
    assert (states["resolve_init_ours"], states["init_ours_from_import"]) == ("skipped", "success")
    assert tis["commit_pretrained_network"].end_date <= tis["train"].start_date
    pre = made_by(tis, "commit_pretrained_network")
    imported = tis["import_pretrained"].xcom_pull(task_ids="import_pretrained")["out"]
    args = rendered_arguments(tis["train"])
    assert args[args.index("--init") + 1] == imported
    trained = made_by(tis, "commit_trained_network")
    assert trained["lineage"]["inputs"] == [at(made["ft-cats-32"]),
                                            f"stylegan2-pretrained-network@{pre['id']}"]
    assert trained["lineage"]["cache"]["parts"]["inputs"] == trained["lineage"]["inputs"]
    run_dir = checked_out(f"{trained['name']}@{trained['id']}", tmp_path / "trained")
    assert json.loads((run_dir / "config.json").read_text())["init"]["source"] == imported


@pytest.mark.parametrize(("overrides", "failed", "message"), [
    pytest.param({"init_from": "ft-net-64:latest"}, "train",
                 "the network does not match preset small: resolution 64 (preset small: 32)",
                 id="64px-network-into-the-32px-preset"),
    pytest.param({"init_from": "ft-net-32:v9"}, "resolve_init_ours", "init_from 'ft-net-32:v9': ",
                 id="no-such-version"),
    pytest.param({"init_from": "pretrained"}, "plan",
                 "init_from 'pretrained' starts our network from the pretrained branch's",
                 id="pretrained-without-one"),
])
def test_an_init_that_cannot_work_fails_its_task_in_one_line(
        airflow_db: Path, dagbag: Any, made: dict[str, Any], overrides: dict[str, Any],
        failed: str, message: str, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    dag = dagbag.dags["stylegan2_train"]
    # a refused init fails every try alike; one try is enough to read its message
    dag.get_task("train").retries = 0
    capsys.readouterr()
    run = dag.test(run_conf=conf(**overrides))
    states = {t: str(ti.state) for t, ti in tasks(run).items()}
    assert str(run.state) == "failed", states
    assert states[failed] == "failed", states
    assert states["commit_trained_network"] == "upstream_failed", states
    lines = [ln for ln in logged(caplog, capsys).splitlines() if message in ln]
    assert lines, message
