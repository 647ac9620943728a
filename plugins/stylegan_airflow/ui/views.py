"""What each page shows, as plain data: the HTML templates and the JSON API share it."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from stylegan_airflow.ui import training
from stylegan_airflow.ui.catalog import (
    Catalog,
    Image,
    VersionView,
    is_stand_in,
    kimg_text,
    ref_of_input,
)
from stylegan_airflow.ui.plots import Point, kimg_chart, line_chart
from stylegan_ops.store.model import Lineage, Use

EVALUATION_PREFIX = "stylegan2-evaluation-"
GENERATED_PREFIX = "stylegan2-generated-"
MAX_FILES = 500  # file rows on a version page; the rest is counted, not listed
MAX_COMPARE_IMAGES = 48
KIND_ORDER = {"dataset": 0, "network": 1, "evaluation": 2, "generated": 3}  # pipeline order
MAX_TRAINING_RUNS = 6  # training versions charted on the metrics page, newest first
REASONS = {"cache": "cache hit", "same-content": "same content"}


def run_url(airflow_base: str, lineage: Lineage) -> str | None:
    """The Airflow UI page of the run that produced a version (Airflow 3 UI routes)."""
    if not lineage.dag_id or not lineage.run_id:
        return None
    url = f"{airflow_base}/dags/{quote(lineage.dag_id, safe='')}/runs/" \
          f"{quote(lineage.run_id, safe='')}"
    if lineage.task_id:
        url += f"/tasks/{quote(lineage.task_id, safe='')}"
    return url


def run_page(base: str, dag_id: str | None, run_id: str | None) -> str | None:
    """This app's page of a DAG run's versions (what its tab in the Airflow UI shows).
    Links to it stay in the frame: the Airflow UI sandboxes its plugin frames without
    allow-top-navigation, so a link out of the frame would do nothing there."""
    if not dag_id or not run_id:
        return None
    return f"{base}/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"


def series_name(name: str) -> str:
    """``stylegan2-evaluation-ours`` → ``ours``; other names stay as they are."""
    for prefix in (EVALUATION_PREFIX, GENERATED_PREFIX):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def version_row(catalog: Catalog, view: VersionView, airflow_base: str) -> dict[str, Any]:
    """One line of a versions table (also the JSON API's version summary)."""
    lineage = view.version.lineage
    previous = catalog.previous(view.version)
    return {**view.to_dict(), "run_url": run_url(airflow_base, lineage),
            "inputs": [input_row(catalog, text) for text in lineage.inputs],
            "preview": preview(view.images()),
            "results": catalog.results(view) if view.kind == "evaluation" else {},
            "previous": previous.ref if previous else None,
            "reused_by": len({(u.dag_id, u.run_id) for u in uses_of(catalog, view)}),
            "origin": None, "reused": None}


def input_row(catalog: Catalog, text: str) -> dict[str, Any]:
    """A lineage input as recorded (``name@id``), with its ``name:vN`` label and a link
    when this store holds it."""
    found = catalog.input_version(text) if ref_of_input(text) else None
    return {"ref": text, "link": text if found else None, "label": found.ref if found else None}


def run_rows(catalog: Catalog, dag_id: str, run_id: str, airflow_base: str, base: str = ""
             ) -> list[dict[str, Any]]:
    """The versions one DAG run made or reused, in pipeline order (data, networks,
    evaluations, generated images), newest first within a name. A reused one (its use
    record names this run) says why and which run last computed it."""
    made = catalog.produced_by(dag_id, run_id)
    rows: list[tuple[VersionView, dict[str, Any]]] = [(v, {"origin": "made"}) for v in made]
    mine = {v.ref for v in made}
    for view, use in catalog.used_by(dag_id, run_id):
        if view.ref not in mine:  # a run's own version is made, however it is used
            rows.append((view, {"origin": "reused", "reused": reuse_info(use, view, base)}))
    rows.sort(key=lambda r: (KIND_ORDER.get(r[0].kind, 9), r[0].version.name,
                             -r[0].version.number))
    return [{**version_row(catalog, v, airflow_base), **extra} for v, extra in rows]


def uses_of(catalog: Catalog, view: VersionView) -> list[Use]:
    """The use records of this very version."""
    return [u for u in catalog.uses(view.version.name)
            if u.number == view.version.number and u.id == view.version.id]


def reuse_info(use: Use, view: VersionView, base: str) -> dict[str, Any]:
    """How a run reused a version: the task, why, and the run that last computed it (the
    version's lineage: what the version itself says, whatever the use record claims)."""
    lineage = view.version.lineage
    dag_id = lineage.dag_id or use.made_by_dag_id
    run_id = lineage.run_id or use.made_by_run_id
    return {"reason": use.reason, "why": REASONS.get(use.reason, use.reason), "key": use.key,
            "task_id": use.task_id, "try_number": use.try_number, "at": use.at or "",
            "made_by": {"dag_id": dag_id, "run_id": run_id,
                        "url": run_page(base, dag_id, run_id)}}


def use_rows(catalog: Catalog, view: VersionView, base: str) -> list[dict[str, Any]]:
    """The runs that reused a version, newest first."""
    return [{"dag_id": u.dag_id, "run_id": u.run_id, "task_id": u.task_id,
             "try_number": u.try_number, "at": u.at or "", "reason": u.reason,
             "why": REASONS.get(u.reason, u.reason), "key": u.key,
             "url": run_page(base, u.dag_id, u.run_id)}
            for u in reversed(uses_of(catalog, view))]


def cache_info(catalog: Catalog, lineage: Lineage) -> dict[str, Any] | None:
    """A version's cache key and what went into it, as its lineage recorded them. Only the
    key is validated on reading, so every part is shown for what it is, never trusted."""
    cache = lineage.cache
    if not isinstance(cache, dict):
        return None
    parts = cache.get("parts")
    parts = parts if isinstance(parts, dict) else {}
    args, inputs = parts.get("args"), parts.get("inputs")
    return {"key": cache.get("key"), "continue_key": _text(cache.get("continue_key")),
            "stage": _text(parts.get("stage")), "code": _text(parts.get("code")),
            "format": _text(parts.get("format")),
            "args": [str(_text(a)) for a in (args if isinstance(args, list) else [args])
                     if a is not None],
            "inputs": [input_row(catalog, str(_text(i))) for i in
                       (inputs if isinstance(inputs, list) else [inputs]) if i is not None]}


def continued_info(catalog: Catalog, lineage: Lineage) -> dict[str, Any] | None:
    """What training resumed from: a version (``name@id (…)``, linked when this store holds
    it) or an earlier run's snapshot, as recorded."""
    text = lineage.continued_from
    if not text:
        return None
    head = text.split(" ", 1)[0]
    found = input_row(catalog, head) if "@" in head else None
    return {"text": text, "link": found["link"] if found else None,
            "label": found["label"] if found else None,
            "rest": text[len(head):].strip() if found and found["link"] else text}


def _text(value: Any) -> str | None:
    """A recorded value as text: strings as they are, anything else as its JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def preview(images: list[Image]) -> Image | None:
    """The picture that says most about a version: the latest fakes grid, else the first."""
    fakes = [i for i in images if i.kind == "fakes"]
    return max(fakes, key=lambda i: i.order) if fakes else (images[0] if images else None)


def overview(catalog: Catalog, airflow_base: str, limit: int | None = 20) -> list[dict[str, Any]]:
    """Every name with its versions, newest first (``limit`` per name on the front page)."""
    out = []
    for name in catalog.names():
        views = catalog.versions(name)
        rows = [version_row(catalog, v, airflow_base) for v in views[:limit]]
        out.append({"name": name, "count": len(views), "kind": views[0].kind, "versions": rows})
    return sorted(out, key=lambda n: (KIND_ORDER.get(n["kind"], 9), n["name"]))


def metrics_overview(catalog: Catalog) -> dict[str, Any]:
    """Each metric across the versions of every evaluation output, as rows and charts."""
    rows: list[dict[str, Any]] = []
    keys: list[str] = []
    series: dict[str, dict[str, list[Point]]] = {}
    for view in catalog.of_kind("evaluation"):
        results = catalog.results(view)
        records = catalog.metric_records(view)
        label = series_name(view.version.name)
        rows.append({"series": label, "name": view.version.name, "ref": view.ref,
                     "pinned": view.pinned, "number": view.version.number,
                     "created": view.version.created, "results": results,
                     "network": view.version.meta.get("network"),
                     "num_images": sorted({r.get("num_images") for r in records
                                           if r.get("num_images") is not None}),
                     "detectors": sorted({_detector(r) for r in records})})
        for key, value in results.items():
            if key not in keys:
                keys.append(key)
            series.setdefault(key, {}).setdefault(label, []).append(
                Point(view.version.number, value, f"{view.ref}: {value:.4g}"))
    keys.sort(key=lambda k: (is_stand_in(k), k))
    rows.sort(key=lambda r: (r["series"] != "pretrained", r["series"], r["number"]))
    charts = [{"metric": k, "stand_in": is_stand_in(k),
               "svg": line_chart(k, series[k], is_stand_in(k))} for k in keys]
    runs = []
    for view in sorted(catalog.of_kind("network"), key=lambda v: v.version.created,
                       reverse=True):
        progress = training_context(catalog, view)
        if progress is not None:
            runs.append({"ref": view.ref, "pinned": view.pinned, **progress})
    return {"keys": keys, "rows": rows, "charts": charts,
            "stand_in": any(is_stand_in(k) for k in keys)
            or any(c["stand_in"] for r in runs for c in r["charts"]),
            "training": runs[:MAX_TRAINING_RUNS], "more_training": len(runs[MAX_TRAINING_RUNS:])}


def training_context(catalog: Catalog, view: VersionView) -> dict[str, Any] | None:
    """A training version's metrics against kimg: one chart per metric file (its headline
    keys), the best snapshot marked, and what was skipped; None when it has none."""
    found = training.progress(catalog, view)
    if found is None:
        return None
    ranked = found.best_curve()
    best = found.best
    charts = []
    for curve in found.curves:
        series = {key: [_sample_point(key, s) for s in samples]
                  for key, samples in curve.keys.items()}
        mark = None
        if best is not None and ranked is not None and ranked[0] is curve:
            mark = Point(best.kimg, best.value, "best: " + training.best_label(best)
                         + (f" ({best.snapshot})" if best.snapshot else ""))
        title = next(iter(curve.keys)) if len(curve.keys) == 1 else curve.metric
        charts.append({"metric": curve.metric, "path": curve.path, "title": title,
                       "stand_in": curve.stand_in,
                       "svg": kimg_chart(title, series, mark, curve.stand_in)})
    grid = None
    if best is not None:  # the fakes grid drawn at the best snapshot, named by its kimg
        grid = next((i.path for i in view.images() if i.kind == "fakes" and i.order >= 0
                     and round(i.order, 3) == round(best.kimg, 3)), None)
    return {"charts": charts, "best": best, "best_label": training.best_label(best)
            if best else None, "best_grid": grid, "notes": found.notes,
            "data": found.to_dict()}


def _sample_point(key: str, sample: training.Sample) -> Point:
    at = f"{kimg_text(sample.kimg)} kimg" + (f" ({sample.snapshot})" if sample.snapshot else "")
    if sample.value is None:
        return Point(sample.kimg, None, f"{key} at {at}: no value (null"
                     + (f": {sample.why})" if sample.why else ")"))
    return Point(sample.kimg, sample.value, f"{key} at {at}: {sample.value:.4g}")


def _detector(record: dict[str, Any]) -> str:
    det = record.get("detector")
    if isinstance(det, dict):
        flag = "" if det.get("standard") else " (stand-in)"
        return f"{det.get('name', '?')}{flag}"
    return str(det or "none")


def pick(catalog: Catalog, ref: str | None, choices: list[VersionView]) -> VersionView | None:
    """The version a selector names, else the newest of ``choices``."""
    if ref:
        return catalog.resolve(ref)
    return max(choices, key=lambda v: v.version.created, default=None)


def images_context(catalog: Catalog, run: str | None, generated: str | None,
                   dataset: str | None) -> dict[str, Any]:
    """Reals, fakes over training progress, and generated seeds of the chosen versions."""
    networks = [v for v in catalog.of_kind("network")
                if any(i.kind == "fakes" for i in v.images())]
    gens = catalog.of_kind("generated")
    datasets = [v for v in catalog.of_kind("dataset") if "reals.png" in v.entries]
    run_v, gen_v, data_v = (pick(catalog, run, networks), pick(catalog, generated, gens),
                            pick(catalog, dataset, datasets))
    return {
        "networks": networks, "generated_versions": gens, "datasets": datasets,
        "run": run_v, "run_images": run_v.images() if run_v else [],
        "training": training_context(catalog, run_v) if run_v else None,
        "generated": gen_v, "seeds": [i for i in gen_v.images() if i.kind == "seed"]
        if gen_v else [], "generation": catalog.generation(gen_v) if gen_v else {},
        "dataset": data_v,
        "reals": [i for i in data_v.images() if i.kind == "reals"] if data_v else [],
    }


def _diff_dict(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "a": a.get(k), "b": b.get(k), "differs": a.get(k) != b.get(k)}
            for k in sorted(set(a) | set(b))]


def compare(catalog: Catalog, a: VersionView, b: VersionView,
            airflow_base: str) -> dict[str, Any]:
    """Two versions side by side: summary, lineage and params diff, metrics, images, files."""
    la, lb = a.version.lineage.to_dict(), b.version.lineage.to_dict()
    params_a, params_b = la.pop("params"), lb.pop("params")
    ra, rb = catalog.results(a), catalog.results(b)
    metrics = [{"key": k, "a": ra.get(k), "b": rb.get(k),
                "delta": rb[k] - ra[k] if k in ra and k in rb else None,
                "stand_in": is_stand_in(k)} for k in sorted(set(ra) | set(rb))]
    ia = {i.path: i for i in a.images()}
    ib = {i.path: i for i in b.images()}
    paths = sorted(set(ia) | set(ib), key=lambda p: _image_rank(ia.get(p) or ib[p]))
    images = [{"path": p, "a": ia.get(p), "b": ib.get(p)} for p in paths][:MAX_COMPARE_IMAGES]
    ea, eb = a.entries, b.entries
    files = {"added": sorted(set(eb) - set(ea)), "removed": sorted(set(ea) - set(eb)),
             "changed": sorted(p for p in set(ea) & set(eb) if ea[p].sha256 != eb[p].sha256),
             "same": sum(1 for p in set(ea) & set(eb) if ea[p].sha256 == eb[p].sha256)}
    return {"a": version_row(catalog, a, airflow_base),
            "b": version_row(catalog, b, airflow_base),
            "lineage": _diff_dict(la, lb), "params": _diff_dict(params_a, params_b),
            "meta": _diff_dict(a.version.meta, b.version.meta), "metrics": metrics,
            "images": images, "files": files,
            "generation": [catalog.generation(v) if v.kind == "generated" else None
                           for v in (a, b)]}


def _image_rank(image: Image) -> tuple[int, float, str]:
    rank = {"reals": 0, "fakes": 1, "seed": 2, "image": 3}
    return rank[image.kind], image.order, image.path


def version_context(catalog: Catalog, view: VersionView, airflow_base: str, base: str = ""
                    ) -> dict[str, Any]:
    """Everything on a version's own page."""
    entries = sorted(view.entries.values())
    row = version_row(catalog, view, airflow_base)
    choices = [v.ref for v in catalog.all_versions() if v.ref != view.ref]
    return {"view": view, "row": row,
            "lineage": view.version.lineage, "images": view.images(),
            "results": catalog.results(view), "records": catalog.metric_records(view),
            "seconds": metric_seconds(view),
            "uses": use_rows(catalog, view, base),
            "cache": cache_info(catalog, view.version.lineage),
            "continued": continued_info(catalog, view.version.lineage),
            "computed_by": run_page(base, view.version.lineage.dag_id,
                                    view.version.lineage.run_id),
            "generation": catalog.generation(view) if view.kind == "generated" else None,
            "training": training_context(catalog, view) if view.kind == "network" else None,
            "files": entries[:MAX_FILES], "more_files": max(0, len(entries) - MAX_FILES),
            "choices": choices, "compare_with": row["previous"] or _next_of(view, choices)}


def metric_seconds(view: VersionView) -> dict[str, float]:
    """Wall seconds per metric from the evaluate result the commit kept in the version's
    meta (``stage.result.seconds``): records hold no timings, so that identical
    evaluations are one version."""
    stage = view.version.meta.get("stage")
    result = stage.get("result") if isinstance(stage, dict) else None
    seconds = result.get("seconds") if isinstance(result, dict) else None
    return {str(k): float(v) for k, v in (seconds.items() if isinstance(seconds, dict) else ())
            if isinstance(v, int | float) and not isinstance(v, bool)}


def _next_of(view: VersionView, choices: list[str]) -> str | None:
    """A first version has no predecessor: offer the next version of its name instead."""
    later = f"{view.version.name}:v{view.version.number + 1}"
    return later if later in choices else None


def default_pair(catalog: Catalog) -> tuple[str, str] | None:
    """What the compare page opens with: the newest version of any name that has an
    earlier one, and that earlier one, as (A, B) = (previous, newest)."""
    pairs = []
    for name in catalog.names():
        latest = catalog.versions(name)[0]
        previous = catalog.previous(latest.version)
        if previous is not None:
            pairs.append((latest.version.created, latest.ref, previous.ref))
    if not pairs:
        return None
    _, newest, previous_ref = max(pairs)
    return previous_ref, newest


def lone_pair(catalog: Catalog, ref: str) -> tuple[str | None, str]:
    """One version chosen alone is compared with its predecessor: (previous or None, it)."""
    view = catalog.resolve(ref)
    previous = catalog.previous(view.version)
    return (previous.ref if previous else None), view.ref
