"""stylegan2_train: both branches of the original demo, every output a version.

resolve the dataset (local ref, or pulled from a published store) → in parallel:
  pretrained: fetch NVIDIA's pickle (resumable, checked) → import → commit → evaluate →
              commit → generate → commit
  ours:       train (a retry resumes from the last snapshot) → commit → evaluate → commit →
              generate → commit
→ summary (versions, metrics, images).

Runs manually, from the repo watcher (conf + git_commit), or on a new ``lsun-cat-256``
version when the Variable ``stylegan_train_on_new_dataset`` is true (off by default: such
runs are skipped at the gate, saying why). Parsing imports neither TensorFlow nor the stage
code and does no I/O.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowException
from stylegan_airflow.operators import DatasetVersionOperator, StageOperator, version_asset
from stylegan_airflow.params import (
    CACHE_PARAMS,
    DEFAULT_PROFILES,
    GIT_COMMIT_PATTERN,
    METRIC_NAMES,
    METRICS_TEXT_PATTERN,
    REF_PATTERN,
    SHA256_PATTERN,
    TAG_ITEMS,
    URL_PATTERN,
)
from stylegan_airflow.paths import run_dir
from stylegan_airflow.reuse import Reuse

NVIDIA_CAT = "https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-cat-config-f.pkl"
ON_NEW_DATASET = "stylegan_train_on_new_dataset"  # Variable: "true" lets asset runs train
RETRY_DELAY = timedelta(seconds=int(os.environ.get("STYLEGAN_TRAIN_RETRY_DELAY", "60")))
PROFILE_KEYS = ("download", "train", "evaluate", "generate")
DEFAULT_METRICS = ("fid50k", "ppl2_wend")

PARAMS = {
    "dataset_ref": Param("lsun-cat-256:latest", type="string", pattern=REF_PATTERN,
                         description="Dataset version to train and evaluate on: name, "
                                     "name:latest, name:v3, name:tag or name@idprefix, e.g. "
                                     "lsun-cat-256:latest (the default)."),
    "dataset_remote": Param(None, type=["string", "null"], pattern=URL_PATTERN,
                            description="http(s) URL of a published store to pull the ref "
                                        "from first, e.g. the public dataset's; empty "
                                        "(default): use the local store."),
    "pretrained": Param(NVIDIA_CAT, type=["string", "null"], minLength=1,
                        pattern=r"^[^\s-][^\n]*$(?!\n)",
                        description="URL or local path of an NVIDIA network .pkl to evaluate "
                                    "(default: NVIDIA's config-f cat network); empty skips "
                                    "the pretrained branch."),
    "pretrained_sha256": Param(None, type=["string", "null"], pattern=SHA256_PATTERN,
                               description="Expected sha256 of the downloaded pickle (64 "
                                           "lowercase hex digits); empty (default): not "
                                           "checked."),
    "config": Param("config-f", type="string", enum=["config-f", "config-e", "small"],
                    description="Network preset: config-f (default, the paper's), config-e, "
                                "or small (a tiny network for quick CPU checks)."),
    "total_kimg": Param(10, type="number", exclusiveMinimum=0,
                        description="Length of training in thousands of real images shown "
                                    "(default 10; > 0, fractions allowed)."),
    "batch": Param(32, type="integer", minimum=2,
                   description="Minibatch size, divisible by the number of devices "
                               "(default 32; at least 2)."),
    "ada": Param(False, type="boolean",
                 description="Use adaptive discriminator augmentation (default off)."),
    "tick_kimg": Param(1, type="number", exclusiveMinimum=0,
                       description="Progress is logged every this many kimg (default 1; > 0)."),
    "snapshot_ticks": Param(4, type="integer", minimum=1,
                            description="A resumable snapshot is written every this many "
                                        "ticks (default 4; at least 1)."),
    "metrics": Param(list(DEFAULT_METRICS), type=["array", "string"], minItems=1,
                     uniqueItems=True, items={"type": "string", "enum": list(METRIC_NAMES)},
                     examples=list(METRIC_NAMES), pattern=METRICS_TEXT_PATTERN,
                     description="Metrics each network is evaluated on, one or more of "
                                 f"{', '.join(METRIC_NAMES)} (default "
                                 f"{', '.join(DEFAULT_METRICS)}); --conf may also give them "
                                 "comma-separated, e.g. \"fid50k,swd\"."),
    "metric_images": Param(None, type=["integer", "null"], minimum=2,
                           description="Cap every metric's image count for quick checks "
                                       "(at least 2); empty (default): each metric's own."),
    # NaN passes a JSON schema's bounds (every comparison with it is false); the stages
    # refuse non-finite numbers themselves (exit 2 naming the value)
    "seeds": Param("6600-6605", type="string", pattern=r"^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$",
                   description="Seeds of the generated images: numbers and inclusive ranges, "
                               "comma-separated, e.g. 6600-6605 (the default) or 1,5,10-12."),
    "truncation_psi": Param(0.5, type="number",
                            description="Truncation ψ of the generated images: 1 is none, "
                                        "smaller trades variety for quality (default 0.5)."),
    "profiles": Param({"download": "cpu", "train": "gpu", "evaluate": "gpu", "generate": "gpu"},
                      type="object", required=list(PROFILE_KEYS), additionalProperties=False,
                      properties={k: {"type": "string", "minLength": 1,
                                      "examples": list(DEFAULT_PROFILES)}
                                  for k in PROFILE_KEYS},
                      description="Resource profile for each kind of task (download, train, "
                                  "evaluate, generate); the packaged profiles are "
                                  f"{' and '.join(DEFAULT_PROFILES)}, a STYLEGAN_PROFILES "
                                  "file may add others."),
    "tags": Param([], type=["null", "array"], items=TAG_ITEMS, uniqueItems=True,
                  description="Tags to set on every version this run creates, e.g. nightly; "
                              "ASCII letters, digits, . _ -, not latest or vN. Optional "
                              "(default: none)."),
    "git_commit": Param(None, type=["string", "null"], pattern=GIT_COMMIT_PATTERN,
                        description="Commit of the pipeline repo this run came from (7-64 hex "
                                    "digits); set by the repo watcher, leave empty by hand."),
    **CACHE_PARAMS,
}


def plan_value(key: str) -> str:
    return f"{{{{ ti.xcom_pull(task_ids='plan', key='{key}') }}}}"


def output(task_id: str, field: str) -> str:
    return f"{{{{ ti.xcom_pull(task_ids='{task_id}')['{field}'] }}}}"


def version_of(task_id: str) -> str:
    """``name@id`` of the version a commit task created."""
    return f"{output(task_id, 'name')}@{output(task_id, 'id')}"


TAGS = "{{ params.tags or [] }}"  # the form sends null for no tags
TRY = "{{ ti.try_number }}"  # outputs per try: a retry never meets a half-written one


def judge_and_sample(branch: str, network: str, network_commit: str,
                     profiles: dict[str, str]) -> tuple[list[Any], list[Any]]:
    """evaluate → commit and generate → commit for one branch's network; returns the
    (first, last) tasks of both chains."""
    outputs = {}
    for kind, stage, name in (("evaluate", "evaluate", "evaluation"),
                              ("generate", "generate", "generated")):
        # the network and the dataset are keyed by their version ids, not their paths
        reads = (network_commit, "resolve_dataset") if kind == "evaluate" else (network_commit,)
        run = StageOperator(
            task_id=f"{kind}_{branch}", stage=stage, profile=profiles[kind],
            arguments=["--network", network, plan_value(kind),
                       "--out", f"{plan_value('root')}/{name}-{branch}-{TRY}"],
            reuse=Reuse(name=f"stylegan2-{name}-{branch}", kind=kind, inputs=reads,
                        unkeyed=("--network", "--data")))
        if kind == "evaluate":  # the evaluation also needs the dataset in its lineage
            inputs, meta = [network_commit, "resolve_dataset"], {
                "metrics": output(run.task_id, "results"), "network": version_of(network_commit)}
        else:
            inputs, meta = [network_commit], {
                "network": version_of(network_commit),
                "truncation_psi": "{{ params.truncation_psi }}", "seeds": plan_value("seeds")}
        commit = DatasetVersionOperator(
            task_id=f"commit_{branch}_{name}", name=f"stylegan2-{name}-{branch}",
            source=output(run.task_id, "out"), inputs=inputs, tags=TAGS,
            meta=meta, stage=run.task_id)
        run >> commit
        outputs[kind] = (run, commit)
    return ([outputs["evaluate"][0], outputs["generate"][0]],
            [outputs["evaluate"][1], outputs["generate"][1]])

with DAG(
    dag_id="stylegan2_train",
    description="Evaluate NVIDIA's cat network and train our own; version every output",
    schedule=[version_asset("lsun-cat-256")],
    catchup=False,
    params=PARAMS,
    default_args={"retries": 1, "retry_delay": RETRY_DELAY},
    tags=["stylegan2"],
    render_template_as_native_obj=True,
    doc_md=__doc__,
) as dag:

    @task.short_circuit
    def gate(dag_run: Any = None) -> bool:
        """Manual and watcher runs pass; asset-triggered ones only when switched on."""
        if "asset" not in str(dag_run.run_type).lower():
            return True
        from airflow.sdk import Variable

        on = str(Variable.get(ON_NEW_DATASET, default="false")).lower() in ("1", "true", "on")
        if not on:
            print(f"a new dataset version arrived; training on new datasets is off "
                  f"(set the Variable {ON_NEW_DATASET} to true to turn it on)")
        return on

    @task(multiple_outputs=True)
    def plan(params: dict[str, Any], dag_run: Any = None,
             triggering_asset_events: Any = None) -> dict[str, Any]:
        """Paths and stage arguments for this run."""
        root = run_dir("stylegan2_train", dag_run.run_id)
        ref = params["dataset_ref"]
        if "asset" in str(dag_run.run_type).lower() and triggering_asset_events:
            events = [e for evs in triggering_asset_events.values() for e in evs]
            ref = (events[-1].extra or {}).get("ref", ref) if events else ref
        pretrained = params["pretrained"]
        is_url = bool(pretrained) and str(pretrained).startswith(("http://", "https://"))
        pkl = f"{root}/pretrained/download/network.pkl" if is_url else pretrained
        download = [pretrained, "--out", pkl]
        if params["pretrained_sha256"]:
            download += ["--sha256", params["pretrained_sha256"]]
        from stylegan_ops.generate import parse_seeds

        metrics = params["metrics"]  # a list from the form, maybe a string from --conf
        metrics = metrics if isinstance(metrics, str) else ",".join(metrics)
        cap = ["--num-images", str(params["metric_images"])] if params["metric_images"] else []
        train = ["--data", f"{root}/dataset", "--out", f"{root}/train",
                 "--config", params["config"], "--total-kimg", str(params["total_kimg"]),
                 "--batch", str(params["batch"]), "--resume", "auto",
                 "--aug", "ada" if params["ada"] else "none",
                 "--tick-kimg", str(params["tick_kimg"]),
                 "--snapshot-ticks", str(params["snapshot_ticks"])]
        return {"root": root, "dataset_ref": ref, "pkl": pkl or "", "download": download,
                "pkl_dir": f"{root}/pretrained/download",
                "pretrained_mode": "url" if is_url else ("path" if pretrained else "none"),
                "train": train,
                "evaluate": ["--data", f"{root}/dataset", "--metrics", metrics, *cap],
                "generate": ["--seeds", params["seeds"],
                             "--truncation-psi", str(params["truncation_psi"])],
                "seeds": list(parse_seeds(params["seeds"]))}

    @task
    def resolve_dataset(params: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
        """Pull the ref from the published store if asked, then check it out (verified)."""
        from pathlib import Path

        from stylegan_airflow.runners import store_path

        from stylegan_ops.store.local import Store

        store = Store(Path(store_path()), create=True)
        ref = plan["dataset_ref"]
        if params["dataset_remote"]:
            from stylegan_ops.store.remote import pull

            version, _ = pull(store, params["dataset_remote"], ref)
            ref = f"{version.name}@{version.id}"
        out = Path(plan["root"]) / "dataset"
        version = store.checkout(ref, out, verify=True, replace=True)
        print(f"dataset {version.ref} ({version.id}) checked out at {out}")
        return {"name": version.name, "id": version.id, "ref": version.ref, "out": str(out)}

    @task.branch
    def choose_pretrained(plan: dict[str, Any]) -> list[str]:
        mode = plan["pretrained_mode"]
        if mode == "none":
            print("pretrained branch skipped: no network given (param 'pretrained' is null)")
            return []
        return ["fetch_pretrained"] if mode == "url" else ["import_pretrained"]

    @task(trigger_rule="all_done")
    def summary(dag_run: Any = None, ti: Any = None) -> dict[str, Any]:
        """What this run produced: versions, metrics and where the images are."""
        versions = {}
        for task_id in ("commit_pretrained_pickle", "commit_pretrained_network",
                        "commit_pretrained_evaluation",
                        "commit_pretrained_generated", "commit_trained_network",
                        "commit_ours_evaluation", "commit_ours_generated"):
            value = ti.xcom_pull(task_ids=task_id)
            if value:
                versions[value["name"]] = {"ref": value["ref"], "id": value["id"],
                                           "meta": value.get("meta", {}),
                                           "reused": value.get("reused")}
        metrics = {name: v["meta"].get("metrics") for name, v in versions.items()
                   if "evaluation" in name}
        for name, v in versions.items():
            made = (f"reused, last computed by run {v['reused']['made_by']['run_id']}"
                    if v["reused"] else "made by this run")
            print(f"{name}: {v['ref']} ({v['id'][:12]}) {made}")
        for name, values in metrics.items():
            print(f"{name}: {values}")
        # all_done lets the summary list what the run made even when a branch failed; the
        # run must still end failed then, not green with half its outputs missing
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        failed = sorted(t for t, s in states.items() if s in ("failed", "upstream_failed"))
        if failed:
            raise AirflowException(f"the run is incomplete: {', '.join(failed)} did not "
                                   "succeed (the versions it did make are listed above)")
        return {"versions": versions, "metrics": metrics}

    args = plan()
    checked_out = resolve_dataset(plan=args)
    profiles = {k: f"{{{{ params.profiles.{k} }}}}" for k in PROFILE_KEYS}

    # --- the pretrained branch ----------------------------------------------------------
    # a download is reusable only when a checksum proves the URL still serves those bytes;
    # then the code that fetched them does not matter
    fetch = StageOperator(task_id="fetch_pretrained", stage="download",
                          arguments=args["download"], profile=profiles["download"],
                          retries=5, execution_timeout=timedelta(hours=2),
                          reuse=Reuse(name="stylegan2-pretrained-pickle", kind="download",
                                      out=plan_value("pkl_dir"), code=False,
                                      needs=("--sha256",)))
    commit_pickle = DatasetVersionOperator(
        task_id="commit_pretrained_pickle", name="stylegan2-pretrained-pickle",
        source=plan_value("pkl_dir"), tags=TAGS, stage="fetch_pretrained",
        meta={"source": "{{ params.pretrained }}"})
    import_pre = StageOperator(
        task_id="import_pretrained", stage="import-pkl", profile=profiles["download"],
        arguments=[plan_value("pkl"), "--out", f"{plan_value('root')}/pretrained/snapshot-{TRY}"],
        trigger_rule="none_failed_min_one_success",
        reuse=Reuse(name="stylegan2-pretrained-network", kind="import",
                    files=(plan_value("pkl"),)))  # the pickle is keyed by its content
    commit_pre_net = DatasetVersionOperator(
        task_id="commit_pretrained_network", name="stylegan2-pretrained-network",
        source=output("import_pretrained", "out"),
        inputs=["resolve_dataset", "commit_pretrained_pickle"],
        tags=TAGS, meta={"source": "{{ params.pretrained }}"}, stage="import_pretrained")
    pre_outputs = judge_and_sample("pretrained", output("import_pretrained", "out"),
                                   "commit_pretrained_network", profiles)

    # --- our own network ----------------------------------------------------------------
    # same key: the trained network is reused; a larger --total-kimg (or a run that failed
    # for good) continues from the furthest snapshot an earlier run with the rest equal left
    train = StageOperator(task_id="train", stage="train", arguments=args["train"],
                          profile=profiles["train"], retries=2,
                          execution_timeout=timedelta(days=7),
                          reuse=Reuse(name="stylegan2-trained-network", kind="train",
                                      inputs=("resolve_dataset",), unkeyed=("--data",),
                                      continues="--total-kimg"))
    commit_net = DatasetVersionOperator(
        task_id="commit_trained_network", name="stylegan2-trained-network",
        source=output("train", "out"), inputs=["resolve_dataset"], tags=TAGS,
        meta={"kimg": output("train", "kimg"), "config": "{{ params.config }}"}, stage="train")
    our_outputs = judge_and_sample("ours", output("train", "final"),
                                   "commit_trained_network", profiles)

    gate() >> args >> checked_out
    checked_out >> choose_pretrained(args) >> [fetch, import_pre]
    fetch >> commit_pickle >> import_pre >> commit_pre_net >> pre_outputs[0]
    checked_out >> train >> commit_net >> our_outputs[0]
    pre_outputs[1] + our_outputs[1] >> summary()
