"""Orchestration overhead: a no-op stage (`stylegan-ops info`) run directly, through the
local runner and through the docker runner, and the parse time of each DAG file.

Targets: local runner overhead < 1 s, docker runner < 3 s, parse < 0.5 s per DAG file.
Usage: python benchmarks/orchestration_overhead.py [--repeat 5] [--image IMAGE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def median_time(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--image", default="stylegan-airflow/stage-cpu:0.1.0")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="stylegan-bench-"))
    (tmp / "profiles.yaml").write_text(
        f"cpu: {{runner: local}}\ndocker: {{runner: docker, image: '{args.image}'}}\n")
    os.environ.update({"STYLEGAN_PROFILES": str(tmp / "profiles.yaml"),
                       "STYLEGAN_WORKSPACE": str(tmp / "ws"),
                       "STYLEGAN_STORE": str(tmp / "store"),
                       "AIRFLOW_HOME": str(tmp / "airflow")})

    # DAG parsing as the dag-processor does it: Airflow already imported, one file at a time.
    parse_code = (
        "import sys, time, json\n"
        "import airflow.sdk\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "out = {}\n"
        f"for f in sorted(__import__('pathlib').Path({str(ROOT / 'dags')!r}).glob('*.py')):\n"
        "    t = time.perf_counter(); b = DagBag(str(f)); out[f.name] = time.perf_counter() - t\n"
        "    assert not b.import_errors, b.import_errors\n"
        "print(json.dumps(out))\n")
    parse = subprocess.run([sys.executable, "-c", parse_code], capture_output=True, text=True,
                           check=True, env=os.environ)
    parse_times = __import__("json").loads(parse.stdout.splitlines()[-1])

    direct = median_time(lambda: subprocess.run(
        [sys.executable, "-m", "stylegan_ops.cli", "info"], capture_output=True, check=True),
        args.repeat)

    from stylegan_airflow.operators import StageOperator

    ti = SimpleNamespace(dag_id="bench", run_id="r", task_id="info", try_number=1,
                         map_index=-1, xcom_push=lambda key, value: None)
    local_op = StageOperator(task_id="info", stage="info", profile="cpu")
    local = median_time(lambda: local_op.execute({"ti": ti}), args.repeat)
    docker_ok = subprocess.run(["docker", "image", "inspect", args.image], capture_output=True,
                               check=False).returncode == 0
    docker = None
    if docker_ok:
        docker_op = StageOperator(task_id="info", stage="info", profile="docker")
        docker = median_time(lambda: docker_op.execute({"ti": ti}), args.repeat)

    print(f"\nno-op stage, median of {args.repeat}, {os.cpu_count()} cores")
    print(f"direct `stylegan-ops info`       {direct:6.2f} s")
    print(f"local runner                    {local:6.2f} s   overhead {local - direct:+.2f} s"
          "  (target < 1 s)")
    if docker is not None:
        print(f"docker runner                   {docker:6.2f} s   overhead "
              f"{docker - direct:+.2f} s  (target < 3 s)")
    else:
        print(f"docker runner                   (image {args.image} not built: "
              "images/build.sh stage-cpu)")
    for name, seconds in parse_times.items():
        print(f"parse {name:26s} {seconds:6.3f} s  (target < 0.5 s)")


if __name__ == "__main__":
    main()
