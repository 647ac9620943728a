"""stylegan2_prepare end to end under dag.test() with the local runner."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli

pytestmark = pytest.mark.airflow

CONF = {"source_url": "sample", "sample_count": 40, "resolution": 16, "max_images": 30,
        "shards": 3, "dataset_name": "sample-cats-16", "tags": ["ci"],
        "git_commit": "0123456789abcdef0123456789abcdef01234567"}


def test_prepare_on_the_sample_commits_a_version_with_lineage(airflow_db: Path,
                                                              dagbag: Any) -> None:
    dag = dagbag.dags["stylegan2_prepare"]
    run = dag.test(run_conf=CONF)
    assert str(run.state) == "success"
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states["download"] == states["unzip"] == "skipped"
    assert states["commit"] == states["merge"] == "success"
    store = os.environ["STYLEGAN_STORE"]
    res = cli("store", "--store", store, "show", "sample-cats-16:ci")
    assert res.exit_code == 0, res.stderr
    version = json.loads(res.stdout)
    lineage = version["lineage"]
    assert (lineage["dag_id"], lineage["task_id"], lineage["run_id"]) == (
        "stylegan2_prepare", "commit", run.run_id)
    assert lineage["git_commit"] == CONF["git_commit"] and lineage["try_number"] == 1
    assert lineage["params"]["max_images"] == 30
    files = {f["path"] for f in version["manifest"]["files"]}
    assert {"sample-cats-16-r02.tfrecords", "sample-cats-16-r04.tfrecords", "dataset.json",
            "reals.png"} <= files
    out = Path(store).parent / "checkout"
    assert cli("store", "--store", store, "checkout", "sample-cats-16:latest", out).exit_code == 0
    assert json.loads((out / "dataset.json").read_text())["count"] == 30
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.query(AssetEvent).all()
        assert any((e.extra or {}).get("version_id") == version["id"] for e in events)


def served_zip(sample_lmdb: Path, root: Path) -> dict[str, bytes]:
    """LSUN's cat.zip layout (``cat/data.mdb``, ``cat/lock.mdb``) and its md5sum line."""
    import hashlib
    import zipfile

    archive = root / "cat.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(sample_lmdb / "data.mdb", "cat/data.mdb")
        zf.writestr("cat/lock.mdb", bytes(8192))  # LSUN ships the writer's lock file too
    body = archive.read_bytes()
    return {"/cat.zip": body,
            "/cat.zip.md5": f"{hashlib.md5(body).hexdigest()}  cat.zip\n".encode()}


def reuses(run: Any) -> dict[str, str | None]:
    """Each stage task of ``run``: the ref it reused, or None when its stage ran."""
    out = {}
    for ti in run.get_task_instances():
        if ti.task_id in ("download", "unzip", "extract", "merge", "inspect") and \
                str(ti.state) == "success":
            value = ti.xcom_pull(task_ids=ti.task_id, key="reuse", map_indexes=ti.map_index)
            out[ti.task_id] = value["version"]["ref"] if value else None
    return out


def test_a_rerun_reuses_the_download_unzip_and_extraction(airflow_db: Path, dagbag: Any,
                                                          sample_lmdb: Path,
                                                          tmp_path: Path) -> None:
    from tests.httpserver import LoopbackServer, Plan

    plan = Plan(files=served_zip(sample_lmdb, tmp_path))
    with LoopbackServer(plan) as server:
        conf = {**CONF, "source_url": f"{server.url}/cat.zip",
                "md5_url": f"{server.url}/cat.zip.md5", "dataset_name": "zip-cats-16",
                "shards": 2, "tags": []}
        dag = dagbag.dags["stylegan2_prepare"]
        first = dag.test(run_conf=conf)
        assert str(first.state) == "success"
        assert set(reuses(first).values()) == {None}
        fetched = [r for r in plan.requests if r[0] == "/cat.zip"]
        assert fetched

        again = dag.test(run_conf=conf)
        assert str(again.state) == "success"
        assert reuses(again) == {"download": "lsun-cat-zip:v1", "unzip": "lsun-cat-lmdb:v1",
                                 "extract": "zip-cats-16:v1", "merge": "zip-cats-16:v1",
                                 "inspect": "zip-cats-16:v1"}
        assert [r for r in plan.requests if r[0] == "/cat.zip"] == fetched  # no new GET

        # another resolution: the same download and LMDB, a new extraction
        bigger = dag.test(run_conf={**conf, "resolution": 32})
        assert str(bigger.state) == "success"
        assert reuses(bigger) == {"download": "lsun-cat-zip:v1", "unzip": "lsun-cat-lmdb:v1",
                                  "extract": None, "merge": None, "inspect": None}
        # without a checksum nothing proves the URL still serves the same bytes
        unchecked = dag.test(run_conf={**conf, "md5_url": None})
        assert str(unchecked.state) == "success"
        assert reuses(unchecked)["download"] is None
        assert len([r for r in plan.requests if r[0] == "/cat.zip"]) > len(fetched)
    store = os.environ["STYLEGAN_STORE"]
    res = cli("store", "--store", store, "show", "zip-cats-16:v1")
    lineage = json.loads(res.stdout)["lineage"]
    lmdb = json.loads(cli("store", "--store", store, "show", "lsun-cat-lmdb:v1").stdout)
    assert lineage["inputs"] == [f"lsun-cat-lmdb@{lmdb['id']}"]
    assert lineage["cache"]["parts"]["inputs"] == lineage["inputs"]
    assert "--shard" not in lineage["cache"]["parts"]["args"]
