"""The workflow graph: every task coloured by function, a legend, DOT that Graphviz renders."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stylegan_ops.errors import StageError
from tests.airflow.conftest import ROOT
from tests.conftest import need

pytestmark = pytest.mark.airflow

DAGS = ROOT / "dags"
SAMPLE = Path(__file__).resolve().parent / "dags"
NODE_RE = re.compile(r'^\s+"task:(.+?)" \[label=.*?fillcolor="(#[0-9a-f]{6})".*?class="fn_(\w+)"',
                     re.M)


def nodes(dot: str) -> dict[str, tuple[str, str]]:
    """task id → (colour, function) from the DOT text."""
    return {m.group(1).replace('\\"', '"'): (m.group(2), m.group(3))
            for m in NODE_RE.finditer(dot)}


def dag_tasks(folder: Path, dag_id: str) -> set[str]:
    from airflow.dag_processing.dagbag import DagBag

    return set(DagBag(str(folder / f"{dag_id}.py")).dags[dag_id].task_dict)


def renders(dot: str) -> str:
    need(shutil.which("dot") is not None, "Graphviz `dot` not installed (apt-get install graphviz)")
    proc = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    return proc.stdout


@pytest.mark.parametrize(("dag_id", "expected"), [
    pytest.param("stylegan2_prepare", {"download": "data", "unzip": "data", "extract": "data",
                                       "merge": "data", "make_sample": "data",
                                       "commit": "versioning", "plan": "other"}, id="prepare"),
    pytest.param("stylegan2_watch_repo", {"watch": "repo", "trigger": "repo",
                                          "plan_runs": "repo", "remember_head": "repo"},
                 id="watch-repo"),
])
def test_every_task_of_the_product_dags_has_a_colour(dag_id: str,
                                                     expected: dict[str, str]) -> None:
    from stylegan_airflow.graph import FUNCTIONS, render

    dot = render(dag_id, "dot", str(DAGS))
    found = nodes(dot)
    assert set(found) == dag_tasks(DAGS, dag_id)  # every task, nothing else
    colours = {f.colour for f in FUNCTIONS.values()}
    assert all(colour in colours for colour, _ in found.values())
    assert {t: fn for t, (_, fn) in found.items() if t in expected} == expected
    for fn in FUNCTIONS.values():  # the legend names every function with its colour
        assert f'BGCOLOR="{fn.colour}"' in dot and fn.label in dot
    svg = renders(dot)
    assert svg.count('class="node fn_') == len(found)


def test_edges_follow_the_dag() -> None:
    from stylegan_airflow.graph import render

    dot = render("stylegan2_prepare", "dot", str(DAGS))
    assert '"task:inspect" -> "task:commit";' in dot
    assert '"task:make_sample" -> "task:commit_sample";' in dot
    assert '"task:commit_sample" -> "task:extract";' in dot
    assert '"task:extract" [label="extract [ ]"' in dot and "peripheries=2" in dot  # mapped


def test_own_dag_classifies_by_operator_and_id_and_has_an_other() -> None:
    from stylegan_airflow.graph import FUNCTIONS, render

    dot = render("graph_sample", "dot", str(SAMPLE))
    assert {t: fn for t, (_, fn) in nodes(dot).items()} == {
        "wait_for_quiet": "repo", "shard_plan": "data", "extract": "data",
        "evaluate_pretrained": "pretrained", "train": "own",
        "commit_everything": "versioning", "make_coffee": "other"}
    assert nodes(dot)["make_coffee"][0] == FUNCTIONS["other"].colour
    svg = render("graph_sample", "svg", str(SAMPLE))
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "coffee" in svg


def test_labels_are_quoted_for_dot() -> None:
    from stylegan_airflow.graph import TaskInfo, to_dot

    odd = TaskInfo('say "hi" \\ bye', frozenset({"PythonOperator"}), False, ())
    dot = to_dot('odd "dag"', [odd])
    assert nodes(dot) == {'say "hi" \\\\ bye': ("#e0e0e0", "other")}
    assert "say" in renders(dot)


def test_the_train_dag_has_both_branches() -> None:
    from stylegan_airflow.graph import render

    found = nodes(render("stylegan2_train", "dot", str(DAGS)))
    fns = {fn for _, fn in found.values()}
    assert {"pretrained", "own", "versioning", "data"} <= fns
    assert found["train"][1] == "own" and found["fetch_pretrained"][1] == "pretrained"
    assert all(colour for colour, _ in found.values())


def test_serialized_dags_classify_like_parsed_ones() -> None:
    """The page draws DAGs from Airflow's DB, where tasks are serialized records."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization
    from stylegan_airflow.graph import render, render_dag

    dag = DagBag(str(SAMPLE / "graph_sample.py")).dags["graph_sample"]
    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert nodes(render_dag(serialized, "dot")) == nodes(render("graph_sample", "dot",
                                                                str(SAMPLE)))


@pytest.mark.parametrize(("dag_id", "fmt", "message"), [
    pytest.param("no_such_dag", "dot", "unknown DAG 'no_such_dag'", id="unknown-dag"),
    pytest.param("stylegan2_prepare", "png", "unknown graph format 'png'", id="bad-format"),
    pytest.param("../etc/passwd", "dot", "invalid DAG id", id="traversal"),
])
def test_bad_arguments_are_stage_errors_naming_them(dag_id: str, fmt: str,
                                                    message: str) -> None:
    from stylegan_airflow.graph import render

    with pytest.raises(StageError, match=re.escape(message)):
        render(dag_id, fmt, str(DAGS))


def test_the_cli_draws_the_train_dag(tmp_path: Path) -> None:
    from tests.conftest import cli_subprocess

    dags = Path(__file__).resolve().parents[2] / "dags"
    res = cli_subprocess("graph", "stylegan2_train", "--format", "dot", "--dags", dags)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("digraph") and "fn_own" in res.stdout
    if shutil.which("dot"):
        subprocess.run(["dot", "-Tsvg"], input=res.stdout, text=True, check=True,
                       capture_output=True)
    res = cli_subprocess("graph", "stylegan2_train", "--out", tmp_path / "g.svg", "--dags", dags)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "g.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    bad = cli_subprocess("graph", "no_such_dag", "--dags", dags)
    assert bad.returncode == 2 and "unknown DAG 'no_such_dag'" in bad.stderr
