"""A version store filled with the shapes the train and prepare DAGs commit (tiny files)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from stylegan_ops.store.local import Store
from stylegan_ops.store.model import Lineage, Version

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PREPARE_RUN = "manual__2026-01-02T03:04:05+00:00"  # ':' and '+' must be quoted in links
TRAIN_RUN = f"commit__{COMMIT}"


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
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
    return {"metric": name + ("@stand-in" if stand_in else ""), "standard_metric": name,
            "results": results, "num_images": 64, "network": network,
            "dataset": "/work/dataset", "dataset_sha256": "1" * 64, "detector": detector,
            "real_stats": None, "truncation_psi": 1.0, "seed": 123, "seconds": 1.5,
            "time": "2026-01-02T05:00:00+00:00"}


def lineage(dag_id: str, run_id: str, task_id: str, inputs: tuple[str, ...] = (),
            **params: Any) -> Lineage:
    return Lineage(dag_id=dag_id, run_id=run_id, task_id=task_id, try_number=1,
                   git_commit=COMMIT, params=params, inputs=inputs)


def pinned(v: Version) -> str:
    return f"{v.name}@{v.id}"


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
        lineage("stylegan2_train", TRAIN_RUN, "commit_pretrained_network", (data,)))
    for i in (1, 2):
        files: dict[str, Any] = {
            "config.json": {"config": "small"}, "stats.jsonl": [{"kimg": 4}],
            "reals.png": png(64, 32, (90, 160, 200)), "fakes_init.png": png(64, 32, (0, 0, 0)),
            "fakes000004.png": png(64, 32, (60, 60, 60)),
            "network-snapshot-000004/config.json": {}, "network-final/config.json": {},
            "network-final/weights.npz": b"w" * i}
        if i == 2:
            files["fakes000008.png"] = png(64, 32, (120, 120, 120))
        commit(f"ournet{i}", "stylegan2-trained-network", files,
               lineage("stylegan2_train", TRAIN_RUN, "commit_trained_network", (data,),
                       total_kimg=4 * i))
    pre_ref = pinned(pre)
    commit("eval_pre", "stylegan2-evaluation-pretrained", {
        "metric-fid50k.jsonl": [metric("fid50k", {"fid50k": 6.93}, pre_ref)],
        "metric-swd.jsonl": [metric("swd", {"swd32": 3.0, "swd_avg": 2.5}, pre_ref)]},
        lineage("stylegan2_train", TRAIN_RUN, "commit_pretrained_evaluation", (pre_ref, data)),
        {"metrics": {"fid50k": 6.93}, "network": pre_ref})
    for i, (fid, swd) in enumerate([(95.5, 9.0), (80.25, 7.5)], start=1):
        net = pinned(made[f"ournet{i}"])
        commit(f"eval_ours{i}", "stylegan2-evaluation-ours", {
            "metric-fid50k@stand-in.jsonl": [
                metric("fid50k", {"fid50k@stand-in": fid + 1}, net, stand_in=True),
                metric("fid50k", {"fid50k@stand-in": fid}, net, stand_in=True)],
            "metric-swd.jsonl": [metric("swd", {"swd32": swd, "swd_avg": swd - 1}, net)]},
            lineage("stylegan2_train", TRAIN_RUN, "commit_ours_evaluation", (net, data),
                    total_kimg=4 * i),
            {"metrics": {"fid50k@stand-in": fid}, "network": net})
    for key, name, net in (("gen_pre", "stylegan2-generated-pretrained", pre_ref),
                           ("gen_ours", "stylegan2-generated-ours",
                            pinned(made["ournet2"]))):
        seeds = [6600, 6601, 6602]
        commit(key, name, {
            **{f"seed{s}.png": png(32, 32, (s % 256, 80, 120)) for s in seeds},
            "generate.json": {"network": "/work/net", "seeds": seeds, "truncation_psi": 0.5}},
            lineage("stylegan2_train", TRAIN_RUN, f"commit_{key}", (net,)),
            {"network": net, "truncation_psi": 0.5, "seeds": seeds})
    return made
