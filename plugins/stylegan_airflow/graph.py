"""A DAG as a Graphviz graph, nodes coloured by function, generated from its definition.

The functions follow the original demo's figure (data, pretrained model, own model, repo)
plus versioning. Each task is classified by a table of rules over its operator classes and
task id; the first rule that matches wins and a task no rule matches is "other", which
still has a colour. Works on DAGs parsed from files and on serialized DAGs from the DB.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError

FORMATS = ("dot", "svg")
DAG_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")


@dataclass(frozen=True)
class Function:
    """A function a task can serve, with its legend label and fill colour."""

    key: str
    label: str
    colour: str


FUNCTIONS = {f.key: f for f in (
    Function("data", "data preparation", "#8ecae6"),
    Function("pretrained", "pretrained branch", "#ffb74d"),
    Function("own", "own model", "#81c784"),
    Function("versioning", "versioning", "#ce93d8"),
    Function("repo", "repo trigger", "#ef9a9a"),
    Function("other", "other (control flow)", "#e0e0e0"),
)}


@dataclass(frozen=True)
class TaskInfo:
    """What classification needs to know about a task."""

    task_id: str
    classes: frozenset[str]  # operator class and its bases, by name
    mapped: bool
    downstream: tuple[str, ...]
    operator: str = ""  # the operator's class name, shown as a tooltip


def _matches(pattern: str) -> Callable[[TaskInfo], bool]:
    regex = re.compile(pattern)
    return lambda t: bool(regex.search(t.task_id))


def _is(*names: str) -> Callable[[TaskInfo], bool]:
    return lambda t: bool(t.classes & set(names))


def _is_sensor(t: TaskInfo) -> bool:
    return any(c.endswith("Sensor") for c in t.classes)


# (function, rule) in priority order: a commit of a pretrained network is versioning.
RULES: list[tuple[str, Callable[[TaskInfo], bool]]] = [
    ("versioning", _is("DatasetVersionOperator")),
    ("repo", _is("TriggerDagRunOperator")),
    ("repo", _is_sensor),
    ("repo", _matches(r"^(watch|trigger|remember|plan_runs)")),
    ("pretrained", _matches(r"pretrained")),
    ("own", _matches(r"(^|_)(train|trained|ours)(_|$)")),
    ("data", _matches(r"download|unzip|extract|merge|inspect|sample|shard|dataset|source|"
                      r"prepare|montage|lmdb|reals")),
]


def classify(task: TaskInfo) -> Function:
    """The function of a task: the first matching rule, else "other"."""
    for key, rule in RULES:
        if rule(task):
            return FUNCTIONS[key]
    return FUNCTIONS["other"]


def task_info(task: Any) -> TaskInfo:
    """Class names, mapping and edges of a parsed or serialized Airflow task."""
    task_type = str(getattr(task, "task_type", "") or "")
    classes = {task_type} if task_type else set()
    op_class = getattr(task, "operator_class", None)
    if not isinstance(op_class, type) and not type(task).__name__.startswith("Serialized"):
        op_class = type(task)  # serialized tasks only know their class by name (task_type)
    if isinstance(op_class, type):
        classes.update(c.__name__ for c in op_class.__mro__)
    return TaskInfo(task.task_id, frozenset(classes), bool(getattr(task, "is_mapped", False)),
                    tuple(sorted(task.downstream_task_ids)), task_type)


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(dag_id: str, tasks: Iterable[TaskInfo], title: str | None = None) -> str:
    """The DOT text: tasks left to right, coloured by function, plus a legend cluster."""
    tasks = sorted(tasks, key=lambda t: t.task_id)
    lines = [f"digraph {_q(dag_id)} {{",
             f"  graph [rankdir=LR, fontname=Helvetica, fontsize=12, labelloc=t, "
             f"label={_q(title or dag_id)}];",
             '  node [shape=box, style="rounded,filled", fontname=Helvetica, fontsize=11, '
             'color="#555555"];',
             '  edge [color="#666666", arrowsize=0.7];']
    for t in tasks:
        fn = classify(t)
        label = t.task_id + (" [ ]" if t.mapped else "")  # Airflow's mark for mapped tasks
        op = "@task" if t.operator.startswith("_") else t.operator
        tooltip = f"{t.task_id}: {fn.label}" + (f" ({op})" if op else "")
        extra = ", peripheries=2" if t.mapped else ""
        lines.append(f"  {_q('task:' + t.task_id)} [label={_q(label)}, "
                     f"fillcolor={_q(fn.colour)}, tooltip={_q(tooltip)}, "
                     f"class={_q('fn_' + fn.key)}{extra}];")
    for t in tasks:
        for down in t.downstream:
            lines.append(f"  {_q('task:' + t.task_id)} -> {_q('task:' + down)};")
    rows = "".join(
        f'<TR><TD BGCOLOR="{fn.colour}" WIDTH="18"> </TD><TD ALIGN="LEFT">{fn.label}</TD></TR>'
        for fn in FUNCTIONS.values())
    lines.append("  subgraph cluster_legend {")
    lines.append('    label="function"; style="rounded"; color="#999999"; fontsize=11;')
    lines.append('    "legend" [shape=plain, style="", class="legend", label=<<TABLE BORDER="0" '
                 f'CELLBORDER="1" CELLSPACING="3" CELLPADDING="4">{rows}</TABLE>>];')
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=64)
def to_svg(dot: str) -> str:
    """Render DOT text with Graphviz's ``dot``; cached by the text itself."""
    exe = shutil.which("dot")
    if exe is None:
        raise StageError("Graphviz `dot` not found on PATH (Debian: apt-get install graphviz)")
    proc = subprocess.run([exe, "-Tsvg"], input=dot.encode(), capture_output=True,
                          timeout=60, check=False)
    if proc.returncode != 0:
        raise StageError(f"dot failed: {proc.stderr.decode(errors='replace').strip()[:300]}")
    return proc.stdout.decode()


def check_dag_id(dag_id: str) -> str:
    """``dag_id`` if it is a DAG id (Airflow's characters, not only dots), else StageError."""
    if not DAG_ID_RE.match(dag_id) or not dag_id.strip("."):
        raise StageError(f"invalid DAG id {dag_id!r}")
    return dag_id


def load_dag(dag_id: str, dag_folder: str | None = None) -> Any:
    """Parse ``dag_id`` from the DAG folder (its own file first, if named after it)."""
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    check_dag_id(dag_id)
    folder = Path(dag_folder or conf.get("core", "dags_folder"))
    own_file = folder / f"{dag_id}.py"
    bag = DagBag(str(own_file if own_file.is_file() else folder))
    if dag_id not in bag.dags and own_file.is_file():
        bag = DagBag(str(folder))
    if dag_id not in bag.dags:
        errors = "; ".join(f"{Path(f).name}: {str(e).strip().splitlines()[-1]}"
                           for f, e in bag.import_errors.items())
        raise StageError(f"unknown DAG {dag_id!r} in {folder}"
                         + (f" (import errors: {errors})" if errors else ""))
    return bag.dags[dag_id]


def render_dag(dag: Any, fmt: str) -> str:
    """DOT or SVG text for a parsed or serialized DAG object."""
    if fmt not in FORMATS:
        raise StageError(f"unknown graph format {fmt!r}; use one of {', '.join(FORMATS)}")
    title = f"{dag.dag_id}: tasks coloured by function"
    dot = to_dot(dag.dag_id, (task_info(t) for t in dag.tasks), title)
    return dot if fmt == "dot" else to_svg(dot)


def render(dag_id: str, fmt: str, dag_folder: str | None = None) -> str:
    """``dag_id`` from the DAG folder as Graphviz ``dot`` text or ``svg``."""
    if fmt not in FORMATS:
        raise StageError(f"unknown graph format {fmt!r}; use one of {', '.join(FORMATS)}")
    return render_dag(load_dag(dag_id, dag_folder), fmt)
