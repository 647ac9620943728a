"""stylegan2_train: both branches of the original demo, every output a version.

resolve the dataset (local ref, or pulled from a published store) → in parallel:
  pretrained: fetch NVIDIA's pickle (resumable, checked) → import → commit → evaluate →
              commit → generate → commit
  ours:       train (a retry resumes from the last snapshot) → commit → evaluate → commit →
              generate → commit
  projection (param project_targets, off by default): the folder of targets committed and
              checked out → each branch's network projects them (StyleGAN2's projector) →
              commit as stylegan2-projections-<branch>, lineage to the network and targets
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
from airflow.sdk.exceptions import AirflowFailException
from stylegan_airflow.operators import DatasetVersionOperator, StageOperator, version_asset
from stylegan_airflow.params import (
    AUGPIPES,
    CACHE_PARAMS,
    DEFAULT_PROFILES,
    GIT_COMMIT_PATTERN,
    METRIC_NAMES,
    METRICS_TEXT_PATTERN,
    OPTIONAL_METRICS_TEXT_PATTERN,
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
                 description="Use adaptive discriminator augmentation (default off); the "
                             "same as aug: ada, kept for older settings files."),
    "aug": Param("none", type="string", enum=["none", "ada", "fixed"],
                 description="Augment what D sees, reals and fakes alike: none (default), "
                             "ada (the probability p adapts towards aug_target) or fixed (p "
                             "stays aug_p)."),
    "augpipe": Param("bgc", type="string", enum=list(AUGPIPES),
                     description="ADA's transform groups when aug is ada or fixed: "
                                 f"{', '.join(AUGPIPES)} (default bgc: blit, geometric, "
                                 "colour)."),
    "aug_target": Param(0.6, type="number", exclusiveMinimum=0, maximum=1,
                        description="aug ada: the target for the sign of D's outputs on "
                                    "reals, in (0, 1] (default 0.6, ADA's)."),
    "ada_kimg": Param(500, type="number", exclusiveMinimum=0,
                      description="aug ada: kimg in which p can move by 1 (default 500, "
                                  "ADA's); a short run on a small set wants a few, e.g. 10."),
    "aug_p": Param(None, type=["number", "null"], minimum=0, maximum=1,
                   description="Augment probability in [0, 1]: aug fixed's constant (needed "
                               "then), aug ada's start; empty (default): ada starts at 0."),
    "init_from": Param(None, type=["string", "null"], pattern=REF_PATTERN,
                       description="Fine-tune our network from another: empty (default) "
                                   "trains from scratch; pretrained: the pretrained "
                                   "branch's imported network (our branch then waits for "
                                   "the import); or a network version ref, e.g. "
                                   "stylegan2-trained-network:v3 (its network-final). Its "
                                   "architecture must be config's at the dataset's "
                                   "resolution."),
    "freeze_d": Param(0, type="integer", minimum=0,
                      description="Fine-tuning: the first this many discriminator blocks, "
                                  "from the highest resolution, stay fixed (FreezeD; "
                                  "default 0: none)."),
    "gamma": Param(None, type=["number", "null"], minimum=0,
                   description="R1 regularisation weight (>= 0); empty (default): the "
                               "preset's (config-f/e 10, small 0.0002·res²/batch)."),
    "train_metrics": Param("", type=["string", "array"], uniqueItems=True,
                           items={"type": "string", "enum": list(METRIC_NAMES)},
                           pattern=OPTIONAL_METRICS_TEXT_PATTERN,
                           description="Metrics each snapshot is scored on during training, "
                                       "comma-separated, e.g. swd (default empty: none); "
                                       "appended to the run's metric-<name>.jsonl with "
                                       "kimg. metric_images caps them too."),
    "keep_best": Param(None, type=["string", "null"], enum=[*METRIC_NAMES, None],
                       description="One of train_metrics: keep its best snapshot as "
                                   "network-best, with best.json (default empty: no; "
                                   "network-final stays the last either way)."),
    "mixed_precision": Param(False, type="boolean",
                             description="Train with float16 synthesis and D, float32 "
                                         "weights and dynamic loss scaling (default off: "
                                         "float32); meant for GPUs."),
    "xla": Param(False, type="boolean",
                 description="XLA-compile (jit_compile) the training steps, the evaluations' "
                             "generator and detectors, and generation (default off). Scores "
                             "and images agree with the plain ones to float rounding; "
                             "training then runs on one device."),
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
    "reference_dataset_ref": Param(None, type=["string", "null"], pattern=REF_PATTERN,
                                   description="Dataset version whose reals the evaluations "
                                               "compare against, e.g. the full set a small "
                                               "training subset was cut from (pulled from "
                                               "dataset_remote when that is set); empty "
                                               "(default): dataset_ref."),
    # NaN passes a JSON schema's bounds (every comparison with it is false); the stages
    # refuse non-finite numbers themselves (exit 2 naming the value)
    "seeds": Param("6600-6605", type="string", pattern=r"^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$",
                   description="Seeds of the generated images: numbers and inclusive ranges, "
                               "comma-separated, e.g. 6600-6605 (the default) or 1,5,10-12."),
    "truncation_psi": Param(0.5, type="number",
                            description="Truncation ψ of the generated images: 1 is none, "
                                        "smaller trades variety for quality (default 0.5)."),
    "project_targets": Param(None, type=["string", "null"], minLength=1,
                             pattern=r"^[^\s-][^\n]*$(?!\n)",
                             description="Folder of images (on the worker) to project with "
                                         "each network of the run, StyleGAN2's projector "
                                         "(needs the LPIPS file, see fetch-weights; runs "
                                         "on the generate profile): the "
                                         "folder is committed as stylegan2-projection-"
                                         "targets, each result as stylegan2-projections-"
                                         "<branch>; empty (default): no projection."),
    "project_steps": Param(1000, type="integer", minimum=1, maximum=100_000,
                           description="Projection: optimisation steps per target (default "
                                       "1000, the paper's)."),
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
PROJECTION_TARGETS = "resolve_projection_targets"  # the checked-out targets version
INIT_PRETRAINED = "pretrained"  # init_from's word for the pretrained branch's network
# one of them runs (a version; the pretrained branch's import), or neither (from scratch)
INIT_TASKS = ("resolve_init_ours", "init_ours_from_import")
# train's arguments: the plan's, then --init from whichever init task ran
TRAIN_ARGS = ("{{ ti.xcom_pull(task_ids='plan', key='train') + ((ti.xcom_pull("
              "task_ids='resolve_init_ours') or ti.xcom_pull(task_ids='init_ours_from_import')"
              " or {}).get('args') or []) }}")


XLA = ["--xla"]  # train, evaluate and generate take the same flag


def metric_list(value: Any) -> list[str]:
    """A metrics param as names: a list from the form, maybe comma-separated text."""
    if isinstance(value, str):
        return [m for m in value.split(",") if m]
    return list(value or [])


def train_options(params: dict[str, Any]) -> tuple[str, list[str]]:
    """The --aug value, and train's flags for augmentation, γ, FreezeD, precision, XLA and
    metrics during training: only those that apply, so a run without augmentation and with
    the rest left at their defaults has the arguments it had before these params existed. A
    combination the stage would refuse fails the run here, before any work."""
    aug = params["aug"]
    if params["ada"]:  # the older switch
        if aug == "fixed":
            raise AirflowFailException("ada: true asks for adaptive augmentation, aug "
                                       "'fixed' for a constant one: set only one of them")
        aug = "ada"
    if aug == "fixed" and params["aug_p"] is None:
        raise AirflowFailException("aug 'fixed' needs aug_p, the constant augment "
                                   "probability (e.g. 0.2)")
    out = []
    if aug != "none":
        out += ["--augpipe", params["augpipe"]]
        if aug == "ada":
            out += ["--target", str(params["aug_target"])]
            if params["ada_kimg"] != 500:  # the default adds nothing: cache keys stay
                out += ["--ada-kimg", str(params["ada_kimg"])]
        if params["aug_p"] is not None:
            out += ["--p", str(params["aug_p"])]
    if params["gamma"] is not None:
        out += ["--gamma", str(params["gamma"])]
    # off adds nothing, so that runs from before these params keep their cache keys
    out += ["--mixed-precision"] if params["mixed_precision"] else []
    out += XLA if params["xla"] else []
    if params["freeze_d"]:
        out += ["--freeze-d", str(params["freeze_d"])]
    metrics, best = metric_list(params["train_metrics"]), params["keep_best"]
    if best and best not in metrics:
        raise AirflowFailException(f"keep_best {best!r} is not one of train_metrics "
                                   f"({','.join(metrics) or 'none given'})")
    if metrics:
        out += ["--metrics", ",".join(metrics)]
        if params["metric_images"]:
            out += ["--metrics-images", str(params["metric_images"])]
        if best:
            out += ["--keep-best", best]
    return aug, out


def network_in(root: Any) -> Any:
    """The network a checked-out version holds: a training run's network-final, the
    version itself when it is one snapshot (an import), or its one .pkl; else None."""
    import json

    if (root / "network-final").is_dir():
        return root / "network-final"
    try:
        fmt = json.loads((root / "config.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        fmt = None
    if isinstance(fmt, str) and fmt.startswith("stylegan-ops-snapshot"):
        return root
    pickles = sorted(root.glob("*.pkl"))
    return pickles[0] if len(pickles) == 1 else None


def checkout(store: Any, ref: str, out: Any, remote: str | None) -> Any:
    """Pull ``ref`` from the published store first if one is given, then check it out
    (verified) at ``out``."""
    if remote:
        from stylegan_ops.store.remote import pull

        version, _ = pull(store, remote, ref)
        ref = f"{version.name}@{version.id}"
    return store.checkout(ref, out, verify=True, replace=True)


def judge_and_sample(branch: str, network: str, network_commit: str,
                     profiles: dict[str, str]) -> tuple[list[Any], list[Any]]:
    """evaluate → commit, generate → commit and project → commit for one branch's network;
    returns the (first, last) tasks of the three chains (evaluate, generate, project)."""
    outputs = {}
    for kind, stage, name in (("evaluate", "evaluate", "evaluation"),
                              ("generate", "generate", "generated"),
                              ("project", "project", "projections")):
        # the network and the dataset are keyed by their version ids, not their paths
        # the reference dataset, when none is given, returns no version and adds nothing
        reads = {"evaluate": (network_commit, "resolve_dataset", "resolve_reference_dataset"),
                 "generate": (network_commit,),
                 "project": (network_commit, PROJECTION_TARGETS)}[kind]
        run = StageOperator(
            # projection takes the generate profile: no new required key for settings files
            task_id=f"{kind}_{branch}", stage=stage,
            profile=profiles["generate" if kind == "project" else kind],
            arguments=["--network", network, plan_value(kind),
                       "--out", f"{plan_value('root')}/{name}-{branch}-{TRY}"],
            reuse=Reuse(name=f"stylegan2-{name}-{branch}", kind=kind, inputs=reads,
                        unkeyed=("--network", "--data", "--reference-data", "--target")))
        if kind == "evaluate":  # the evaluation also needs the dataset in its lineage
            inputs, meta = [*reads], {
                "metrics": output(run.task_id, "results"), "network": version_of(network_commit)}
        elif kind == "project":
            inputs, meta = [*reads], {
                "network": version_of(network_commit), "targets": version_of(PROJECTION_TARGETS),
                "distances": output(run.task_id, "targets"), "lpips": output(run.task_id, "lpips")}
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
    return ([outputs[k][0] for k in ("evaluate", "generate", "project")],
            [outputs[k][1] for k in ("evaluate", "generate", "project")])

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
        init_from = params["init_from"]
        if init_from == INIT_PRETRAINED and not pretrained:
            raise AirflowFailException("init_from 'pretrained' starts our network from the "
                                       "pretrained branch's, but the param pretrained is "
                                       "empty: give a network .pkl, or another init_from")
        is_url = bool(pretrained) and str(pretrained).startswith(("http://", "https://"))
        pkl = f"{root}/pretrained/download/network.pkl" if is_url else pretrained
        download = [pretrained, "--out", pkl]
        if params["pretrained_sha256"]:
            download += ["--sha256", params["pretrained_sha256"]]
        from stylegan_ops.generate import parse_seeds

        metrics = params["metrics"]  # a list from the form, maybe a string from --conf
        metrics = metrics if isinstance(metrics, str) else ",".join(metrics)
        cap = ["--num-images", str(params["metric_images"])] if params["metric_images"] else []
        reference = params["reference_dataset_ref"]
        cap += ["--reference-data", f"{root}/reference"] if reference else []
        aug, options = train_options(params)
        xla = XLA if params["xla"] else []
        train = ["--data", f"{root}/dataset", "--out", f"{root}/train",
                 "--config", params["config"], "--total-kimg", str(params["total_kimg"]),
                 "--batch", str(params["batch"]), "--resume", "auto", "--aug", aug,
                 "--tick-kimg", str(params["tick_kimg"]),
                 "--snapshot-ticks", str(params["snapshot_ticks"]), *options]
        return {"root": root, "dataset_ref": ref, "pkl": pkl or "", "download": download,
                "pkl_dir": f"{root}/pretrained/download",
                "pretrained_mode": "url" if is_url else ("path" if pretrained else "none"),
                "init_mode": ("none" if not init_from else
                              "pretrained" if init_from == INIT_PRETRAINED else "ref"),
                "init_ref": init_from, "reference_ref": reference,
                "train": train,
                "evaluate": ["--data", f"{root}/dataset", "--metrics", metrics, *cap,
                             *xla],
                "project": ["--target", f"{root}/projection-targets",
                            "--steps", str(params["project_steps"])],
                "generate": ["--seeds", params["seeds"],
                             "--truncation-psi", str(params["truncation_psi"]), *xla],
                "seeds": list(parse_seeds(params["seeds"]))}

    @task
    def resolve_dataset(params: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
        """Pull the ref from the published store if asked, then check it out (verified)."""
        from pathlib import Path

        from stylegan_airflow.runners import store_path

        from stylegan_ops.store.local import Store

        store = Store(Path(store_path()), create=True)
        out = Path(plan["root"]) / "dataset"
        version = checkout(store, plan["dataset_ref"], out, params["dataset_remote"])
        print(f"dataset {version.ref} ({version.id}) checked out at {out}")
        return {"name": version.name, "id": version.id, "ref": version.ref, "out": str(out)}

    @task
    def resolve_reference_dataset(params: dict[str, Any], plan: dict[str, Any]
                                  ) -> dict[str, Any]:
        """The dataset the evaluations take real statistics from, when it is not the
        training set (ADA's advice for a small training subset: score against the full
        set); checked out like the dataset."""
        from pathlib import Path

        from stylegan_airflow.runners import store_path

        from stylegan_ops.errors import StageError
        from stylegan_ops.store.local import Store

        ref = plan["reference_ref"]
        if not ref:
            print("no reference_dataset_ref: the evaluations score against the dataset")
            return {"ref": None}  # no version: nothing for the keys and lineages
        out = Path(plan["root"]) / "reference"
        try:
            version = checkout(Store(Path(store_path()), create=True), ref, out,
                               params["dataset_remote"])
        except StageError as exc:
            raise AirflowFailException(f"reference_dataset_ref {ref!r}: {exc}") from None
        print(f"reference dataset {version.ref} ({version.id}) checked out at {out}")
        return {"name": version.name, "id": version.id, "ref": version.ref, "out": str(out)}

    @task.branch
    def choose_init_ours(plan: dict[str, Any]) -> list[str]:
        """Where our network starts: from scratch, a version, or the pretrained import
        (only then does our branch wait for the pretrained one)."""
        mode = plan["init_mode"]
        if mode == "none":
            print("our network trains from scratch (param init_from is null)")
            return []
        return ["init_ours_from_import"] if mode == "pretrained" else ["resolve_init_ours"]

    @task
    def resolve_init_ours(plan: dict[str, Any]) -> dict[str, Any]:
        """Check out (verified) the network version init_from names; --init is its
        network."""
        from pathlib import Path

        from stylegan_airflow.runners import store_path

        from stylegan_ops.errors import StageError
        from stylegan_ops.store.local import Store

        ref, out = plan["init_ref"], Path(plan["root"]) / "init"
        try:
            version = Store(Path(store_path()), create=True).checkout(
                ref, out, verify=True, replace=True)
        except StageError as exc:
            raise AirflowFailException(f"init_from {ref!r}: {exc}") from None
        network = network_in(out)
        if network is None:
            raise AirflowFailException(f"init_from {ref!r}: {version.ref} holds no network "
                                       "(no network-final/, snapshot or single .pkl)")
        print(f"our network starts from {version.ref} ({version.id}): {network}")
        return {"name": version.name, "id": version.id, "ref": version.ref,
                "out": str(network), "args": ["--init", str(network)]}

    @task
    def init_ours_from_import(ti: Any = None) -> dict[str, Any]:
        """The pretrained branch's imported network, as committed, is where ours starts."""
        version = ti.xcom_pull(task_ids="commit_pretrained_network")
        network = ti.xcom_pull(task_ids="import_pretrained")["out"]
        print(f"our network starts from {version['ref']} ({version['id']}): {network}")
        return {"name": version["name"], "id": version["id"], "ref": version["ref"],
                "out": network, "args": ["--init", network]}

    @task.branch
    def choose_pretrained(plan: dict[str, Any]) -> list[str]:
        mode = plan["pretrained_mode"]
        if mode == "none":
            print("pretrained branch skipped: no network given (param 'pretrained' is null)")
            return []
        return ["fetch_pretrained"] if mode == "url" else ["import_pretrained"]

    @task.branch
    def choose_projection(params: dict[str, Any]) -> list[str]:
        """Projection runs only when the param project_targets names a folder."""
        if not params["project_targets"]:
            print("no projection: the param project_targets is empty")
            return []
        return ["commit_projection_targets"]

    @task
    def resolve_projection_targets(plan: dict[str, Any], ti: Any = None) -> dict[str, Any]:
        """Check out (verified) the targets just committed: the projections read exactly the
        version their lineage names, even if the folder changes meanwhile."""
        from pathlib import Path

        from stylegan_airflow.runners import store_path

        from stylegan_ops.store.local import Store

        committed = ti.xcom_pull(task_ids="commit_projection_targets")
        out = Path(plan["root"]) / "projection-targets"
        version = Store(Path(store_path())).checkout(
            f"{committed['name']}@{committed['id']}", out, verify=True, replace=True)
        print(f"projection targets {version.ref} ({version.id}) checked out at {out}")
        return {"name": version.name, "id": version.id, "ref": version.ref, "out": str(out)}

    @task(trigger_rule="all_done")
    def summary(dag_run: Any = None, ti: Any = None) -> dict[str, Any]:
        """What this run produced: versions, metrics and where the images are."""
        versions = {}
        for task_id in ("commit_pretrained_pickle", "commit_pretrained_network",
                        "commit_pretrained_evaluation",
                        "commit_pretrained_generated", "commit_trained_network",
                        "commit_ours_evaluation", "commit_ours_generated",
                        "commit_projection_targets", "commit_pretrained_projections",
                        "commit_ours_projections"):
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
        # run must still end failed then, not green with half its outputs missing; a
        # verdict, not a transient fault, so no retry repeats it a retry delay later
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        failed = sorted(t for t, s in states.items() if s in ("failed", "upstream_failed"))
        if failed:
            raise AirflowFailException(f"the run is incomplete: {', '.join(failed)} did not "
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
    # the init network is keyed by its version id (--init is a path per run and try); the
    # init task not run returns none, so a run from scratch keeps its key
    train = StageOperator(task_id="train", stage="train", arguments=TRAIN_ARGS,
                          profile=profiles["train"], retries=2,
                          execution_timeout=timedelta(days=7),
                          # skipped init tasks are fine; a failed one fails it
                          trigger_rule="none_failed_min_one_success",
                          reuse=Reuse(name="stylegan2-trained-network", kind="train",
                                      inputs=("resolve_dataset", *INIT_TASKS),
                                      unkeyed=("--data", "--init"),
                                      continues="--total-kimg"))
    commit_net = DatasetVersionOperator(
        task_id="commit_trained_network", name="stylegan2-trained-network",
        source=output("train", "out"), inputs=["resolve_dataset", *INIT_TASKS], tags=TAGS,
        meta={"kimg": output("train", "kimg"), "config": "{{ params.config }}"}, stage="train")
    our_outputs = judge_and_sample("ours", output("train", "final"),
                                   "commit_trained_network", profiles)

    # --- projection of real images, when asked --------------------------------------------
    commit_targets = DatasetVersionOperator(
        task_id="commit_projection_targets", name="stylegan2-projection-targets",
        source="{{ params.project_targets }}", tags=TAGS,
        meta={"source": "{{ params.project_targets }}"})
    targets = resolve_projection_targets(plan=args)
    checked_out >> choose_projection() >> commit_targets >> targets
    targets >> [pre_outputs[0][2], our_outputs[0][2]]  # both branches' project tasks

    reference = resolve_reference_dataset(plan=args)
    init_version, init_pretrained = resolve_init_ours(plan=args), init_ours_from_import()
    gate() >> args >> checked_out
    checked_out >> choose_pretrained(args) >> [fetch, import_pre]
    fetch >> commit_pickle >> import_pre >> commit_pre_net >> pre_outputs[0]
    checked_out >> choose_init_ours(args) >> [init_version, init_pretrained]
    commit_pre_net >> init_pretrained
    [args, checked_out, init_version, init_pretrained] >> train >> commit_net >> our_outputs[0]
    reference >> [pre_outputs[0][0], our_outputs[0][0]]  # the evaluations
    pre_outputs[1] + our_outputs[1] >> summary()
