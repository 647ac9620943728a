"""A training version on the page: fakes grids in kimg order under ours and NVIDIA's names,
shown large and unsmoothed, beside the metrics ``train --metrics`` recorded at each snapshot
plotted against kimg (null a gap, the best snapshot marked, damaged lines noted)."""

from __future__ import annotations

import html as htmllib
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from stylegan_ops.store.local import Store
from tests.ui.browser import artifacts, chromium, served, wait_for
from tests.ui.conftest import HTML
from tests.ui.storefill import (
    BEST,
    CHECKER,
    TRAINED_GRIDS,
    TRAINING_SWD,
    lineage,
    png,
    trained,
    tree,
)

SVG = "{http://www.w3.org/2000/svg}"
OURS = "stylegan2-trained-network:v2"
PAGES = [pytest.param(f"/images?run={OURS}", id="images"),
         pytest.param(f"/versions/{OURS}", id="version"),
         pytest.param("/metrics", id="metrics")]


def app_client(root: Path) -> Any:
    from fastapi.testclient import TestClient
    from stylegan_airflow.ui import create_app
    from stylegan_airflow.ui.auth import require_user

    app = create_app(root)
    app.dependency_overrides[require_user] = lambda: "tester"
    return TestClient(app)


def kimg_charts(html: str) -> dict[str, ET.Element]:
    """The metric file → its chart against kimg, parsed as the SVG it is."""
    return {path: ET.fromstring(svg) for path, svg in re.findall(
        r'<div class="chart-box[^"]*" data-path="([^"]+)">(<svg class="chart kimg-chart".*?'
        r"</svg>)", html, re.S)}


def marks(svg: ET.Element, key: str) -> list[tuple[str, float, float | None, float, float]]:
    """(kind, kimg, value, x, y) of each point and gap of ``key``, in document order."""
    out = []
    for el in svg.iter():
        if el.get("data-key") != key or el.get("class") not in ("point", "gap"):
            continue
        if el.get("class") == "point":
            out.append(("point", float(el.get("data-kimg", "")), float(el.get("data-value", "")),
                        float(el.get("cx", "")), float(el.get("cy", ""))))
        else:
            x = float(re.findall(r"[-\d.]+", el.get("d", ""))[0]) + 4  # the cross's centre
            out.append(("gap", float(el.get("data-kimg", "")), None, x, float("nan")))
    return out


def x_ticks(svg: ET.Element) -> dict[float, float]:
    """The x axis's tick labels (kimg) → their x position."""
    return {float(t.text or ""): float(t.get("x", "")) for t in svg.iter(f"{SVG}text")
            if t.get("class") == "tick" and t.get("text-anchor") == "middle"}


def y_ticks(svg: ET.Element) -> dict[float, float]:
    return {float(t.text or ""): float(t.get("y", "")) - 4 for t in svg.iter(f"{SVG}text")
            if t.get("class") == "tick" and t.get("text-anchor") == "end"}


def at(ticks: dict[float, float], value: float) -> float:
    """Where ``value`` lies on an axis, interpolated between its outermost ticks."""
    lo, hi = min(ticks), max(ticks)
    return ticks[lo] + (value - lo) / (hi - lo) * (ticks[hi] - ticks[lo])


# --- fakes grids ----------------------------------------------------------------------

@pytest.mark.parametrize(("names", "expected"), [
    pytest.param(["fakes000512.png", "fakes000000.512.png", "fakes000001.000.png"],
                 [("fakes000000.512.png", "fakes at 0.512 kimg"),
                  ("fakes000001.000.png", "fakes at 1 kimg"),
                  ("fakes000512.png", "fakes at 512 kimg")], id="nvidia-whole-kimg-and-ours"),
    pytest.param(["fakes000000.500.png", "fakes000000.256.png", "fakes000000.768.png"],
                 [("fakes000000.256.png", "fakes at 0.256 kimg"),
                  ("fakes000000.500.png", "fakes at 0.5 kimg"),
                  ("fakes000000.768.png", "fakes at 0.768 kimg")], id="ticks-below-1-kimg"),
    pytest.param(["fakes000004.png", "fakes000004.001.png", "fakes000003.999.png"],
                 [("fakes000003.999.png", "fakes at 3.999 kimg"),
                  ("fakes000004.png", "fakes at 4 kimg"),
                  ("fakes000004.001.png", "fakes at 4.001 kimg")], id="not-by-name"),
])
def test_fakes_grids_are_ordered_and_labelled_by_their_exact_kimg(
        names: list[str], expected: list[tuple[str, str]]) -> None:
    from stylegan_airflow.ui.catalog import images_of

    from stylegan_ops.store.model import Entry

    odd = ["fakes0512.png", "fakes000000.5.png", "fakes000001.000.jpg"]  # neither's name
    entries = {n: Entry(n, 1, "0" * 64) for n in names + odd}
    images = images_of(entries)
    assert [(i.path, i.caption) for i in images if i.kind == "fakes"] == expected
    assert sorted(i.path for i in images if i.kind == "image") == sorted(odd)


@pytest.mark.parametrize("url", PAGES[:2])
def test_a_training_versions_grids_are_large_in_kimg_order_and_the_best_is_marked(
        client: Any, url: str) -> None:
    html = client.get(url, headers=HTML).text
    figures = re.findall(r'<figure class="([^"]+)" data-path="([^"]+)">.*?<img src="([^"]+)"'
                         r".*?<figcaption>(.*?)</figcaption>", html, re.S)
    grids = [(path, re.sub(r"<[^>]+>", "", caption).strip()) for _, path, _, caption in figures
             if path.startswith("fakes")]
    assert grids == [(g, c + (" best" if g == "fakes000006.000.png" else ""))
                     for g, c in TRAINED_GRIDS]
    for css, path, src, _ in figures:
        if path.startswith(("fakes", "reals")):
            assert "thumb-grid" in css and src.startswith("/thumbs/512/"), path
        assert ("best-grid" in css) == (path == "fakes000006.000.png"), path


# --- metrics against kimg ---------------------------------------------------------------

@pytest.mark.parametrize("url", PAGES)
def test_the_kimg_plot_has_a_mark_per_line_at_its_kimg_a_gap_for_null_and_the_best(
        client: Any, url: str) -> None:
    html = client.get(url, headers=HTML).text
    if url == "/metrics":
        html = html[html.index(f'<div class="training-run" data-ref="{OURS}">'):]
    svg = kimg_charts(html)["metric-swd.jsonl"]
    assert svg.get("aria-label") == "swd_avg"  # the headline value; swd32 is not plotted
    assert marks(svg, "swd32") == []
    found = marks(svg, "swd_avg")
    # one mark per line of the file, drawn in kimg order (the resumed run's line too)
    assert sorted((kimg, value) for _, kimg, value, _, _ in found) == sorted(
        (kimg, avg) for kimg, _, avg, _ in TRAINING_SWD)
    assert [kimg for _, kimg, _, _, _ in found] == sorted(k for k, *_ in TRAINING_SWD)
    xs, ys = x_ticks(svg), y_ticks(svg)
    assert min(xs) == 0 and max(xs) >= 8  # kimg from 0 on the x axis
    for kind, kimg, value, x, y in found:
        assert x == pytest.approx(at(xs, kimg), abs=0.15), (kimg, x)
        if kind == "point":
            assert value is not None and y == pytest.approx(at(ys, value), abs=0.15)
    # null is a gap: crossed on the axis, no point, and no line drawn through it
    gap = next(m for m in found if m[0] == "gap")
    assert gap[1] == 4.992
    lines = [[tuple(map(float, p.split(","))) for p in (line.get("points") or "").split()]
             for line in svg.iter(f"{SVG}polyline") if line.get("data-key") == "swd_avg"]
    points = {kimg: (x, y) for kind, kimg, _, x, y in found if kind == "point"}
    assert lines == [[points[6.0], points[8.0]]]  # 4.512 stands alone before the gap
    assert [kind for kind, kimg, *_ in found if kimg == gap[1]] == ["gap"]  # never a 0
    # the best snapshot, ringed where its point is, and said in words
    best = [el for el in svg.iter(f"{SVG}circle") if el.get("class") == "best"]
    assert len(best) == 1
    assert (float(best[0].get("data-kimg", "")), float(best[0].get("data-value", ""))) == (
        BEST["kimg"], BEST["value"])
    assert (float(best[0].get("cx", "")), float(best[0].get("cy", ""))) == points[6.0]
    assert ("Best snapshot: swd_avg 6.25 at 6 kimg (<code>network-snapshot-000006.000</code>),"
            " kept as <code>network-best</code>.") in html


def test_the_metrics_api_gives_each_training_versions_samples(client: Any) -> None:
    training = client.get("/api/metrics").json()["training"]
    assert [t["ref"] for t in training] == [OURS]
    (curve,) = training[0]["curves"]
    assert curve["path"] == "metric-swd.jsonl" and list(curve["keys"]) == ["swd_avg"]
    assert curve["keys"]["swd_avg"] == [
        {"kimg": kimg, "value": avg, "snapshot": snap}
        for kimg, snap, avg, _ in sorted(TRAINING_SWD)]
    assert training[0]["best"] == {**BEST, "kept": True} and training[0]["notes"] == []


def test_evaluation_records_without_kimg_keep_their_per_version_plots(client: Any) -> None:
    html = client.get("/versions/stylegan2-evaluation-ours:v2", headers=HTML).text
    assert 'id="training"' not in html and "kimg-chart" not in html
    assert '<table class="metrics-table">' in html  # the evaluation's table, as before
    metrics = client.get("/metrics", headers=HTML).text
    assert metrics.count('<div class="training-run"') == 1  # only the training version
    assert len(re.findall(r'<svg class="chart"', metrics)) == 4  # per-version, as before


@pytest.mark.parametrize(("metric", "keys", "expected"), [
    pytest.param("fid50k", ["fid50k"], ["fid50k"], id="named-like-the-metric"),
    pytest.param("fid50k@stand-in", ["fid50k@stand-in"], ["fid50k@stand-in"], id="stand-in"),
    pytest.param("swd", ["swd32", "swd16", "swd_avg"], ["swd_avg"], id="the-average"),
    pytest.param("pr50k3_full", ["pr50k3_full_precision", "pr50k3_full_recall"],
                 ["pr50k3_full_precision", "pr50k3_full_recall"], id="precision-and-recall"),
    pytest.param("is50k", ["is50k", "is50k_std"], ["is50k"], id="not-the-spread"),
    pytest.param("custom", ["a_std"], ["a_std"], id="only-a-spread"),
])
def test_headline_keys(metric: str, keys: list[str], expected: list[str]) -> None:
    from stylegan_airflow.ui.training import headline

    assert headline(metric, keys) == expected


# --- damage: skipped with a note, never a 500 ------------------------------------------

GOOD = [trained(1.0, "network-snapshot-000001.000", {"swd_avg": 5.0}),
        trained(2.0, "network-snapshot-000002.000", {"swd_avg": 4.0})]


def _lines(*middle: bytes) -> bytes:
    return b"".join([json.dumps(GOOD[0]).encode() + b"\n", *middle,
                     json.dumps(GOOD[1]).encode() + b"\n"])


@pytest.mark.parametrize(("files", "note", "plotted"), [
    pytest.param({"metric-swd.jsonl": _lines(b'{"kimg": 1.5, "results": {"swd_avg"\n')},
                 "metric-swd.jsonl line 2: not JSON, skipped", [1.0, 2.0], id="torn-line"),
    pytest.param({"metric-swd.jsonl": _lines(b"\xff\xfe\x00garbage\n")},
                 "metric-swd.jsonl line 2: not JSON, skipped", [1.0, 2.0], id="binary-line"),
    pytest.param({"metric-swd.jsonl": _lines(b"[1.5, 3.0]\n")},
                 "metric-swd.jsonl line 2: not a JSON object, skipped", [1.0, 2.0],
                 id="not-an-object"),
    pytest.param({"metric-swd.jsonl": _lines(b'{"kimg": "soon", "results": {"swd_avg": 1}}\n')},
                 "metric-swd.jsonl line 2: kimg 'soon' is not a number of kimg, skipped",
                 [1.0, 2.0], id="kimg-not-a-number"),
    pytest.param({"metric-swd.jsonl": _lines(b'{"kimg": 1.5, "results": null}\n')},
                 "metric-swd.jsonl line 2: no results, skipped", [1.0, 2.0], id="no-results"),
    pytest.param({"metric-swd.jsonl": _lines(b'{"kimg": 1.5, "results": {"swd_avg": "low"}}\n')},
                 "metric-swd.jsonl line 2: swd_avg is 'low', not a number; drawn as a gap",
                 [1.0, 1.5, 2.0], id="value-not-a-number"),
    pytest.param({"metric-swd.jsonl": _lines(), "best.json": b"{not json"},
                 "best.json is not a best-snapshot record", [1.0, 2.0], id="best-damaged"),
    pytest.param({"metric-swd.jsonl": _lines(), "best.json": {**BEST, "metric": "fid50k"}},
                 "best.json ranks by 'fid50k', which no metric file records", [1.0, 2.0],
                 id="best-names-no-curve"),
    pytest.param({"metric-swd.jsonl": _lines(), "metric-fid50k.jsonl": b" " * (2 << 20 | 1)},
                 "metric-fid50k.jsonl: 2097153 bytes, over the", [1.0, 2.0], id="too-big"),
])
def test_a_damaged_metric_line_is_skipped_with_a_note_not_a_500(
        tmp_path: Path, files: dict[str, Any], note: str, plotted: list[float]) -> None:
    source = tree(tmp_path / "run", {"stats.jsonl": [{"kimg": 2.0}],
                                     "fakes000002.000.png": png(8, 8, (1, 2, 3)),
                                     "network-final/config.json": {}, **files})
    Store(tmp_path / "store").snapshot(source, "net", (),
                                       lineage("stylegan2_train", "r", "commit_trained_network"))
    c = app_client(tmp_path / "store")
    for url in ("/images?run=net:v1", "/versions/net:v1", "/metrics"):
        res = c.get(url, headers=HTML)
        assert res.status_code == 200, (url, res.text[:400])
        notes = [htmllib.unescape(n) for n in
                 re.findall(r'<p class="notice chart-note">(.*?)</p>', res.text, re.S)]
        assert any(n.startswith(note) for n in notes), (url, notes)
        svg = kimg_charts(res.text)["metric-swd.jsonl"]
        assert [m[1] for m in marks(svg, "swd_avg")] == plotted, url
    assert any(n.startswith(note) for n in c.get("/api/metrics").json()["training"][0]["notes"])


# --- grids as the browser shows them ------------------------------------------------------

GRIDS = """
return Array.from(document.querySelectorAll('figure.thumb-grid img')).map(img => ({
  path: img.closest('figure').dataset.path, complete: img.complete,
  natural: img.naturalWidth, width: img.getBoundingClientRect().width,
  rendering: getComputedStyle(img).imageRendering,
  viewport: document.documentElement.clientWidth}));
"""


@pytest.mark.browser
def test_grids_are_512_px_wide_and_enlarged_without_smoothing_in_chromium(
        filled: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selenium.webdriver.common.by import By

    from tests.ui.test_run_tab import app_over

    monkeypatch.setenv("STYLEGAN_CACHE", str(tmp_path / "cache"))
    last = TRAINED_GRIDS[-1][0]
    with served(app_over(filled[0])) as url, chromium(1400, 1000) as browser:
        browser.get(f"{url}/images?run={OURS}")
        browser.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        grids = wait_for(lambda: (g := browser.execute_script(GRIDS)) and all(
            i["complete"] and i["natural"] for i in g) and g, "the grids to load")
        assert [g["path"] for g in grids] == [  # the dataset's reals, then the run's
            "reals.png", "reals.png", *[p for p, _ in TRAINED_GRIDS]]
        for g in grids:  # a 64 px grid, enlarged 8×, by whole pixels
            assert (g["natural"], g["width"], g["rendering"]) == (64, 512, "pixelated"), g
        img = browser.find_element(By.CSS_SELECTOR, f'figure[data-path="{last}"] img')
        browser.execute_script("arguments[0].scrollIntoView()", img)
        shot = Image.open(io.BytesIO(img.screenshot_as_png)).convert("RGB")
        inner = shot.crop((4, 4, shot.width - 4, shot.height - 4))  # inside the border
        colours = {c for _, c in inner.getcolors(1 << 20) or []}
        assert colours <= set(CHECKER), f"smoothed: {len(colours)} colours"
        browser.execute_script("document.getElementById('progress').scrollIntoView()")
        browser.save_screenshot(str(artifacts() / "stylegan-training-progress.png"))

        browser.set_window_size(420, 900)  # narrower than a grid: it fits the window
        grids = wait_for(lambda: (g := browser.execute_script(GRIDS))
                         and g[0]["viewport"] < 512 and g, "the narrow window")
        assert all(g["width"] <= g["viewport"] for g in grids), grids
