"""stylegan2_prepare: LSUN cat.zip (or the embedded sample) → a versioned TFRecord dataset.

download → commit the zip → unzip → commit the LMDB (or: make the sample LMDB → commit it)
→ extract (one mapped task per shard) → merge → inspect → commit the dataset.
Each stage first looks for a version made with its cache key (a download: the same URL and
checksum; unzip: the same zip version; extract: the same LMDB version, resolution and
count) and then does no work. Parsing imports neither TensorFlow nor the stage code and
does no I/O.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task
from stylegan_airflow.operators import DatasetVersionOperator, StageOperator
from stylegan_airflow.params import (
    CACHE_PARAMS,
    DEFAULT_PROFILES,
    GIT_COMMIT_PATTERN,
    NAME_PATTERN,
    TAG_ITEMS,
    URL_PATTERN,
)
from stylegan_airflow.paths import run_dir
from stylegan_airflow.reuse import Reuse

LSUN_CAT = "http://dl.yf.io/lsun/objects/cat.zip"

PARAMS = {
    "source_url": Param(LSUN_CAT, type="string",
                        anyOf=[{"const": "sample"}, {"pattern": URL_PATTERN}],
                        description="http(s) URL of LSUN's cat.zip (default: the official "
                                    "mirror), or sample for a small generated LMDB."),
    "md5_url": Param(LSUN_CAT + ".md5", type=["string", "null"], pattern=URL_PATTERN,
                     description="http(s) URL of the published .md5 to check the download "
                                 "against (default: the mirror's); empty: no check."),
    "sample_count": Param(1000, type="integer", minimum=1, maximum=100000,
                          description="Images in the generated sample LMDB when source_url "
                                      "is sample (default 1000; 1-100000)."),
    "resolution": Param(256, type="integer", enum=[4, 8, 16, 32, 64, 128, 256, 512, 1024],
                        description="Output resolution in pixels, a power of two from 4 to "
                                    "1024 (default 256)."),
    "max_images": Param(1000, type=["integer", "null"], minimum=1,
                        description="Keep the first N decodable images (default 1000); "
                                    "empty: all of them."),
    "shards": Param(2, type="integer", minimum=1, maximum=256,
                    description="Parallel extraction tasks (default 2; 1-256)."),
    "dataset_name": Param("lsun-cat-256", type="string", pattern=NAME_PATTERN,
                          description="Name of the dataset version to create: lowercase ASCII "
                                      "letters, digits, . _ -, e.g. lsun-cat-256 (the "
                                      "default)."),
    "source_name": Param("lsun-cat", type="string", pattern=NAME_PATTERN,
                         description="Name stem of the source versions: the download is "
                                     "committed as <stem>-zip, the unzipped LMDB as "
                                     "<stem>-lmdb (default lsun-cat; the sample LMDB is "
                                     "sample-lmdb)."),
    "tags": Param([], type=["null", "array"], items=TAG_ITEMS, uniqueItems=True,
                  description="Tags to set on the new version, e.g. nightly; ASCII letters, "
                              "digits, . _ -, not latest or vN. Optional (default: none)."),
    "profile": Param("cpu", type="string", minLength=1, examples=list(DEFAULT_PROFILES),
                     description="Resource profile every stage runs under (default cpu); the "
                                 f"packaged profiles are {' and '.join(DEFAULT_PROFILES)}, a "
                                 "STYLEGAN_PROFILES file may add others."),
    "git_commit": Param(None, type=["string", "null"], pattern=GIT_COMMIT_PATTERN,
                        description="Commit of the pipeline repo this run came from (7-64 hex "
                                    "digits); set by the repo watcher, leave empty by hand."),
    **CACHE_PARAMS,
}

def plan_dir(key: str) -> str:
    return f"{{{{ ti.xcom_pull(task_ids='plan', key='{key}') }}}}"


with DAG(
    dag_id="stylegan2_prepare",
    description="Download LSUN cats, extract NVIDIA TFRecords, commit a dataset version",
    schedule=None,
    catchup=False,
    params=PARAMS,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["stylegan2"],
    render_template_as_native_obj=True,
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True)
    def plan(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        """Every stage's arguments, from the params and this run's directory."""
        root = run_dir("stylegan2_prepare", dag_run.run_id)
        sample = params["source_url"] == "sample"
        lmdb = f"{root}/sample-lmdb" if sample else f"{root}/lsun/cat"
        dataset = f"{root}/dataset/{params['dataset_name']}"
        shards = int(params["shards"])
        download = [params["source_url"], "--out", f"{root}/download/cat.zip"]
        if params["md5_url"]:
            download += ["--md5-url", params["md5_url"]]
        return {
            "sample": ["--out", lmdb, "--count", str(params["sample_count"])],
            "sample_dir": lmdb,
            "download": download,
            "download_dir": f"{root}/download",
            "unzip": [f"{root}/download/cat.zip", "--out", f"{root}/lsun"],
            "lsun_dir": f"{root}/lsun",
            "merge": [*(f"{root}/shards/{i}" for i in range(shards)), "--out", dataset],
            "inspect": [dataset],
            "dataset": dataset,
        }

    @task
    def shard_plan(params: dict[str, Any], dag_run: Any = None) -> list[list[str]]:
        """One argument list per extraction shard (the mapped task's expansion)."""
        root = run_dir("stylegan2_prepare", dag_run.run_id)
        lmdb = f"{root}/sample-lmdb" if params["source_url"] == "sample" else f"{root}/lsun/cat"
        common = [lmdb, "--resolution", str(params["resolution"])]
        if params["max_images"] is not None:
            common += ["--max-images", str(params["max_images"])]
        n = int(params["shards"])
        return [[*common, "--out", f"{root}/shards/{i}", "--shard", f"{i}/{n}"]
                for i in range(n)]

    @task.branch
    def choose_source(params: dict[str, Any]) -> str:
        return "make_sample" if params["source_url"] == "sample" else "download"

    args = plan()
    profile = "{{ params.profile }}"
    tags = "{{ params.tags or [] }}"  # the form sends null
    zip_name, lmdb_name = "{{ params.source_name }}-zip", "{{ params.source_name }}-lmdb"
    make_sample = StageOperator(task_id="make_sample", stage="make-sample-lmdb",
                                arguments=args["sample"], profile=profile,
                                reuse=Reuse(name="sample-lmdb", kind="sample"))
    commit_sample = DatasetVersionOperator(task_id="commit_sample", name="sample-lmdb",
                                           source=args["sample_dir"], stage="make_sample",
                                           tags=tags)
    # reusable only when a checksum proves the URL still serves the bytes; then the code
    # that fetched them does not matter
    download = StageOperator(task_id="download", stage="download", arguments=args["download"],
                             profile=profile, retries=5, execution_timeout=timedelta(hours=12),
                             reuse=Reuse(name=zip_name, kind="download", code=False,
                                         out=plan_dir("download_dir"),
                                         needs=("--md5-url", "--md5", "--sha256")))
    commit_download = DatasetVersionOperator(task_id="commit_download", name=zip_name,
                                             source=args["download_dir"], stage="download",
                                             tags=tags, meta={"url": "{{ params.source_url }}"})
    unzip = StageOperator(task_id="unzip", stage="unzip", arguments=args["unzip"],
                          profile=profile,
                          reuse=Reuse(name=lmdb_name, kind="unzip", inputs=("commit_download",)))
    commit_lmdb = DatasetVersionOperator(task_id="commit_lmdb", name=lmdb_name,
                                         source=args["lsun_dir"], stage="unzip",
                                         inputs=["commit_download"], tags=tags)
    # the shards' key leaves out --shard: any split merges to the same set, so merge and
    # inspect follow the shards' decision
    extract = StageOperator.partial(
        task_id="extract", stage="prepare lsun", profile=profile,
        trigger_rule="none_failed_min_one_success",
        reuse=Reuse(name="{{ params.dataset_name }}", kind="extract",
                    inputs=("commit_lmdb", "commit_sample"), unkeyed=("--shard",),
                    out=plan_dir("dataset")),
    ).expand(arguments=shard_plan())
    merge = StageOperator(task_id="merge", stage="prepare merge", arguments=args["merge"],
                          profile=profile,
                          reuse=Reuse(name="{{ params.dataset_name }}", kind="extract",
                                      follows="extract"))
    inspect = StageOperator(task_id="inspect", stage="inspect", arguments=args["inspect"],
                            profile=profile,
                            reuse=Reuse(name="{{ params.dataset_name }}", kind="extract",
                                        follows="extract"))
    commit = DatasetVersionOperator(task_id="commit", source=args["dataset"],
                                    name="{{ params.dataset_name }}", tags=tags,
                                    inputs=["commit_lmdb", "commit_sample"], stage="extract")

    args >> choose_source() >> [make_sample, download]
    make_sample >> commit_sample
    download >> commit_download >> unzip >> commit_lmdb
    [commit_sample, commit_lmdb] >> extract >> merge >> inspect >> commit
