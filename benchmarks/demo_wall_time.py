"""Wall time per task of the latest stylegan2_prepare and stylegan2_train runs, and the
share of the total spent outside stage code (target: orchestration < 10%).

Reads the Airflow metadata database of ``$AIRFLOW_HOME`` (``make demo`` leaves one in
demo-out/airflow). Stage time is what the stage process itself took (the StageOperator
records it as the ``stage_seconds`` XCom); the rest of a run's wall time is Airflow
(scheduling, task start-up) and the pipeline's own Python tasks (plans, store commits,
checkout). ``--summary`` also prints what ``make demo`` produced.

Usage: AIRFLOW_HOME=demo-out/airflow python benchmarks/demo_wall_time.py [--summary]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

TARGET = 0.10
DAGS = ("stylegan2_prepare", "stylegan2_train")


def latest_run(dag_id: str) -> dict[str, Any] | None:
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        run = (session.query(DagRun).filter(DagRun.dag_id == dag_id)
               .order_by(DagRun.start_date.desc()).first())
        if run is None or run.end_date is None:
            return None
        tasks = {}
        for ti in run.get_task_instances(session=session):
            if ti.start_date is None or ti.end_date is None:
                continue
            tasks[(ti.task_id, ti.map_index)] = {
                "state": str(ti.state), "seconds": (ti.end_date - ti.start_date).total_seconds(),
                "stage": None}
        rows = session.query(XComModel).filter(XComModel.dag_id == dag_id,
                                               XComModel.run_id == run.run_id,
                                               XComModel.key == "stage_seconds").all()
        for row in rows:
            key = (row.task_id, row.map_index)
            if key in tasks:
                tasks[key]["stage"] = float(XComModel.deserialize_value(row))
        return {"run_id": run.run_id, "state": str(run.state),
                "wall": (run.end_date - run.start_date).total_seconds(), "tasks": tasks}


def report(dag_id: str, run: dict[str, Any]) -> tuple[float, float, float]:
    print(f"\n{dag_id}  run {run['run_id']}  {run['state']}  wall {run['wall']:.1f} s")
    print(f"  {'task':34} {'state':9} {'task s':>8} {'stage s':>8}")
    order = sorted(run["tasks"].items(), key=lambda kv: kv[0])
    for (task_id, index), t in order:
        name = task_id if index < 0 else f"{task_id}[{index}]"
        stage = "" if t["stage"] is None else f"{t['stage']:8.1f}"
        print(f"  {name:34} {t['state'][:9]:9} {t['seconds']:8.1f} {stage:>8}")
    stage = sum(t["stage"] or 0.0 for t in run["tasks"].values())
    tasks = sum(t["seconds"] for t in run["tasks"].values())
    return run["wall"], stage, tasks


def summary() -> None:
    from stylegan_ops.store.local import Store

    store = Store(Path(os.environ["STYLEGAN_STORE"]))
    runs = {dag: latest_run(dag) for dag in DAGS}
    run_ids = {r["run_id"] for r in runs.values() if r}
    print("\nVersions (latest of each name; identical content keeps its earlier number):")
    produced = {}
    for name in store.names():
        versions = store.versions(name)
        if not versions:
            continue
        v = versions[-1]
        produced[name] = v
        made = "this run" if v.lineage.run_id in run_ids else f"run {v.lineage.run_id}"
        inputs = ", ".join(i.split("@")[0] for i in v.lineage.inputs) or "-"
        print(f"  {v.ref:38} {v.id[:12]}  {v.file_count:4} files  inputs: {inputs:40} "
              f"({made})")
    for name in ("stylegan2-evaluation-pretrained", "stylegan2-evaluation-ours"):
        if name in produced:
            print(f"Metrics ({name}): {produced[name].meta.get('metrics')}")
    if "stylegan2-pretrained-network" not in produced:
        print("Pretrained branch: skipped (no network file and no network access)")
    train = runs.get("stylegan2_train")
    if train:
        from stylegan_airflow.paths import run_dir

        base = Path(run_dir("stylegan2_train", train["run_id"]))
        grids = sorted((base / "train").glob("fakes*.png"))
        print(f"Images:\n  reals:     {base / 'dataset' / 'reals.png'}")
        print(f"  fakes:     {', '.join(str(g) for g in grids) or '-'}")
        for gen in sorted(base.glob("generated-*")):
            print(f"  {gen.name.rsplit('-', 1)[0]}: {gen}/seed*.png")
    print("Browse them: stylegan-ops store list; stylegan-ops store checkout "
          "stylegan2-generated-ours:latest DIR")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", action="store_true", help="also list what was made")
    args = parser.parse_args()
    total_wall = total_stage = total_tasks = 0.0
    for dag_id in DAGS:
        run = latest_run(dag_id)
        if run is None:
            print(f"\n{dag_id}: no finished run in {os.environ.get('AIRFLOW_HOME')}")
            continue
        wall, stage, tasks = report(dag_id, run)
        total_wall, total_stage, total_tasks = (total_wall + wall, total_stage + stage,
                                                total_tasks + tasks)
    if total_wall:
        outside = 1 - total_stage / total_wall
        between = 1 - total_tasks / total_wall
        print(f"\nTotal wall {total_wall:.1f} s, in stage processes {total_stage:.1f} s: "
              f"outside stage code {outside:.1%} (target < {TARGET:.0%}); "
              f"between tasks (scheduling alone) {between:.1%}")
    if args.summary:
        summary()


if __name__ == "__main__":
    main()
