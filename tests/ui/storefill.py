"""A version store filled with the shapes the train and prepare DAGs commit (tiny files)."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from stylegan_ops.store.base import now
from stylegan_ops.store.local import Store
from stylegan_ops.store.model import Lineage, Use, Version
from stylegan_ops.store.reuse import CacheKey

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PREPARE_RUN = "manual__2026-01-02T03:04:05+00:00"  # ':' and '+' must be quoted in links
TRAIN_RUN = f"commit__{COMMIT}"
# a seeds-only rerun: it reuses the networks and evaluations by cache key, makes new
# generated images of ours, and generates the pretrained seeds again to the same bytes
REUSE_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
REUSE_RUN = f"commit__{REUSE_COMMIT}"
LATER_RUN = "manual__2026-03-04T05:06:07+00:00"  # reuses the trained network once more
CODE = "stylegan-ops 0.1.0 src " + "5" * 64


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def checker(width: int, height: int, a: tuple[int, int, int], b: tuple[int, int, int]
            ) -> bytes:
    """A PNG of one-pixel squares in two colours: any smoothing where it is enlarged
    shows as colours that are neither."""
    img = Image.new("RGB", (width, height), a)
    img.putdata([a if (x + y) % 2 else b for y in range(height) for x in range(width)])
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def tree(root: Path, files: dict[str, bytes | str | dict[str, Any] | list[Any]]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, dict):
            data = json.dumps(data)
        elif isinstance(data, list):  # JSON lines
            data = "".join(json.dumps(r) + "\n" for r in data)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


def metric(name: str, results: dict[str, float], network: str,
           stand_in: bool = False) -> dict[str, Any]:
    detector: Any = "none" if name.startswith("swd") else {
        "name": "inception", "file": "inception.pb", "sha256": "0" * 64,
        "standard": not stand_in}
    # as evaluate writes them: the network by content, no paths, no times
    return {"metric": name + ("@stand-in" if stand_in else ""), "standard_metric": name,
            "results": results, "invalid": {}, "num_images": 64,
            "network_sha256": hashlib.sha256(network.encode()).hexdigest(),
            "dataset_sha256": "1" * 64, "resolution": 256, "detector": detector,
            "truncation_psi": 1.0, "seed": 123, "batch": 32}


# ours v2 trains on from v1 (NVIDIA's whole-kimg names) with a tick below 1 kimg: grids and
# snapshots named to the image (two within 4 kimg), evaluated at each snapshot; a null is a
# degenerate score. (kimg, snapshot, swd_avg, swd32) per metric-swd.jsonl line, in file order.
TRAINING_SWD: list[tuple[float, str, float | None, float]] = [
    (4.512, "network-snapshot-000004.512", 9.0, 9.5),
    (4.992, "network-snapshot-000004.992", None, 8.0),
    (8.0, "network-snapshot-000008.000", 6.75, 7.0),
    (6.0, "network-snapshot-000006.000", 6.25, 6.5),  # appended late: a resumed run's
]
CHECKER = ((250, 20, 20), (20, 20, 250))  # the colours of ours v2's last grid
BEST = {"metric": "swd_avg", "value": 6.25, "kimg": 6.0, "snapshot": "network-snapshot-000006.000"}
# the grids of ours v2 in kimg order, with the caption each must have
TRAINED_GRIDS = [("fakes_init.png", "fakes at 0 kimg (init)"),
                 ("fakes000004.png", "fakes at 4 kimg"),
                 ("fakes000004.512.png", "fakes at 4.512 kimg"),
                 ("fakes000004.992.png", "fakes at 4.992 kimg"),
                 ("fakes000006.000.png", "fakes at 6 kimg"),
                 ("fakes000008.000.png", "fakes at 8 kimg")]


def trained(kimg: float, snapshot: str, results: dict[str, float | None]) -> dict[str, Any]:
    """A metric record as ``train --metrics`` appends it at a snapshot."""
    invalid = {k: "not a finite number (nan): the images or features are degenerate"
               for k, v in results.items() if v is None}
    return {**metric("swd", {}, snapshot), "results": results, "invalid": invalid,
            "kimg": kimg, "snapshot": snapshot}


def lineage(dag_id: str, run_id: str, task_id: str, inputs: tuple[str, ...] = (),
            **params: Any) -> Lineage:
    return Lineage(dag_id=dag_id, run_id=run_id, task_id=task_id, try_number=1,
                   git_commit=COMMIT, params=params, inputs=inputs)


def pinned(v: Version) -> str:
    return f"{v.name}@{v.id}"


def keyed(lin: Lineage, stage: str, args: tuple[str, ...], inputs: tuple[str, ...] = (),
          continues: str | None = None, continued_from: str | None = None) -> Lineage:
    """``lin`` with the cache key record a stage task with these parts commits."""
    key = CacheKey(stage, args, inputs, CODE)
    return replace(lin, cache=key.record(continues), continued_from=continued_from)


def key_of(v: Version) -> str:
    assert v.lineage.cache is not None, v.ref
    return str(v.lineage.cache["key"])


def use(store: Store, v: Version, run_id: str, task_id: str, reason: str = "cache",
        key: str | None = None, try_number: int = 1) -> Use:
    """Record that a task of ``run_id`` used ``v``, as the commit task does."""
    record = Use(v.name, v.number, v.id, now(), reason, "stylegan2_train", run_id, task_id,
                 try_number, key or key_of(v), v.lineage.dag_id, v.lineage.run_id)
    store.record_use(record)
    return record


def fill(root: Path, work: Path) -> dict[str, Version]:
    """Commit every kind of version the page shows; returns them by short key."""
    store = Store(root)
    made: dict[str, Version] = {}

    def commit(key: str, name: str, files: dict[str, Any], lin: Lineage,
               meta: dict[str, Any] | None = None, tags: tuple[str, ...] = ()) -> Version:
        version, _ = store.snapshot(tree(work / key, files), name, tags, lin, meta or {})
        made[key] = version
        return version

    for i, colour in enumerate([(200, 120, 40), (90, 160, 200)], start=1):
        commit(f"data{i}", "lsun-cat-256", {
            "lsun-cat-256-r02.tfrecords": b"r02" * i, "lsun-cat-256-r03.tfrecords": b"r03",
            "dataset.json": {"count": 16 * i, "resolution": 8}, "reals.png": png(64, 32, colour)},
            lineage("stylegan2_prepare", PREPARE_RUN, "commit", max_images=16 * i),
            tags=("demo",) if i == 1 else ())
    data = pinned(made["data2"])
    pre = commit("prenet", "stylegan2-pretrained-network", {
        "network-snapshot-imported/config.json": {"resolution": 256},
        "network-snapshot-imported/weights.npz": b"npz"},
        keyed(lineage("stylegan2_train", TRAIN_RUN, "commit_pretrained_network", (data,)),
              "import", ("--pickle", "sha256:" + "6" * 64)))
    for i in (1, 2):
        files: dict[str, Any] = {
            "config.json": {"config": "small"}, "stats.jsonl": [{"kimg": 4}],
            "reals.png": png(64, 32, (90, 160, 200)), "fakes_init.png": png(64, 32, (0, 0, 0)),
            "fakes000004.png": png(64, 32, (60, 60, 60)),
            "network-snapshot-000004/config.json": {}, "network-final/config.json": {},
            "network-final/weights.npz": b"w" * i}
        if i == 2:
            for k, (grid, _) in enumerate(TRAINED_GRIDS[2:]):
                files[grid] = png(64, 32, (120, 40 * k, 120))
            files[TRAINED_GRIDS[-1][0]] = checker(64, 32, *CHECKER)
            for kimg, snap, *_ in TRAINING_SWD:
                files[f"{snap}/config.json"] = {"kimg": kimg}
            files["metric-swd.jsonl"] = [trained(kimg, snap, {"swd32": swd32, "swd_avg": avg})
                                         for kimg, snap, avg, swd32 in TRAINING_SWD]
            files["best.json"] = BEST
            files["network-best/config.json"] = {"kimg": 6.0}
        # v2 trained on from v1's finished network: same key but for the length
        commit(f"ournet{i}", "stylegan2-trained-network", files, keyed(
            lineage("stylegan2_train", TRAIN_RUN, "commit_trained_network", (data,),
                    total_kimg=4 * i),
            "train", ("--data", "<run>/dataset", "--config", "small", "--total-kimg",
                      str(4 * i)), (data,), "--total-kimg",
            f"{pinned(made['ournet1'])} (stylegan2-trained-network:v1, 4 kimg)"
            if i == 2 else None))
    pre_ref = pinned(pre)
    commit("eval_pre", "stylegan2-evaluation-pretrained", {
        "metric-fid50k.jsonl": [metric("fid50k", {"fid50k": 6.93}, pre_ref)],
        "metric-swd.jsonl": [metric("swd", {"swd32": 3.0, "swd_avg": 2.5}, pre_ref)]},
        keyed(lineage("stylegan2_train", TRAIN_RUN, "commit_pretrained_evaluation",
                      (pre_ref, data)), "evaluate", ("--metrics", "fid50k,swd"), (pre_ref, data)),
        {"metrics": {"fid50k": 6.93}, "network": pre_ref,
         "stage": {"task_id": "evaluate_pretrained", "seconds": 45.0, "result": {
             "out": "/work/evaluation-pretrained-1", "results": {"fid50k": {"fid50k": 6.93}},
             "seconds": {"fid50k": 41.5, "swd": 2.25}, "real_stats": {"fid50k": "cached"}}}})
    for i, (fid, swd) in enumerate([(95.5, 9.0), (80.25, 7.5)], start=1):
        net = pinned(made[f"ournet{i}"])
        commit(f"eval_ours{i}", "stylegan2-evaluation-ours", {
            "metric-fid50k@stand-in.jsonl": [
                metric("fid50k", {"fid50k@stand-in": fid + 1}, net, stand_in=True),
                metric("fid50k", {"fid50k@stand-in": fid}, net, stand_in=True)],
            "metric-swd.jsonl": [metric("swd", {"swd32": swd, "swd_avg": swd - 1}, net)]},
            keyed(lineage("stylegan2_train", TRAIN_RUN, "commit_ours_evaluation", (net, data),
                          total_kimg=4 * i), "evaluate", ("--metrics", "fid50k,swd"),
                  (net, data)),
            {"metrics": {"fid50k@stand-in": fid}, "network": net})
    for key, name, net in (("gen_pre", "stylegan2-generated-pretrained", pre_ref),
                           ("gen_ours", "stylegan2-generated-ours",
                            pinned(made["ournet2"]))):
        seeds = [6600, 6601, 6602]
        commit(key, name, {
            **{f"seed{s}.png": png(32, 32, (s % 256, 80, 120)) for s in seeds},
            "generate.json": {"network": "/work/net", "seeds": seeds, "truncation_psi": 0.5}},
            keyed(lineage("stylegan2_train", TRAIN_RUN, f"commit_{key}", (net,)), "generate",
                  ("--seeds", "6600-6602", "--truncation-psi", "0.5"), (net,)),
            {"network": net, "truncation_psi": 0.5, "seeds": seeds})
    reuse(store, made, commit)
    return made


def reuse(store: Store, made: dict[str, Version], commit: Any) -> None:
    """REUSE_RUN: the seeds-only rerun. Everything but ours' generated images is reused;
    its commit task of the trained network was retried (one row, two records)."""
    net = pinned(made["ournet2"])
    seeds = [6603, 6604, 6605]
    commit("gen_ours2", "stylegan2-generated-ours", {
        **{f"seed{s}.png": png(32, 32, (s % 256, 90, 30)) for s in seeds},
        "generate.json": {"network": "/work/net", "seeds": seeds, "truncation_psi": 0.5}},
        keyed(replace(lineage("stylegan2_train", REUSE_RUN, "commit_gen_ours", (net,)),
                      git_commit=REUSE_COMMIT), "generate",
              ("--seeds", "6603-6605", "--truncation-psi", "0.5"), (net,)),
        {"network": net, "truncation_psi": 0.5, "seeds": seeds})
    use(store, made["prenet"], REUSE_RUN, "commit_pretrained_network")
    use(store, made["ournet2"], REUSE_RUN, "commit_trained_network")
    use(store, made["ournet2"], REUSE_RUN, "commit_trained_network", try_number=2)
    use(store, made["eval_pre"], REUSE_RUN, "commit_pretrained_evaluation")
    use(store, made["eval_ours2"], REUSE_RUN, "commit_ours_evaluation")
    use(store, made["gen_pre"], REUSE_RUN, "commit_gen_pre", "same-content")
    use(store, made["ournet2"], LATER_RUN, "commit_trained_network")
